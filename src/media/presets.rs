//! Platform presets: canvas, timing and size rules per messaging app, auto-fit, and the export
//! report that re-reads the written file and checks every rule.

//! ILDiff Studio: transparent animated stickers whose alpha stays clean in semi-open areas and
//! does not flicker.
//!
//! Dependency direction (see `ARCHITECTURE.md` at the repository root, which also follows one
//! frame from import to export): `media` and `model` depend on nothing above them; `pipeline` on
//! both; `worker` on `pipeline`; only `cli` uses clap and only `app` (the studio window) uses
//! egui.

pub mod app;
pub mod cli;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod media;
pub mod model;
pub mod par;
pub mod pipeline;
pub mod progress;
pub mod train;
pub mod worker;

pub use error::{Error, Result};
pub use progress::{NoProgress, Progress};

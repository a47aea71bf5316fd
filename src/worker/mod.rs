//! The studio's background threads: a [`Job`] goes in over a channel, [`Event`]s come out.
//!
//! The window never waits on decoding, inference or encoding: each [`Worker`] is one named,
//! long-lived thread that owns what it loads (models are loaded once and kept). Cancelling
//! does not queue behind the job it cancels: it is an atomic the running job's [`crate::Progress`]
//! reads at every step. The worker wakes the UI through a plain callback, so this module knows
//! nothing about egui. Dropping a [`Worker`] cancels the running job and joins the thread.
//!
//! [`events`] holds what goes in and out, [`jobs`] what each job does, [`executor`] the
//! threads. Nothing here imports the GUI.

pub mod events;
pub mod executor;
pub mod jobs;

pub use events::{Emitter, Event, ExportRequest, GenerateJob, Job, JobId, MatteRequest, Waker};
pub use executor::{Worker, Workers};

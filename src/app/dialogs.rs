//! Native file dialogs (rfd, XDG desktop portal) on a helper thread, so the window keeps
//! repainting while a dialog is open. Without a portal (headless, minimal desktops) rfd returns
//! nothing and the panels' plain path fields remain the way in.

use std::path::PathBuf;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::worker::Waker;

/// What a dialog was for, with its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Picked {
    Clips(Vec<PathBuf>),
    Model(PathBuf),
    ExportFolder(PathBuf),
    /// The dialog closed without a choice (or no dialog could be shown).
    Nothing,
}

/// Launches dialogs and collects their answers.
pub struct Dialogs {
    tx: Sender<Picked>,
    rx: Receiver<Picked>,
    waker: Waker,
    open: bool,
}

/// File extensions the import dialog offers.
pub const CLIP_EXTENSIONS: &[&str] = &[
    "gif", "png", "apng", "webp", "webm", "mp4", "mov", "mkv", "jpg", "jpeg",
];

impl Dialogs {
    pub fn new(waker: Waker) -> Dialogs {
        let (tx, rx) = unbounded();
        Dialogs {
            tx,
            rx,
            waker,
            open: false,
        }
    }

    /// Whether a dialog is showing (the buttons that open one are disabled meanwhile).
    pub fn is_open(&self) -> bool {
        self.open
    }

    fn spawn(&mut self, f: impl FnOnce() -> Picked + Send + 'static) {
        if self.open {
            return;
        }
        self.open = true;
        let (tx, waker) = (self.tx.clone(), self.waker.clone());
        let spawned = std::thread::Builder::new()
            .name("ildiff-dialog".into())
            .spawn(move || {
                let _ = tx.send(f());
                waker();
            });
        if spawned.is_err() {
            self.open = false;
        }
    }

    pub fn open_clips(&mut self, start: Option<PathBuf>) {
        self.spawn(move || {
            let mut d = rfd::FileDialog::new()
                .set_title("Import clips")
                .add_filter("Clips and images", CLIP_EXTENSIONS);
            if let Some(dir) = start {
                d = d.set_directory(dir);
            }
            d.pick_files().map_or(Picked::Nothing, Picked::Clips)
        });
    }

    pub fn pick_model(&mut self) {
        self.spawn(|| {
            rfd::FileDialog::new()
                .set_title("Choose an ILDiff checkpoint")
                .add_filter("safetensors", &["safetensors"])
                .pick_file()
                .map_or(Picked::Nothing, Picked::Model)
        });
    }

    pub fn pick_folder(&mut self) {
        self.spawn(|| {
            rfd::FileDialog::new()
                .set_title("Export folder")
                .pick_folder()
                .map_or(Picked::Nothing, Picked::ExportFolder)
        });
    }

    /// The answer of the dialog that just closed, if any.
    pub fn poll(&mut self) -> Option<Picked> {
        let p = self.rx.try_recv().ok()?;
        self.open = false;
        Some(p)
    }
}

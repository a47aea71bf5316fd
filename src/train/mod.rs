//! Training data and training loops. [`synth`] generates animated stickers with exact alpha,
//! [`art`] animates licensed artwork; [`composite`] puts them over hard backgrounds with
//! input-format degradations so the decoder learns (and is evaluated) where matting fails;
//! [`dataset`] draws samples by index, [`run`] is the resumable loop that [`codec`],
//! [`decoder`] and [`generator`] training share; [`validate`] scores models on the held-out split.

pub mod art;
pub mod codec;
pub mod composite;
pub mod dataset;
pub mod decoder;
pub mod distill;
pub mod generator;
pub mod optim;
pub mod run;
pub mod synth;
pub mod validate;

pub use art::{ArtLibrary, ArtMotion, ArtSpec, split_of_name};
pub use composite::{Background, Composite, Degradation, composite};
pub use synth::{ClipSpec, Motion, Subject, SynthConfig, render, synth_clip};

/// Which part of the data a clip belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// The split of a clip seed: 10 % validation, decided by a hash of the seed so neighbouring
/// seeds are not correlated and the split never changes.
pub fn split_of(seed: u64) -> Split {
    if synth::mix(seed, 0x5EED_5911).is_multiple_of(10) {
        Split::Val
    } else {
        Split::Train
    }
}

/// Keeps freed memory in the process for reuse instead of handing it back to the kernel, and
/// serves every buffer from the heap: a training step frees and reallocates the same
/// large activations every step, and with glibc's defaults each comes back as fresh pages
/// (page faults, zeroing, cgroup charges). On the `train_step` benchmark (256², batch 8)
/// system time fell from 19.5 to 9.2 s and the step from 6.9 to 5.9 s, for ~4 % more peak
/// memory (the same settings given as `GLIBC_TUNABLES`); 8 steps of `train decoder` at 256²,
/// batch 1, took 20.7 s instead of 21.4 s (system time 1.5 instead of 2.6 s). Training only:
/// the matte showed no gain. The `train_step` benchmark calls it too, so it times the step
/// `ildiff train` runs. Since 2026-12-07's twelfth session mmap is off altogether
/// (`M_MMAP_MAX` 0), not only below 32 MiB (glibc's highest `M_MMAP_THRESHOLD`): the
/// benchmark's 256² activations are 32 MiB and more, and were still mmapped fresh every step
/// (system time 12.1–13.2 s → 2.5–2.8 s, step 4 809–4 987 → 4 109–4 495 ms, peak 2.40 →
/// 2.60 GB, alternated rounds, indicative: a paused training run kept the load average up).
/// Returns whether glibc took all three settings.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's thresholds; it takes the allocator's
        // own lock, and both values are within the ranges glibc documents.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_training_allocator_settings() {
        assert!(super::keep_freed_memory());
    }

    use super::*;

    #[test]
    fn split_is_deterministic_and_about_ten_percent() {
        let val = (0..1000u64).filter(|&s| split_of(s) == Split::Val).count();
        assert!((70..=130).contains(&val), "{val} of 1000 in val");
        for s in 0..100 {
            assert_eq!(split_of(s), split_of(s));
        }
        assert!((0..1000u64).any(|s| split_of(s) == Split::Train));
    }
}

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

#[cfg(test)]
mod tests {
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

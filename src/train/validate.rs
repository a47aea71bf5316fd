//! The validation benchmark behind the README's ablation table: models (and a colour-keying
//! baseline) matte the same held-out composites, and the figures are split by background kind
//! and by input format.
//!
//! The validation clips come from [`super::dataset::make_sample`] with [`Split::Val`], so they
//! never share a clip seed (or, for artwork, a file) with training.

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::Split;
use super::composite::{Background, Degradation};
use super::dataset::{DataConfig, Sample, make_sample};
use crate::eval::{ClipMetrics, Plane, evaluate_alpha, mean_metrics};
use crate::model::codec::LatentCodec;
use crate::model::{IldiffDecoder, KeyPrior};
use crate::pipeline::matte::{MatteOptions, matte_clip_with_plate};
use crate::{Error, NoProgress, Result};

/// The validation clips of a run seed: `count` samples of `data` (its split forced to val).
pub fn val_samples(data: &DataConfig, seed: u64, count: usize) -> Result<Vec<Sample>> {
    split_samples(data, Split::Val, seed, count)
}

/// `count` samples of `data` from `split`: the training split is for choosing a constant
/// without looking at the validation clips.
pub fn split_samples(
    data: &DataConfig,
    split: Split,
    seed: u64,
    count: usize,
) -> Result<Vec<Sample>> {
    let mut cfg = data.clone();
    cfg.split = split;
    (0..count as u64)
        .map(|i| make_sample(&cfg, seed, i))
        .collect()
}

/// The input-format label of a degradation, as the ablation table groups them.
pub fn format_label(d: Degradation) -> &'static str {
    match d {
        Degradation::None => "lossless",
        Degradation::Gif => "gif",
        Degradation::Blocking => "h264-like",
        Degradation::Resize => "resized",
    }
}

fn planes(data: &[f32], frames: usize, size: usize) -> Vec<Plane> {
    let n = size * size;
    (0..frames)
        .map(|t| Plane {
            w: size,
            h: size,
            data: data[t * n..(t + 1) * n].to_vec(),
        })
        .collect()
}

/// A colour-keying matte: the background colour is the median of each frame's border pixels,
/// and alpha ramps from 0 to 1 as a pixel's RGB distance from it goes from `rule.lo` to the
/// frame's `hi`. With [`KeyPrior::default`] (a fixed 0.06..0.2) this is what a designer gets
/// from a "remove background colour" tool; with [`KeyPrior::adaptive`] it is the CPU default's
/// prior alone, without the network.
pub fn colour_key(sample: &Sample, rule: &KeyPrior) -> Vec<Plane> {
    let s = sample.size;
    let n = s * s;
    (0..sample.frames)
        .map(|t| {
            let ch = |c: usize| &sample.rgb[(t * 3 + c) * n..(t * 3 + c + 1) * n];
            let median = |p: &[f32]| {
                let mut v: Vec<f32> = border(s).map(|k| p[k]).collect();
                v.sort_by(f32::total_cmp);
                v[v.len() / 2]
            };
            let key = [median(ch(0)), median(ch(1)), median(ch(2))];
            ramped(sample, t, rule, |c, _| key[c], None)
        })
        .collect()
}

/// Indices of a square frame's border pixels (corners twice), as the model's key reads them.
fn border(s: usize) -> impl Iterator<Item = usize> {
    (0..s).flat_map(move |i| [i, (s - 1) * s + i, i * s, i * s + s - 1])
}

/// Frame `t`'s alpha keyed against the background colour `bg(channel, pixel)`, with `rule`'s
/// ramp for the frame (set from the border's distances).
/// `plate_conf` is the plate's confidence for the frame, which the local ramp end reads
/// (without one, the border's agreement with the key, as the model reads it).
fn ramped(
    sample: &Sample,
    t: usize,
    rule: &KeyPrior,
    bg: impl Fn(usize, usize) -> f32,
    plate_conf: Option<&[f32]>,
) -> Plane {
    let s = sample.size;
    let n = s * s;
    // pixel − background, planar, once: the distance and the local ramp both read it.
    let diff: Vec<f32> = (0..3)
        .flat_map(|c| (0..n).map(move |k| (c, k)))
        .map(|(c, k)| sample.rgb[(t * 3 + c) * n + k] - bg(c, k))
        .collect();
    let planes = [&diff[..n], &diff[n..2 * n], &diff[2 * n..]];
    let dist: Vec<f32> = (0..n)
        .map(|k| planes.iter().map(|p| p[k] * p[k]).sum::<f32>().sqrt())
        .collect();
    let border_dist: Vec<f32> = border(s).map(|k| dist[k]).collect();
    let ramp = rule.frame_ramp(&border_dist, &dist);
    let data = match rule.local {
        Some(local) => {
            // Without a plate the model trusts its border colour as far as the border agrees.
            let flat;
            let conf = match plate_conf {
                Some(c) => c,
                None => {
                    flat = vec![KeyPrior::agreement(&border_dist, ramp.0); n];
                    &flat
                }
            };
            local.alpha(planes, conf, s, s, ramp)
        }
        None => dist.iter().map(|&d| KeyPrior::ramp(d, ramp)).collect(),
    };
    Plane { w: s, h: s, data }
}

/// The plate prior alone: alpha ramps with each pixel's RGB distance from the sample's plate
/// ([`Sample::plate`]), the ramp set per frame by `rule` from the border's distances to the
/// plate ("plate + ramp, no network"). Errors when the sample has no plate.
pub fn plate_key(sample: &Sample, rule: &KeyPrior) -> Result<Vec<Plane>> {
    let s = sample.size;
    let n = s * s;
    if sample.plate.len() != sample.frames * 4 * n {
        return Err(Error::Invalid("the validation sample has no plate".into()));
    }
    Ok((0..sample.frames)
        .map(|t| {
            let conf = &sample.plate[(t * 4 + 3) * n..(t * 4 + 4) * n];
            ramped(
                sample,
                t,
                rule,
                |c, k| sample.plate[(t * 4 + c) * n + k],
                Some(conf),
            )
        })
        .collect())
}

/// A model's alpha for a sample, through the same windowed pipeline `ildiff matte` uses.
pub fn model_alpha(model: &IldiffDecoder, sample: &Sample, device: &Device) -> Result<Vec<Plane>> {
    let codec = model
        .codec()
        .ok_or_else(|| Error::Model("the model has no codec to encode clips with".into()))?;
    let (t, s) = (sample.frames, sample.size);
    let err = |source| Error::Candle {
        context: "validation".into(),
        source,
    };
    let pixel = Tensor::from_slice(&sample.rgb, (t, 3, s, s), device).map_err(err)?;
    let latent = codec.encode_any_size(&pixel).map_err(err)?;
    let plate = if model.uses_plate() {
        if sample.plate.len() != t * 4 * s * s {
            return Err(Error::Invalid(
                "a plate-prior model needs validation samples with plates".into(),
            ));
        }
        Some(Tensor::from_slice(&sample.plate, (t, 4, s, s), device).map_err(err)?)
    } else {
        None
    };
    let out = matte_clip_with_plate(
        model,
        &pixel,
        &latent,
        plate.as_ref(),
        &MatteOptions::default(),
        &mut NoProgress,
    )?;
    let alpha: Vec<f32> = out
        .narrow(1, 0, 1)
        .and_then(|a| a.flatten_all())
        .and_then(|a| a.to_vec1())
        .map_err(err)?;
    Ok(planes(&alpha, t, s))
}

/// Figures of one method over the validation set.
#[derive(Debug, Clone, Serialize)]
pub struct MethodReport {
    pub method: String,
    pub overall: ClipMetrics,
    /// Per background kind, in [`Background::ALL`] order (kinds without clips are left out).
    pub by_background: Vec<(String, ClipMetrics)>,
    /// Per background motion (static, panning), then per input format.
    pub by_format: Vec<(String, ClipMetrics)>,
    /// Per clip, in sample order (what `--per-clip` prints, to find the clips that fail).
    pub per_clip: Vec<ClipMetrics>,
}

/// Scores per-sample predictions against the samples' truth.
pub fn report(method: &str, samples: &[Sample], preds: &[Vec<Plane>]) -> Result<MethodReport> {
    let per: Vec<ClipMetrics> = samples
        .iter()
        .zip(preds)
        .map(|(s, p)| evaluate_alpha(p, &planes(&s.alpha, s.frames, s.size)))
        .collect::<Result<_>>()?;
    let group = |keep: &dyn Fn(&Sample) -> bool| {
        let v: Vec<ClipMetrics> = samples
            .iter()
            .zip(&per)
            .filter(|(s, _)| keep(s))
            .map(|(_, m)| m.clone())
            .collect();
        mean_metrics(&v)
    };
    let overall = mean_metrics(&per).ok_or_else(|| Error::Invalid("no validation clips".into()))?;
    let by_background = Background::ALL
        .iter()
        .filter_map(|&b| group(&|s| s.background == b).map(|m| (b.name().to_string(), m)))
        .collect();
    let mut by_format = Vec::new();
    for (label, pan) in [("static bg", false), ("panning bg", true)] {
        if let Some(m) = group(&|s| s.panning == pan) {
            by_format.push((label.to_string(), m));
        }
    }
    for label in ["lossless", "gif", "h264-like", "resized"] {
        if let Some(m) = group(&|s| format_label(s.degradation) == label) {
            by_format.push((label.to_string(), m));
        }
    }
    Ok(MethodReport {
        method: method.to_string(),
        overall,
        by_background,
        by_format,
        per_clip: per,
    })
}

fn cell(m: &ClipMetrics) -> String {
    format!(
        "{:.2} / {:.3} / {:.2} / {}",
        m.psnr,
        m.ssim,
        m.dtssd,
        m.hole_residue
            .map_or("–".to_string(), |h| format!("{h:.3}"))
    )
}

/// The reports as a Markdown table: one row per method, one column per group; each cell is
/// `alpha PSNR / SSIM / dtSSD / hole residue`.
pub fn markdown(reports: &[MethodReport]) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let mut cols = vec!["overall".to_string()];
    cols.extend(first.by_background.iter().map(|(n, _)| n.clone()));
    cols.extend(first.by_format.iter().map(|(n, _)| n.clone()));
    let mut out = format!("| method | {} |\n", cols.join(" | "));
    out.push_str(&format!("|---|{}\n", "---|".repeat(cols.len())));
    for r in reports {
        let mut cells = vec![cell(&r.overall)];
        for name in &cols[1..] {
            let m = r
                .by_background
                .iter()
                .chain(&r.by_format)
                .find(|(n, _)| n == name)
                .map(|(_, m)| cell(m));
            cells.push(m.unwrap_or_else(|| "–".into()));
        }
        out.push_str(&format!("| {} | {} |\n", r.method, cells.join(" | ")));
    }
    out
}

/// One line per clip: its background, motion and format, then each method's alpha PSNR, so
/// the few clips that drag a mean down can be found and looked at (`--dump`).
pub fn per_clip_table(samples: &[Sample], reports: &[MethodReport]) -> String {
    let mut out = format!(
        "| clip | background | motion | format | plate fit | {} |\n|---|---|---|---|---|{}\n",
        reports
            .iter()
            .map(|r| r.method.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(reports.len())
    );
    for (i, s) in samples.iter().enumerate() {
        let cells: Vec<String> = reports
            .iter()
            .map(|r| {
                r.per_clip
                    .get(i)
                    .map_or("–".into(), |m| format!("{:.2}", m.psnr))
            })
            .collect();
        out.push_str(&format!(
            "| {i} | {} | {} | {} | {} | {} |\n",
            s.background.name(),
            if s.panning { "panning" } else { "static" },
            format_label(s.degradation),
            if s.plate_fit.is_empty() {
                "–"
            } else {
                &s.plate_fit
            },
            cells.join(" | ")
        ));
    }
    out
}

/// A sample's (degraded) input frames as an opaque animation at 12 frames/s.
pub fn input_animation(sample: &Sample) -> crate::media::Animation {
    use crate::media::{Animation, Delay, Frame, LoopCount};
    let s = sample.size;
    let n = s * s;
    let px = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let frames = (0..sample.frames)
        .map(|t| {
            let f = &sample.rgb[t * 3 * n..(t + 1) * 3 * n];
            let img = image::RgbaImage::from_fn(s as u32, s as u32, |x, y| {
                let k = y as usize * s + x as usize;
                image::Rgba([px(f[k]), px(f[n + k]), px(f[2 * n + k]), 255])
            });
            Frame::new(img, Delay::from_fps(12.0))
        })
        .collect();
    Animation {
        width: s as u32,
        height: s as u32,
        frames,
        loops: LoopCount::Infinite,
    }
}

/// A clip's first, middle and last frame as rows of an RGB picture: input, plate, plate
/// confidence, true alpha, and one alpha per prediction, side by side (`--dump`).
pub fn contact_sheet(sample: &Sample, preds: &[&[Plane]]) -> image::RgbImage {
    let s = sample.size;
    let n = s * s;
    let rows = if sample.frames > 2 {
        vec![0, sample.frames / 2, sample.frames - 1]
    } else {
        (0..sample.frames).collect()
    };
    let has_plate = sample.plate.len() == sample.frames * 4 * n;
    let cols = 2 + if has_plate { 2 } else { 0 } + preds.len();
    let mut img = image::RgbImage::new((cols * s) as u32, (rows.len() * s) as u32);
    let px = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for (r, &t) in rows.iter().enumerate() {
        let mut tiles: Vec<Box<dyn Fn(usize) -> [f32; 3]>> = Vec::new();
        let rgb = |base: &[f32], t0: usize| {
            let v = base[t0 * n..(t0 + 3) * n].to_vec();
            Box::new(move |k: usize| [v[k], v[n + k], v[2 * n + k]])
                as Box<dyn Fn(usize) -> [f32; 3]>
        };
        let grey =
            |v: Vec<f32>| Box::new(move |k: usize| [v[k]; 3]) as Box<dyn Fn(usize) -> [f32; 3]>;
        tiles.push(rgb(&sample.rgb, t * 3));
        if has_plate {
            tiles.push(rgb(&sample.plate, t * 4));
            tiles.push(grey(
                sample.plate[(t * 4 + 3) * n..(t * 4 + 4) * n].to_vec(),
            ));
        }
        tiles.push(grey(sample.alpha[t * n..(t + 1) * n].to_vec()));
        for p in preds {
            tiles.push(grey(
                p.get(t).map_or_else(|| vec![0.0; n], |pl| pl.data.clone()),
            ));
        }
        for (c, tile) in tiles.iter().enumerate() {
            for k in 0..n {
                let v = tile(k);
                img.put_pixel(
                    (c * s + k % s) as u32,
                    (r * s + k / s) as u32,
                    image::Rgb([px(v[0]), px(v[1]), px(v[2])]),
                );
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keying_is_exact_on_a_plain_background_and_reports_group() {
        let data = DataConfig {
            backgrounds: vec![Background::Plain],
            ..DataConfig::procedural(48, 2, Split::Val)
        };
        let samples = val_samples(&data, 3, 6).expect("samples");
        // Lossless clips over one flat colour: keying recovers hard alpha well.
        let rule = KeyPrior {
            lo: 0.02,
            hi: 0.1,
            ..KeyPrior::default()
        };
        let preds: Vec<Vec<Plane>> = samples.iter().map(|s| colour_key(s, &rule)).collect();
        let r = report("keying", &samples, &preds).expect("report");
        assert_eq!(r.by_background.len(), 1);
        assert_eq!(r.by_background[0].0, "plain");
        assert!(r.overall.psnr > 12.0, "{:?}", r.overall);
        // The truth scores perfectly.
        let truth: Vec<Vec<Plane>> = samples
            .iter()
            .map(|s| planes(&s.alpha, s.frames, s.size))
            .collect();
        let t = report("truth", &samples, &truth).expect("report");
        assert_eq!(t.overall.psnr, crate::eval::PSNR_CAP);
        assert!(t.overall.psnr > r.overall.psnr);
        let clips = per_clip_table(&samples, &[t.clone(), r.clone()]);
        assert_eq!(clips.lines().count(), 2 + samples.len());
        assert!(clips.contains("| 0 | plain | static | "), "{clips}");
        // Without plates the plate-fit column says so.
        assert!(
            clips.lines().nth(2).is_some_and(|l| l.contains(" | – | ")),
            "{clips}"
        );
        let sheet = contact_sheet(&samples[0], &[&preds[0]]);
        // Input, truth and one prediction per row; a row per frame of these 2-frame clips.
        assert_eq!(sheet.dimensions(), (3 * 48, 2 * 48));
        // The dumped input is the sample's frames, to 8 bits.
        let input = input_animation(&samples[0]);
        assert_eq!((input.width, input.height, input.frames.len()), (48, 48, 2));
        let px = input.frames[1].image.get_pixel(5, 7);
        let k = 48 * 48 * 3 + 7 * 48 + 5;
        assert_eq!(px[1], (samples[0].rgb[k + 48 * 48] * 255.0).round() as u8);
        assert_eq!(px[3], 255);
        let md = markdown(&[t, r]);
        assert!(md.contains("| truth |") && md.contains("| keying |") && md.contains("plain"));
        // The tuning draw never repeats a validation clip.
        let tuning = split_samples(&data, Split::Train, 3, 6).expect("samples");
        for (a, b) in tuning.iter().zip(&samples) {
            assert_ne!(a.rgb, b.rgb);
        }
    }
}

//! Known-answer tests of the clip metrics. Reference numbers that are not hand-derivable were
//! produced once with scikit-image 0.26 / scipy 1.17 (see each test) and pasted here; the tests
//! themselves need no Python.

use image::{Rgba, RgbaImage};

use super::*;
use crate::media::{Delay, Frame, LoopCount};

fn plane(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> Plane {
    let mut data = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            data.push(f(x, y));
        }
    }
    Plane { w, h, data }
}

fn u8_plane(w: usize, h: usize, f: impl Fn(usize, usize) -> u8) -> Plane {
    plane(w, h, |x, y| f32::from(f(x, y)) / 255.0)
}

fn anim(frames: Vec<RgbaImage>) -> Animation {
    let (w, h) = frames[0].dimensions();
    let frames = frames
        .into_iter()
        .map(|i| Frame::new(i, Delay::from_millis(40)))
        .collect();
    Animation::new(w, h, frames, LoopCount::Infinite).expect("valid animation")
}

/// A square ring: opaque between 12 and 52 px, transparent inside 20..44 (a 24-px hole).
fn square_ring(x: usize, y: usize) -> bool {
    let outer = (12..52).contains(&x) && (12..52).contains(&y);
    let inner = (20..44).contains(&x) && (20..44).contains(&y);
    outer && !inner
}

fn ring_image(fill_hole: u8) -> RgbaImage {
    RgbaImage::from_fn(64, 64, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let inner = (20..44).contains(&x) && (20..44).contains(&y);
        if square_ring(x, y) {
            Rgba([200, 100, 50, 255])
        } else if inner {
            Rgba([200, 100, 50, fill_hole])
        } else {
            Rgba([0, 0, 0, 0])
        }
    })
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn identical_clips_score_perfectly() {
    let gt = anim(vec![ring_image(0), ring_image(0), ring_image(0)]);
    let m = evaluate(&gt, &gt).expect("evaluates");
    assert_eq!(m.frames, 3);
    assert_eq!(m.psnr, PSNR_CAP);
    assert!(close(m.ssim, 1.0, 1e-12), "ssim {}", m.ssim);
    assert_eq!(
        (m.sad, m.mse, m.grad, m.conn, m.dtssd),
        (0.0, 0.0, 0.0, 0.0, 0.0)
    );
    assert_eq!(m.hole_residue, Some(0.0));
    assert_eq!(m.rgb_psnr, Some(PSNR_CAP));
}

#[test]
fn constant_offset_of_a_tenth() {
    let (w, h) = (32, 24);
    let gt: Vec<Plane> = (0..3).map(|_| plane(w, h, |_, _| 0.4)).collect();
    let pred: Vec<Plane> = (0..3).map(|_| plane(w, h, |_, _| 0.5)).collect();
    let m = evaluate_alpha(&pred, &gt).expect("evaluates");
    // 0.5f32 − 0.4f32 is 0.1 to about 1e-8.
    assert!(close(m.mse, 0.01, 1e-8), "mse {}", m.mse);
    assert!(close(m.psnr, 20.0, 1e-5), "psnr {}", m.psnr);
    assert!(
        close(m.sad, 0.1 * (w * h) as f64 / 1000.0, 1e-8),
        "sad {}",
        m.sad
    );
    assert_eq!(m.dtssd, 0.0);
    // Flat mattes: no gradient anywhere, so no gradient error.
    assert!(m.grad < 1e-20, "grad {}", m.grad);
    // Everything is foreground (α* ≥ 0.05): no hole pixels, so no figure rather than NaN.
    assert_eq!(m.hole_residue, None);
    assert_eq!(m.rgb_psnr, None);
}

#[test]
fn eight_bit_offset_through_evaluate() {
    // 51/255 = 0.2 exactly representable as an 8-bit step: MSE 0.04, PSNR 10·log10(25).
    let img = |a: u8| RgbaImage::from_pixel(16, 16, Rgba([10, 20, 30, a]));
    let m = evaluate(
        &anim(vec![img(153), img(153)]),
        &anim(vec![img(102), img(102)]),
    )
    .expect("evaluates");
    // Planes hold f32, so 153/255 − 102/255 is 0.2 only to ~1e-7 relative.
    assert!(close(m.mse, 0.04, 1e-8), "mse {}", m.mse);
    assert!(close(m.psnr, 10.0 * 25f64.log10(), 1e-5), "psnr {}", m.psnr);
    assert!(close(m.sad, 0.2 * 256.0 / 1000.0, 1e-8));
}

#[test]
fn one_flickering_pixel() {
    let (w, h) = (16, 12);
    let gt: Vec<Plane> = (0..4).map(|_| plane(w, h, |_, _| 0.0)).collect();
    let pred: Vec<Plane> = (0..4)
        .map(|t| {
            plane(w, h, |x, y| {
                if (x, y) == (5, 7) {
                    (t % 2) as f32
                } else {
                    0.0
                }
            })
        })
        .collect();
    let m = evaluate_alpha(&pred, &gt).expect("evaluates");
    // Each pair: one pixel differs by 1 out of 192 → sqrt(1/192)·100 = 7.2168783648…
    let want = (1.0f64 / 192.0).sqrt() * 100.0;
    assert!(close(m.dtssd, want, 1e-12), "dtssd {} want {want}", m.dtssd);

    let diff = temporal_diff(&pred).expect("same sizes");
    assert_eq!(diff.len(), 4);
    assert!(diff[0].iter().all(|&d| d == 0.0));
    for d in &diff[1..] {
        for (i, &v) in d.iter().enumerate() {
            assert_eq!(v, if i == 7 * w + 5 { 1.0 } else { 0.0 }, "pixel {i}");
        }
    }
    let scores = flicker_scores(&pred).expect("same sizes");
    assert_eq!(scores[0], 0.0);
    assert!(scores[1..].iter().all(|&s| close(s, 1.0 / 192.0, 1e-15)));
}

#[test]
fn single_frame_has_zero_dtssd() {
    let gt = vec![plane(12, 12, |x, _| x as f32 / 11.0)];
    let pred = vec![plane(12, 12, |_, y| y as f32 / 11.0)];
    let m = evaluate_alpha(&pred, &gt).expect("evaluates");
    assert_eq!(m.dtssd, 0.0);
    assert!(m.mse > 0.0);
}

#[test]
fn temporal_diff_rejects_mixed_sizes() {
    let frames = vec![plane(4, 4, |_, _| 0.0), plane(4, 5, |_, _| 0.0)];
    assert!(matches!(temporal_diff(&frames), Err(Error::Invalid(_))));
    assert!(matches!(flicker_scores(&frames), Err(Error::Invalid(_))));
    assert!(temporal_diff(&[]).expect("empty is fine").is_empty());
}

/// Test pattern of `ssim_matches_scikit_image`: 8-bit values from integer formulas.
fn pattern_pair() -> (Plane, Plane) {
    let gt = |x: usize, y: usize| ((x * x + 3 * y * y) * 7 % 256) as u8;
    let pred = |x: usize, y: usize| (usize::from(gt(x, y)) + (x * 5 + y * 11) % 40).min(255) as u8;
    (u8_plane(20, 16, pred), u8_plane(20, 16, gt))
}

/// A soft disc (gt) against a smaller, shifted, harder disc plus a stray 2×3 blob (pred).
fn disc_pair() -> (Plane, Plane) {
    let level = |x: usize, y: usize, cx: f64, r: f64, slope: f64| {
        let d = ((x as f64 - cx).powi(2) + (y as f64 - 9.0).powi(2)).sqrt();
        ((r - d) * slope).round_ties_even().clamp(0.0, 255.0) as u8
    };
    let gt = u8_plane(24, 20, |x, y| level(x, y, 11.0, 7.5, 64.0));
    let pred = u8_plane(24, 20, |x, y| {
        if (2..4).contains(&y) && (20..23).contains(&x) {
            200
        } else {
            level(x, y, 12.0, 7.0, 48.0)
        }
    });
    (pred, gt)
}

#[test]
fn ssim_matches_scikit_image() {
    // Reference: skimage.metrics.structural_similarity(pred, gt, gaussian_weights=True,
    // sigma=1.5, use_sample_covariance=False, data_range=1.0) on the same arrays built in numpy
    // as float32(u8)/255 → float64 (scikit-image 0.26.0).
    let (pred, gt) = pattern_pair();
    let m = evaluate_alpha(std::slice::from_ref(&pred), std::slice::from_ref(&gt)).expect("ok");
    assert!(close(m.ssim, 0.9800157002152692, 1e-12), "ssim {}", m.ssim);

    let (pred, gt) = disc_pair();
    let m = evaluate_alpha(&[pred], &[gt]).expect("ok");
    assert!(close(m.ssim, 0.7437036628144001, 1e-12), "ssim {}", m.ssim);
}

#[test]
fn grad_and_conn_match_a_python_port_of_the_dim_code() {
    // Reference: a numpy/scipy port of DIM's compute_gradient_loss.m (gaussgradient σ 1.4,
    // kernel / L2 norm, scipy.ndimage.convolve mode='nearest', without mat2gray) and
    // compute_connectivity_error.m (skimage.measure.label connectivity=1, no ties here), on
    // `disc_pair`, divided by 1000 (scipy 1.17.1, scikit-image 0.26.0).
    let (pred, gt) = disc_pair();
    let m = evaluate_alpha(&[pred], &[gt]).expect("ok");
    assert!(close(m.grad, 0.10042661260751382, 1e-12), "grad {}", m.grad);
    assert!(close(m.conn, 0.03987255010008812, 1e-12), "conn {}", m.conn);
}

#[test]
fn conn_and_grad_grow_with_worse_predictions() {
    let gt = plane(32, 32, |x, y| {
        if (8..24).contains(&x) && (8..24).contains(&y) {
            1.0
        } else {
            0.0
        }
    });
    // A detached opaque blob the gt does not have: bigger blob, bigger errors.
    let blob = |size: usize| {
        plane(32, 32, move |x, y| {
            if gt_at(x, y) || ((27..27 + size).contains(&x) && (2..2 + size).contains(&y)) {
                1.0
            } else {
                0.0
            }
        })
    };
    fn gt_at(x: usize, y: usize) -> bool {
        (8..24).contains(&x) && (8..24).contains(&y)
    }
    let small = evaluate_alpha(&[blob(2)], std::slice::from_ref(&gt)).expect("ok");
    let big = evaluate_alpha(&[blob(4)], std::slice::from_ref(&gt)).expect("ok");
    // Every blob pixel is disconnected at level 0 with α = 1: φ differs by exactly 1.
    assert!(
        close(small.conn, 4.0 / 1000.0, 1e-15),
        "conn {}",
        small.conn
    );
    assert!(close(big.conn, 16.0 / 1000.0, 1e-15), "conn {}", big.conn);
    assert!(small.grad > 0.0 && big.grad > small.grad);
    assert!(small.sad < big.sad && small.psnr > big.psnr);
}

#[test]
fn hole_residue_of_a_ring() {
    let gt = anim(vec![ring_image(0), ring_image(0)]);
    // The hole (24×24 inside a 40×40 ring, far wider than the closing disk of 2.25 px) is
    // found by the enclosed-hole fill; filling it with α 1 leaves residue 1 on every hole pixel.
    let filled = anim(vec![ring_image(255), ring_image(255)]);
    let m = evaluate(&filled, &gt).expect("evaluates");
    assert_eq!(m.hole_residue, Some(1.0));
    let half = anim(vec![ring_image(102), ring_image(102)]);
    let m = evaluate(&half, &gt).expect("evaluates");
    let r = m.hole_residue.expect("has holes");
    assert!(close(r, 0.4, 1e-6), "residue {r}");
    assert_eq!(evaluate(&gt, &gt).expect("ok").hole_residue, Some(0.0));
}

#[test]
fn rgb_psnr_uses_premultiplied_colour_under_gt_alpha() {
    let gt = RgbaImage::from_fn(16, 16, |x, _| {
        if x < 8 {
            Rgba([200, 200, 200, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    // Colour changes where α* = 0 do not count…
    let mut pred = gt.clone();
    for x in 8..16 {
        pred.put_pixel(x, 3, Rgba([255, 0, 0, 0]));
    }
    let m = evaluate(&anim(vec![pred.clone()]), &anim(vec![gt.clone()])).expect("ok");
    assert_eq!(m.rgb_psnr, Some(PSNR_CAP));
    // …a 51/255 = 0.2 change of every channel where α* = 1 gives MSE 0.04.
    for x in 0..8 {
        for y in 0..16 {
            pred.put_pixel(x, y, Rgba([149, 149, 149, 255]));
        }
    }
    let m = evaluate(&anim(vec![pred]), &anim(vec![gt])).expect("ok");
    let p = m.rgb_psnr.expect("has foreground");
    assert!(close(p, 10.0 * 25f64.log10(), 1e-9), "rgb psnr {p}");
    // All-transparent ground truth: nothing to measure.
    let empty = RgbaImage::new(16, 16);
    let m = evaluate(&anim(vec![empty.clone()]), &anim(vec![empty])).expect("ok");
    assert_eq!(m.rgb_psnr, None);
}

#[test]
fn mismatches_are_invalid_and_say_what_differs() {
    let a = anim(vec![RgbaImage::new(16, 16)]);
    let b = anim(vec![RgbaImage::new(16, 12)]);
    match evaluate(&a, &b) {
        Err(Error::Invalid(msg)) => assert!(msg.contains("canvas sizes differ"), "{msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let c = anim(vec![RgbaImage::new(16, 16), RgbaImage::new(16, 16)]);
    match evaluate(&a, &c) {
        Err(Error::Invalid(msg)) => assert!(msg.contains("frame counts differ"), "{msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let p = vec![plane(4, 4, |_, _| 0.0)];
    let q = vec![plane(4, 3, |_, _| 0.0)];
    assert!(matches!(evaluate_alpha(&p, &q), Err(Error::Invalid(_))));
    assert!(matches!(evaluate_alpha(&[], &[]), Err(Error::Invalid(_))));
    let bad = vec![Plane {
        w: 4,
        h: 4,
        data: vec![0.0; 3],
    }];
    assert!(matches!(evaluate_alpha(&bad, &bad), Err(Error::Invalid(_))));
    assert!(Plane::new(2, 2, vec![0.0; 3]).is_err());
}

#[test]
fn mean_over_clips() {
    let a = ClipMetrics {
        frames: 2,
        psnr: 30.0,
        ssim: 0.9,
        sad: 1.0,
        mse: 0.001,
        grad: 2.0,
        conn: 3.0,
        dtssd: 4.0,
        hole_residue: Some(0.2),
        rgb_psnr: None,
    };
    let b = ClipMetrics {
        frames: 3,
        psnr: 40.0,
        ssim: 0.7,
        sad: 3.0,
        mse: 0.003,
        grad: 4.0,
        conn: 5.0,
        dtssd: 6.0,
        hole_residue: None,
        rgb_psnr: None,
    };
    let m = mean_metrics(&[a, b]).expect("non-empty");
    assert_eq!(m.frames, 5);
    // PSNR of the mean MSE (0.002), not the mean of 30 and 40 dB.
    assert!(
        close(m.psnr, -10.0 * 0.002f64.log10(), 1e-9)
            && close(m.ssim, 0.8, 1e-12)
            && close(m.sad, 2.0, 1e-12)
    );
    assert!(close(m.mse, 0.002, 1e-15) && close(m.dtssd, 5.0, 1e-12));
    assert_eq!(m.hole_residue, Some(0.2));
    assert_eq!(m.rgb_psnr, None);
    assert!(mean_metrics(&[]).is_none());
}

#[test]
fn par_map_keeps_order() {
    let v = par_map(37, |i| i * i);
    assert_eq!(v, (0..37).map(|i| i * i).collect::<Vec<_>>());
    assert!(par_map(0, |i| i).is_empty());
}

#[test]
fn json_has_nulls_not_nans() {
    let gt = vec![plane(12, 12, |_, _| 1.0)];
    let m = evaluate_alpha(&gt, &gt).expect("ok");
    let j = serde_json::to_value(&m).expect("serialises");
    assert!(j["hole_residue"].is_null() && j["rgb_psnr"].is_null());
    assert_eq!(j["psnr"], 100.0);
}

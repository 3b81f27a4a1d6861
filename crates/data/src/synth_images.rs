//! `synthetic_images`: 10 classes of procedural 32×32 RGB images, deterministic from the seed.
//! Five shape classes (disc, square, triangle, cross, ring: random position, scale, rotation)
//! and five texture classes (horizontal, vertical and diagonal stripes, checkerboard, dot grid:
//! random frequency, phase and ±15° rotation). Foreground and background colours are random
//! (so colour is no cue), the background has a random linear gradient, and per-image Gaussian
//! pixel noise of random strength is added. Items are (3, 32, 32) planes in [0, 1].

use anyhow::{Result, bail};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::seed::item_rng;

/// Class names, in label order.
pub const CLASSES: [&str; 10] = [
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "h_stripes",
    "v_stripes",
    "d_stripes",
    "checkerboard",
    "dots",
];

/// Image side.
pub const SIDE: usize = 32;

/// Parameters of the `synthetic_images` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticImagesParams {
    pub train_per_class: usize,
    pub val_per_class: usize,
    pub test_per_class: usize,
    /// Upper bound of the per-image pixel-noise standard deviation (drawn in [0, noise]).
    pub noise: f64,
    /// Lower bound of the foreground/background contrast (mean absolute RGB difference).
    pub min_contrast: f64,
}

impl Default for SyntheticImagesParams {
    fn default() -> Self {
        Self {
            train_per_class: 1000,
            val_per_class: 100,
            test_per_class: 200,
            noise: 0.25,
            min_contrast: 0.12,
        }
    }
}

impl SyntheticImagesParams {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.train_per_class == 0 {
            bail!("dataset.train_per_class must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.noise) {
            bail!("dataset.noise must be in [0, 1], got {}", self.noise);
        }
        if !(0.0..=0.6).contains(&self.min_contrast) {
            bail!(
                "dataset.min_contrast must be in [0, 0.6], got {}",
                self.min_contrast
            );
        }
        Ok(())
    }
}

fn colour(rng: &mut ChaCha8Rng) -> [f64; 3] {
    std::array::from_fn(|_| rng.random::<f64>())
}

/// Coverage in [0, 1] of the class pattern at local point (u, v) (image centre 0, side 2).
fn coverage(class: usize, u: f64, v: f64, g: &Geom) -> f64 {
    let (c, s) = (g.rot.cos(), g.rot.sin());
    let (x, y) = (
        (u - g.cx) * c + (v - g.cy) * s,
        -(u - g.cx) * s + (v - g.cy) * c,
    );
    let (x, y) = (x / g.scale, y / g.scale);
    let aa = 0.06 / g.scale; // edge softness in local units
    let inside = |d: f64| (0.5 - d / aa).clamp(0.0, 1.0);
    let wave = |t: f64| {
        (0.5 + (2.0 * std::f64::consts::PI * (t * g.freq + g.phase)).sin() * 2.5).clamp(0.0, 1.0)
    };
    match class {
        0 => inside((x * x + y * y).sqrt() - 1.0),
        1 => inside(x.abs().max(y.abs()) - 0.85),
        2 => {
            // Equilateral triangle of circumradius 1: the largest of three edge distances.
            let d = [90f64, 210.0, 330.0]
                .iter()
                .map(|a| x * a.to_radians().cos() + y * a.to_radians().sin())
                .fold(f64::MIN, f64::max);
            inside(d - 0.5)
        }
        3 => inside((x.abs().max(y.abs() * 3.5) - 1.0).min(y.abs().max(x.abs() * 3.5) - 1.0)),
        4 => inside(((x * x + y * y).sqrt() - 0.75).abs() - 0.25),
        5 => wave(v * c - u * s),
        6 => wave(u * c + v * s),
        7 => wave(
            (u + v) * std::f64::consts::FRAC_1_SQRT_2 * c
                + (v - u) * std::f64::consts::FRAC_1_SQRT_2 * s,
        ),
        8 => {
            let a = (2.0 * std::f64::consts::PI * (u * g.freq * 0.5 + g.phase)).sin();
            let b = (2.0 * std::f64::consts::PI * (v * g.freq * 0.5 + g.phase)).sin();
            (0.5 + a * b * 4.0).clamp(0.0, 1.0)
        }
        _ => {
            let cell = 2.0 / (g.freq * 0.5);
            let fx = (u / cell + g.phase).rem_euclid(1.0) - 0.5;
            let fy = (v / cell + g.phase).rem_euclid(1.0) - 0.5;
            inside(((fx * fx + fy * fy).sqrt() - 0.25) * cell)
        }
    }
}

struct Geom {
    cx: f64,
    cy: f64,
    scale: f64,
    rot: f64,
    freq: f64,
    phase: f64,
}

/// Generates image `index` of `class` in `split`: 3×32×32 values in [0, 1].
pub fn image(
    p: &SyntheticImagesParams,
    seed: u64,
    split: u64,
    class: usize,
    index: u64,
) -> Vec<f32> {
    let mut rng = item_rng(seed, &[0x0069_6d67, split, class as u64, index]);
    let bg = colour(&mut rng);
    let mut fg = colour(&mut rng);
    while fg.iter().zip(&bg).map(|(a, b)| (a - b).abs()).sum::<f64>() / 3.0 < p.min_contrast {
        fg = colour(&mut rng);
    }
    let scale = rng.random_range(0.3..0.7);
    let texture = class >= 5;
    let g = Geom {
        cx: if texture {
            0.0
        } else {
            rng.random_range(-(0.95 - scale)..(0.95 - scale))
        },
        cy: if texture {
            0.0
        } else {
            rng.random_range(-(0.95 - scale)..(0.95 - scale))
        },
        scale,
        rot: if texture {
            rng.random_range(-15f64..15.0).to_radians()
        } else {
            rng.random_range(0.0..std::f64::consts::TAU)
        },
        freq: rng.random_range(2.5..5.0),
        phase: rng.random::<f64>(),
    };
    let grad: [f64; 2] = [rng.random_range(-0.15..0.15), rng.random_range(-0.15..0.15)];
    let noise = rng.random_range(0.0..=p.noise);
    let mut out = vec![0f32; 3 * SIDE * SIDE];
    for r in 0..SIDE {
        for col in 0..SIDE {
            let u = (col as f64 + 0.5) / SIDE as f64 * 2.0 - 1.0;
            let v = (r as f64 + 0.5) / SIDE as f64 * 2.0 - 1.0;
            let a = coverage(class, u, v, &g);
            let shade = grad[0] * u + grad[1] * v;
            for ch in 0..3 {
                let base = bg[ch] + shade;
                let n = noise * gauss(&mut rng);
                out[ch * SIDE * SIDE + r * SIDE + col] =
                    (base * (1.0 - a) + fg[ch] * a + n).clamp(0.0, 1.0) as f32;
            }
        }
    }
    out
}

/// Standard normal sample (Box–Muller).
fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Builds the three splits (class-major order within each split).
pub fn build(
    p: &SyntheticImagesParams,
    seed: u64,
    progress: crate::Progress,
) -> Result<crate::Dataset> {
    let shape = [3, SIDE, SIDE];
    let mut splits = Vec::new();
    for (s, (name, n)) in [
        ("train", p.train_per_class),
        ("val", p.val_per_class),
        ("test", p.test_per_class),
    ]
    .into_iter()
    .enumerate()
    {
        let ids: Vec<(usize, u64)> = (0..CLASSES.len())
            .flat_map(|c| (0..n as u64).map(move |i| (c, i)))
            .collect();
        let imgs: Vec<Vec<f32>> = ids
            .par_iter()
            .map(|&(c, i)| image(p, seed, s as u64, c, i))
            .collect();
        progress(name, ids.len() as u64, ids.len() as u64);
        let y = ids.iter().map(|&(c, _)| c as u32).collect();
        splits.push(crate::Split::new(imgs.concat(), &shape, y)?);
    }
    let [train, val, test]: [crate::Split; 3] = splits.try_into().expect("three splits");
    Ok(crate::Dataset {
        train,
        val,
        test,
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        input_shape: shape.to_vec(),
        layout: "channels,height,width".into(),
        normalization: None,
        description: serde_json::json!({
            "kind": "synthetic_images",
            "note": "procedural shapes and textures, RGB planes in [0, 1]",
        }),
        ..Default::default()
    })
}

//! `synthetic_vww`: a built-in two-class (non_person, person) image set in the visual wake
//! words form, deterministic from the seed. Every image is drawn as 8-bit RGB at
//! [`NATIVE`] × [`NATIVE`] and then goes through the `vww` loader's resize and scaling
//! ([`crate::vww::to_planes`]), so items are (3, size, size) planes in [0, 1].
//!
//! Both classes share the scene: a background of random colour with a linear gradient and
//! two random-orientation sinusoidal textures, 0–2 clutter shapes (rectangles, ellipses), one
//! foreground object of random scale (35–85 % of the image height, possibly cut by the
//! border), position, lean and part colours, and uniform pixel noise of random strength.
//! The object is, for `person`, a stick figure of capsules — head circle, torso, two arms and
//! two legs in a random pose (arms down, out or raised; legs together or apart); for
//! `non_person` one of three look-alikes made of the same primitives and colours: a tree or
//! lamp (vertical trunk with a round or oval crown), a four-legged animal (horizontal body,
//! legs, raised head, tail) or the person's parts scattered at random.

use anyhow::{Result, bail};
use image::{Rgb, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::seed::item_rng;
use crate::vww::{check_size, default_size, to_planes, vww_dataset};

/// Side of the images as drawn, before the resize to `size`.
pub const NATIVE: u32 = 128;

/// Parameters of the `synthetic_vww` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticVwwParams {
    pub train_per_class: usize,
    pub val_per_class: usize,
    pub test_per_class: usize,
    /// Side of the square output images.
    pub size: usize,
    /// Upper bound of the per-image uniform pixel-noise amplitude (drawn in [0, noise]).
    pub noise: f64,
}

impl Default for SyntheticVwwParams {
    fn default() -> Self {
        Self {
            train_per_class: 200,
            val_per_class: 40,
            test_per_class: 80,
            size: default_size(),
            noise: 0.15,
        }
    }
}

impl SyntheticVwwParams {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.train_per_class == 0 {
            bail!("dataset.train_per_class must be at least 1");
        }
        check_size(self.size)?;
        if !(0.0..=1.0).contains(&self.noise) {
            bail!("dataset.noise must be in [0, 1], got {}", self.noise);
        }
        Ok(())
    }
}

/// A filled primitive in native pixel coordinates (y down).
enum Prim {
    /// Segment a–b with radius r.
    Capsule([f64; 2], [f64; 2], f64),
    /// Centre, radii, rotation.
    Ellipse([f64; 2], [f64; 2], f64),
    /// Centre, half sides, rotation.
    Rect([f64; 2], [f64; 2], f64),
}

impl Prim {
    /// Signed distance (pixels, approximate for ellipses) from (x, y); < 0 inside.
    fn dist(&self, x: f64, y: f64) -> f64 {
        match *self {
            Prim::Capsule(a, b, r) => {
                let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
                let l2 = (dx * dx + dy * dy).max(1e-9);
                let t = (((x - a[0]) * dx + (y - a[1]) * dy) / l2).clamp(0.0, 1.0);
                let (px, py) = (a[0] + t * dx - x, a[1] + t * dy - y);
                (px * px + py * py).sqrt() - r
            }
            Prim::Ellipse(c, r, rot) => {
                let (u, v) = local(x - c[0], y - c[1], rot);
                let k = ((u / r[0]).powi(2) + (v / r[1]).powi(2)).sqrt();
                (k - 1.0) * r[0].min(r[1])
            }
            Prim::Rect(c, h, rot) => {
                let (u, v) = local(x - c[0], y - c[1], rot);
                (u.abs() - h[0]).max(v.abs() - h[1])
            }
        }
    }

    /// Bounding box (x0, y0, x1, y1), unclipped.
    fn bounds(&self) -> [f64; 4] {
        match *self {
            Prim::Capsule(a, b, r) => [
                a[0].min(b[0]) - r,
                a[1].min(b[1]) - r,
                a[0].max(b[0]) + r,
                a[1].max(b[1]) + r,
            ],
            Prim::Ellipse(c, r, _) | Prim::Rect(c, r, _) => {
                let m = r[0].hypot(r[1]);
                [c[0] - m, c[1] - m, c[0] + m, c[1] + m]
            }
        }
    }
}

fn local(dx: f64, dy: f64, rot: f64) -> (f64, f64) {
    let (s, c) = rot.sin_cos();
    (dx * c + dy * s, -dx * s + dy * c)
}

/// Paints `prim` in `colour` with a one-pixel soft edge.
fn paint(img: &mut [[f64; 3]], prim: &Prim, colour: [f64; 3]) {
    let n = NATIVE as i64;
    let b = prim.bounds();
    let x0 = (b[0].floor() as i64 - 1).clamp(0, n);
    let x1 = (b[2].ceil() as i64 + 1).clamp(0, n);
    let y0 = (b[1].floor() as i64 - 1).clamp(0, n);
    let y1 = (b[3].ceil() as i64 + 1).clamp(0, n);
    for y in y0..y1 {
        for x in x0..x1 {
            let a = (0.5 - prim.dist(x as f64 + 0.5, y as f64 + 0.5)).clamp(0.0, 1.0);
            if a > 0.0 {
                let p = &mut img[(y * n + x) as usize];
                for ch in 0..3 {
                    p[ch] = p[ch] * (1.0 - a) + colour[ch] * a;
                }
            }
        }
    }
}

fn colour(rng: &mut ChaCha8Rng) -> [f64; 3] {
    std::array::from_fn(|_| rng.random::<f64>())
}

/// Places a part given in object coordinates (x right, y up from the base point, in object
/// heights) into the image: base (bx, by), height h, lean rot.
struct Frame {
    bx: f64,
    by: f64,
    h: f64,
    rot: f64,
}

impl Frame {
    fn at(&self, x: f64, y: f64) -> [f64; 2] {
        let (s, c) = self.rot.sin_cos();
        let (x, y) = (x * self.h, y * self.h);
        [self.bx + x * c + y * s, self.by - (y * c - x * s)]
    }

    fn capsule(&self, a: [f64; 2], b: [f64; 2], r: f64) -> Prim {
        Prim::Capsule(self.at(a[0], a[1]), self.at(b[0], b[1]), r * self.h)
    }
}

/// End point of a limb of `len` from `from` at angle `ang` (radians, 0 = straight down,
/// positive towards +x).
fn limb(from: [f64; 2], len: f64, ang: f64) -> [f64; 2] {
    [from[0] + len * ang.sin(), from[1] - len * ang.cos()]
}

/// The parts of the foreground object: (primitive, colour index 0..3).
fn object(person: bool, rng: &mut ChaCha8Rng) -> Vec<(Prim, usize)> {
    let n = NATIVE as f64;
    let h = rng.random_range(0.35..0.85) * n;
    let f = Frame {
        bx: rng.random_range(0.1..0.9) * n,
        by: rng.random_range(0.55..1.1) * n,
        h,
        rot: rng.random_range(-12f64..12.0).to_radians(),
    };
    let mut parts = Vec::new();
    let deg = |d: f64| d.to_radians();
    let kind = if person { 0 } else { rng.random_range(1..4) };
    match kind {
        0 => {
            let hip = 0.47;
            for side in [-1.0, 1.0] {
                let a = side * deg(rng.random_range(0.0..25.0));
                let top = [side * 0.04, hip];
                parts.push((f.capsule(top, limb(top, 0.45, a), 0.045), 1));
            }
            parts.push((f.capsule([0.0, 0.5], [0.0, 0.76], 0.09), 0));
            for side in [-1.0, 1.0] {
                let a = side * deg(rng.random_range(5.0..160.0));
                let top = [side * 0.08, 0.76];
                parts.push((f.capsule(top, limb(top, 0.34, a), 0.035), 0));
            }
            let c = f.at(0.0, 0.89);
            parts.push((Prim::Ellipse(c, [0.075 * h, 0.08 * h], f.rot), 2));
        }
        1 => {
            // Tree or lamp: trunk with a crown.
            let top = rng.random_range(0.55..0.75);
            parts.push((
                f.capsule([0.0, 0.0], [0.0, top], rng.random_range(0.03..0.06)),
                1,
            ));
            let r = [
                rng.random_range(0.12..0.3) * h,
                rng.random_range(0.1..0.25) * h,
            ];
            parts.push((Prim::Ellipse(f.at(0.0, top + 0.1), r, f.rot), 0));
        }
        2 => {
            // Four-legged animal.
            let (len, y) = (rng.random_range(0.35..0.6), rng.random_range(0.3..0.45));
            let dir = if rng.random::<bool>() { 1.0 } else { -1.0 };
            parts.push((f.capsule([-len / 2.0, y], [len / 2.0, y], 0.08), 0));
            for x in [-0.45, -0.3, 0.3, 0.45] {
                let a = deg(rng.random_range(-15.0..15.0));
                let top = [x * len, y];
                parts.push((f.capsule(top, limb(top, y, a), 0.035), 1));
            }
            let neck = [dir * len / 2.0, y];
            let head = [dir * (len / 2.0 + 0.1), y + rng.random_range(0.1..0.25)];
            parts.push((f.capsule(neck, head, 0.04), 0));
            parts.push((
                Prim::Ellipse(f.at(head[0], head[1]), [0.09 * h, 0.065 * h], f.rot),
                2,
            ));
            let tail = limb(
                [-neck[0], y],
                0.2,
                -dir * deg(rng.random_range(100.0..160.0)),
            );
            parts.push((f.capsule([-neck[0], y], tail, 0.02), 1));
        }
        _ => {
            // The person's parts, scattered.
            let sizes = [
                (0.45, 0.045, 1),
                (0.45, 0.045, 1),
                (0.26, 0.09, 0),
                (0.34, 0.035, 0),
                (0.34, 0.035, 0),
            ];
            for (len, r, ci) in sizes {
                let a = [rng.random_range(-0.3..0.3), rng.random_range(0.0..0.9)];
                let b = limb(a, len, rng.random_range(0.0..std::f64::consts::TAU));
                parts.push((f.capsule(a, b, r), ci));
            }
            let c = f.at(rng.random_range(-0.3..0.3), rng.random_range(0.0..0.9));
            parts.push((Prim::Ellipse(c, [0.075 * h, 0.08 * h], f.rot), 2));
        }
    }
    parts
}

/// Draws image `index` of `class` (0 non_person, 1 person) in `split` at native size.
pub fn native_image(
    p: &SyntheticVwwParams,
    seed: u64,
    split: u64,
    class: usize,
    index: u64,
) -> RgbImage {
    let mut rng = item_rng(seed, &[0x7376_7777, split, class as u64, index]);
    let n = NATIVE as usize;
    let bg = colour(&mut rng);
    let grad = [rng.random_range(-0.2..0.2), rng.random_range(-0.2..0.2)];
    let waves: Vec<(f64, f64, f64, f64)> = (0..2)
        .map(|_| {
            let ang = rng.random_range(0.0..std::f64::consts::PI);
            let freq = rng.random_range(1.0..8.0) * std::f64::consts::TAU / n as f64;
            (
                ang.cos() * freq,
                ang.sin() * freq,
                rng.random_range(0.0..0.06),
                rng.random::<f64>() * std::f64::consts::TAU,
            )
        })
        .collect();
    let mut img = vec![[0f64; 3]; n * n];
    for y in 0..n {
        for x in 0..n {
            let (u, v) = (x as f64 / n as f64 - 0.5, y as f64 / n as f64 - 0.5);
            let t: f64 = waves
                .iter()
                .map(|w| w.2 * (w.0 * x as f64 + w.1 * y as f64 + w.3).sin())
                .sum();
            let shade = grad[0] * u + grad[1] * v + t;
            img[y * n + x] = std::array::from_fn(|ch| bg[ch] + shade);
        }
    }
    for _ in 0..rng.random_range(0..3) {
        let c = [
            rng.random::<f64>() * n as f64,
            rng.random::<f64>() * n as f64,
        ];
        let r = [
            rng.random_range(0.05..0.2) * n as f64,
            rng.random_range(0.05..0.2) * n as f64,
        ];
        let rot = rng.random_range(0.0..std::f64::consts::PI);
        let prim = if rng.random::<bool>() {
            Prim::Rect(c, r, rot)
        } else {
            Prim::Ellipse(c, r, rot)
        };
        let col = colour(&mut rng);
        paint(&mut img, &prim, col);
    }
    let cols = [colour(&mut rng), colour(&mut rng), colour(&mut rng)];
    for (prim, ci) in object(class == 1, &mut rng) {
        paint(&mut img, &prim, cols[ci]);
    }
    let noise = rng.random_range(0.0..=p.noise);
    let mut out = RgbImage::new(NATIVE, NATIVE);
    for (i, px) in img.iter().enumerate() {
        let v: [u8; 3] = std::array::from_fn(|ch| {
            let e = noise * (2.0 * rng.random::<f64>() - 1.0);
            ((px[ch] + e).clamp(0.0, 1.0) * 255.0).round() as u8
        });
        out.put_pixel((i % n) as u32, (i / n) as u32, Rgb(v));
    }
    out
}

/// Builds the three splits (class-major order within each split: non_person, then person).
pub fn build(
    p: &SyntheticVwwParams,
    seed: u64,
    progress: crate::Progress,
) -> Result<crate::Dataset> {
    let shape = [3, p.size, p.size];
    let mut splits = Vec::new();
    for (s, (name, n)) in [
        ("train", p.train_per_class),
        ("val", p.val_per_class),
        ("test", p.test_per_class),
    ]
    .into_iter()
    .enumerate()
    {
        if n == 0 {
            splits.push(crate::Split::empty(&shape));
            continue;
        }
        let ids: Vec<(usize, u64)> = (0..2)
            .flat_map(|c| (0..n as u64).map(move |i| (c, i)))
            .collect();
        let imgs: Vec<Vec<f32>> = ids
            .par_iter()
            .map(|&(c, i)| to_planes(&native_image(p, seed, s as u64, c, i), p.size))
            .collect();
        progress(name, ids.len() as u64, ids.len() as u64);
        let y = ids.iter().map(|&(c, _)| c as u32).collect();
        splits.push(crate::Split::new(imgs.concat(), &shape, y)?);
    }
    let [train, val, test]: [crate::Split; 3] = splits.try_into().expect("three splits");
    Ok(vww_dataset(
        train,
        val,
        test,
        p.size,
        serde_json::json!({
            "kind": "synthetic_vww",
            "note": "procedural person / non-person scenes drawn at 128x128, Triangle-filter resize, RGB planes in [0, 1]",
        }),
    ))
}

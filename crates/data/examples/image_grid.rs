//! Writes a PPM contact sheet of `synthetic_images` (one row per class, 8 samples each) to
//! the path given as the first argument: `cargo run -p whittle-data --example image_grid out.ppm`.

use whittle_data::synth_images::{CLASSES, SIDE, SyntheticImagesParams, image};

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "synthetic_images.ppm".into());
    let p = SyntheticImagesParams::default();
    let (cols, rows) = (8, CLASSES.len());
    let (w, h) = (cols * (SIDE + 2), rows * (SIDE + 2));
    let mut px = vec![255u8; w * h * 3];
    for c in 0..rows {
        for i in 0..cols {
            let img = image(&p, 1, 0, c, i as u64);
            for r in 0..SIDE {
                for k in 0..SIDE {
                    for ch in 0..3 {
                        let v = img[ch * SIDE * SIDE + r * SIDE + k];
                        px[((c * (SIDE + 2) + r) * w + i * (SIDE + 2) + k) * 3 + ch] =
                            (v * 255.0).round() as u8;
                    }
                }
            }
        }
    }
    let mut bytes = format!("P6\n{w} {h}\n255\n").into_bytes();
    bytes.extend(px);
    std::fs::write(&out, bytes)?;
    println!("wrote {out} (10 classes × 8 samples; rows {CLASSES:?})");
    Ok(())
}

//! Timing of the `float(*,*)` grid at the flagship's size (ignored by default; run in release
//! with `cargo test --release -p whittle-nn grid_timing -- --ignored --nocapture`): the 56
//! default formats on 2,400 test clips (10×49 MFCC) for the TCN-64 seed and the DS-CNN.

use super::eval::{QuantModel, QuantOptions};
use super::format::Format;
use super::grid::FloatGrid;
use crate::config::{DsCnnConfig, ModelConfig, TcnConfig, TcnPadding};
use crate::data::Split;
use crate::loss::LossKind;
use crate::model::Model;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn split(n: usize, shape: &[usize]) -> Split {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let per: usize = shape.iter().product();
    let x: Vec<f32> = (0..n * per)
        .map(|_| r.random::<f32>() * 2.0 - 1.0)
        .collect();
    let y: Vec<u32> = (0..n).map(|i| (i % 12) as u32).collect();
    Split::classes(x, shape, y).unwrap()
}

#[test]
#[ignore = "timing at flagship size; run in release"]
fn grid_timing_flagship_size() {
    let mut tcn = TcnConfig::seed(64);
    tcn.padding = TcnPadding::Causal;
    let nets = [
        ("tcn64", ModelConfig::Tcn(tcn), vec![10, 49]),
        (
            "dscnn",
            ModelConfig::DsCnn(DsCnnConfig::reference()),
            vec![1, 49, 10],
        ),
    ];
    let mut grid = FloatGrid::default().formats().unwrap();
    if std::env::var("GRID_TIMING_FORMATS").is_ok_and(|v| v == "few") {
        grid = vec![super::float::FloatFormat::FP32, grid[27], grid[55]];
    }
    let total = Instant::now();
    for (name, cfg, shape) in nets {
        let m = Model::new(cfg, 0).unwrap();
        let test = split(2400, &shape);
        let t0 = Instant::now();
        for f in &grid {
            let q =
                QuantModel::prepare(&m, Format::Float(*f), None, &QuantOptions::default()).unwrap();
            let t1 = Instant::now();
            crate::train::evaluate(&q, &test, LossKind::CrossEntropy, 100).unwrap();
            if grid.len() < 10 {
                println!("  {name} {:?}: {:.3} s", f, t1.elapsed().as_secs_f64());
            }
        }
        let s = t0.elapsed().as_secs_f64();
        println!(
            "{name}: {} formats in {s:.2} s ({:.3} s per format)",
            grid.len(),
            s / grid.len() as f64
        );
    }
    println!("total {:.2} s", total.elapsed().as_secs_f64());
}

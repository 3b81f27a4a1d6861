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

/// CPU seconds of this process so far (user + system, from /proc/self/stat; 0 elsewhere):
/// the machine is shared, so CPU time is the steadier measure next to wall time.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name.
    (tick(11) + tick(12)) / 100.0
}

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
        let c0 = cpu_s();
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
        let c = cpu_s() - c0;
        println!(
            "{name}: {} formats in {s:.2} s wall, {c:.2} s CPU ({:.3} s CPU per format)",
            grid.len(),
            c / grid.len() as f64
        );
    }
    println!("total {:.2} s", total.elapsed().as_secs_f64());
}

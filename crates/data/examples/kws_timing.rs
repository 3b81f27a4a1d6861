//! Times clip generation and MFCC separately on one thread (`cargo run --release --example kws_timing`).
use std::time::Instant;
use whittle_data::synth_kws::{SyntheticKwsParams, clip};
use whittle_data::{Mfcc, MfccParams};
fn main() {
    let p = SyntheticKwsParams::default();
    let t = Instant::now();
    let clips: Vec<Vec<f32>> = (0..600).map(|i| clip(&p, 1, 0, i % 12, i as u64)).collect();
    println!(
        "generate: {:.3} ms/clip",
        t.elapsed().as_secs_f64() * 1e3 / 600.0
    );
    let m = Mfcc::new(&MfccParams::default()).unwrap();
    let t = Instant::now();
    let mut s = 0.0;
    for c in &clips {
        s += m.compute(c)[0];
    }
    println!(
        "mfcc: {:.3} ms/clip ({s})",
        t.elapsed().as_secs_f64() * 1e3 / 600.0
    );
}

//! Difficulty proxy for `synthetic_kws` (DS-CNN cannot be trained in this crate): builds the
//! default data set, reports the generation + MFCC time, then scores a nearest-centroid
//! classifier and a softmax (multinomial logistic) regression on the normalised MFCCs.
//! Usage: `cargo run --release -p whittle-data --example kws_proxy [train_per_class] [snr_lo snr_hi]`.

use std::time::Instant;

use whittle_data::synth_kws::SyntheticKwsParams;
use whittle_data::{DatasetSpec, FetchParams, Split, build};

fn nearest_centroid(train: &Split, test: &Split, k: usize) -> f64 {
    let d = train.item_len();
    let mut cent = vec![0f64; k * d];
    let counts = train.counts(k);
    for i in 0..train.len() {
        let c = train.y[i] as usize;
        for (j, v) in train.item(i).iter().enumerate() {
            cent[c * d + j] += *v as f64 / counts[c] as f64;
        }
    }
    let correct = (0..test.len())
        .filter(|&i| {
            let x = test.item(i);
            let best = (0..k)
                .map(|c| {
                    (
                        c,
                        x.iter()
                            .zip(&cent[c * d..])
                            .map(|(a, b)| (*a as f64 - b).powi(2))
                            .sum::<f64>(),
                    )
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap()
                .0;
            best == test.y[i] as usize
        })
        .count();
    correct as f64 / test.len() as f64
}

fn softmax_regression(train: &Split, test: &Split, k: usize, epochs: usize) -> f64 {
    let d = train.item_len();
    let mut w = vec![0f64; k * (d + 1)];
    let lr = 0.01;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut state = 12345u64;
    for _ in 0..epochs {
        for i in (1..order.len()).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        for &i in &order {
            let x = train.item(i);
            let mut z: Vec<f64> = (0..k)
                .map(|c| {
                    w[c * (d + 1) + d]
                        + x.iter()
                            .zip(&w[c * (d + 1)..])
                            .map(|(a, b)| *a as f64 * b)
                            .sum::<f64>()
                })
                .collect();
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = z
                .iter_mut()
                .map(|v| {
                    *v = (*v - m).exp();
                    *v
                })
                .sum();
            for c in 0..k {
                let g = z[c] / s - if train.y[i] as usize == c { 1.0 } else { 0.0 };
                let row = &mut w[c * (d + 1)..(c + 1) * (d + 1)];
                for (j, v) in x.iter().enumerate() {
                    row[j] -= lr * (g * *v as f64 + 1e-4 * row[j]);
                }
                row[d] -= lr * g;
            }
        }
    }
    let correct = (0..test.len())
        .filter(|&i| {
            let x = test.item(i);
            let best = (0..k)
                .map(|c| {
                    (
                        c,
                        w[c * (d + 1) + d]
                            + x.iter()
                                .zip(&w[c * (d + 1)..])
                                .map(|(a, b)| *a as f64 * b)
                                .sum::<f64>(),
                    )
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap()
                .0;
            best == test.y[i] as usize
        })
        .count();
    correct as f64 / test.len() as f64
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut p = SyntheticKwsParams::default();
    if let Some(n) = args.get(1) {
        p.train_per_class = n.parse()?;
    }
    if let (Some(a), Some(b)) = (args.get(2), args.get(3)) {
        p.snr_db = [a.parse()?, b.parse()?];
    }
    let params = FetchParams {
        dataset: DatasetSpec::SyntheticKws(p.clone()),
        ..Default::default()
    };
    let t = Instant::now();
    let ds = build(&params, 42, std::path::Path::new("/tmp"), &|_, _, _| {})?;
    println!(
        "synthetic_kws {:?}: train {} val {} test {} clips, built in {:.2} s on {} threads",
        p,
        ds.train.len(),
        ds.val.len(),
        ds.test.len(),
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    let k = ds.classes.len();
    println!(
        "nearest centroid: test accuracy {:.1} %",
        100.0 * nearest_centroid(&ds.train, &ds.test, k)
    );
    println!(
        "softmax regression (10 epochs): test accuracy {:.1} %",
        100.0 * softmax_regression(&ds.train, &ds.test, k, 10)
    );
    Ok(())
}

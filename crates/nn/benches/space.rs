//! Search-before-training benchmark (`cargo bench -p whittle-nn --bench space`): sampling +
//! analytic costs (params, MACs, weight bytes, peak activations) of 10,000 candidates from
//! each narrow space's full law (target: under a second), and one `004` GA law design run
//! (n_init 100 + n_steps 900, n_eval 10 = 10,000 sampled candidates) for the band
//! (1e4, 2e4) parameters, then its spectral clustering into k = 10 laws; then a whole design
//! (9 bands over 1e3 … 1e6 parameters) per space. Prints one
//! `bench <what> …` line per measurement. `WHITTLE_BENCH_N` changes the 10,000.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use whittle_nn::space::ga::{self, GaConfig};
use whittle_nn::space::{Costs, Metric, Space};

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("WHITTLE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    for family in ["plain_cnn", "resnet"] {
        let space = Space::new(serde_json::from_value(
            serde_json::json!({ "family": family }),
        )?)?;
        let law = space.full_law();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let t = Instant::now();
        let mut total = 0u64;
        for _ in 0..n {
            let x = law.sample(&space, &mut rng).map_err(anyhow::Error::msg)?;
            let c = Costs::of(&space.graph(&x)?);
            total = total.wrapping_add(c.params ^ c.macs ^ c.weight_bytes(8) ^ c.peak_activations);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "bench sample_and_cost space={family} n={n} seconds={s:.3} per_candidate_us={:.1} (checksum {total})",
            s * 1e6 / n as f64
        );
    }
    let space = Space::new(serde_json::from_value(
        serde_json::json!({ "family": "plain_cnn" }),
    )?)?;
    let cfg = GaConfig::default();
    let t = Instant::now();
    let pop = ga::evolve(&space, &Metric::Params, (1e4, 2e4), &cfg);
    let evolve = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let laws = ga::most_different(&space, &pop, cfg.k, cfg.seed);
    let cluster = t.elapsed().as_secs_f64();
    println!(
        "bench ga space=plain_cnn band=1e4..2e4 evaluated={} evolve_seconds={evolve:.3} cluster_seconds={cluster:.4} laws={} best_cost={:.1} best_mu={:.0} best_sigma={:.0}",
        (cfg.n_init + cfg.n_steps) * cfg.n_eval,
        laws.len(),
        pop[0].cost,
        pop[0].mu,
        pop[0].sigma
    );
    // The full design of a space: one GA per band over three decades of parameters (9 bands,
    // in parallel on the rayon pool), k = 10 laws each.
    for family in ["plain_cnn", "resnet"] {
        let space = Space::new(serde_json::from_value(
            serde_json::json!({ "family": family }),
        )?)?;
        let bands = ga::bands(3, 6);
        let t = Instant::now();
        let d = ga::design(&space, &Metric::Params, &bands, &cfg);
        let s = t.elapsed().as_secs_f64();
        let worst = d
            .iter()
            .map(|b| b.best_cost / (b.band.1 - b.band.0))
            .fold(0.0, f64::max);
        println!(
            "bench ga_design space={family} bands={} laws={} seconds={s:.2} worst_best_cost_over_band_width={worst:.3}",
            d.len(),
            d.iter().map(|b| b.laws.len()).sum::<usize>()
        );
    }
    Ok(())
}

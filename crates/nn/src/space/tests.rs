//! Tests of the narrow spaces, laws, costs, GA, clustering and latency fit.

use super::cluster::spectral;
use super::ga::{self, GaConfig, Scored};
use super::predict::{LatencyPredictor, LogLogFit, split};
use super::*;
use crate::arch::node_list::{NodeListConfig, parse_nodes};
use crate::config::{ModelConfig, ResNetConfig};
use crate::quant::{Format, float::FloatFormat, weight_bytes};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

fn plain() -> Space {
    Space::new(serde_json::from_str(r#"{ "family": "plain_cnn" }"#).unwrap()).unwrap()
}

fn resnet() -> Space {
    Space::new(serde_json::from_str(r#"{ "family": "resnet" }"#).unwrap()).unwrap()
}

fn law(space: &Space, w: &[(&str, [u32; 2])]) -> Law {
    let m: BTreeMap<String, [u32; 2]> = w.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    Law::from_values(space.variables(), &m).unwrap()
}

#[test]
fn samples_stay_within_the_law_and_bounds_and_are_valid() {
    for (space, narrow) in [
        (
            plain(),
            vec![("c1", [4, 9]), ("c3", [100, 128]), ("k2", [2, 5])],
        ),
        (
            resnet(),
            vec![
                ("c1", [8, 20]),
                ("c2", [10, 12]),
                ("n3", [2, 3]),
                ("e1", [2, 2]),
            ],
        ),
    ] {
        let vars = space.variables().to_vec();
        for l in [space.full_law(), law(&space, &narrow)] {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let mut seen = vec![std::collections::BTreeSet::new(); vars.len()];
            for _ in 0..2000 {
                let x = l.sample(&space, &mut rng).unwrap();
                assert!(space.check(&x).is_ok());
                for (i, v) in vars.iter().enumerate() {
                    let [a, b] = l.limits[i];
                    let (lo, hi) = (v.domain.value(a), v.domain.value(b));
                    assert!(
                        (lo..=hi).contains(&x[i]),
                        "{} = {} outside [{lo}, {hi}]",
                        v.name,
                        x[i]
                    );
                    assert!(
                        v.domain.index_range(x[i], x[i]).is_some(),
                        "{} = {} not in its domain",
                        v.name,
                        x[i]
                    );
                    seen[i].insert(x[i]);
                }
                space.graph(&x).unwrap().validate().unwrap();
            }
            // Uniform laws reach both limits of every variable (but the resnet widths, which
            // the validity rule c1 ≤ c2 ≤ c3 couples).
            let coupled = |n: &str| vars.len() == 13 && n.starts_with('c');
            for (i, v) in vars.iter().enumerate().filter(|(_, v)| !coupled(&v.name)) {
                let [a, b] = l.limits[i];
                assert!(
                    seen[i].contains(&v.domain.value(a)) && seen[i].contains(&v.domain.value(b)),
                    "{}",
                    v.name
                );
            }
        }
        // k2 in [2, 5] with options 1, 3, 5, 7 is 3 or 5.
        if space.variables()[0].name == "c1" && space.variables().len() == 6 {
            assert_eq!(
                law(&space, &narrow).to_values(space.variables())["k2"],
                [3, 5]
            );
        }
    }
}

#[test]
fn the_resnet_validity_rule_rejects_shrinking_widths() {
    let s = resnet();
    // s, then (c, n, k, e) per stage
    assert!(
        s.check(&[16, 16, 1, 3, 1, 32, 1, 3, 1, 64, 1, 3, 1])
            .is_ok()
    );
    let e = s
        .check(&[16, 32, 1, 3, 1, 16, 1, 3, 1, 64, 1, 3, 1])
        .unwrap_err();
    assert!(e.contains("c2 = 16 is narrower than c1 = 32"), "{e}");
    // A law that can only give c1 > c2 yields no valid model.
    let bad = law(&s, &[("c1", [60, 64]), ("c2", [4, 8])]);
    let err = bad
        .sample(&s, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap_err();
    assert!(err.contains("no valid model"), "{err}");
    // A law that is rarely valid (c1 ≤ c2 needs both in [60, 64]: ~0.3 % of draws) is unfit
    // for the GA, though it does sample.
    let rare = law(&s, &[("c1", [60, 128]), ("c2", [4, 64])]);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (_, draws) = rare.sample_counting(&s, &mut rng).unwrap();
    assert!(draws >= 1);
    assert_eq!(ga::estimate(&s, &rare, &Metric::Params, 10, &mut rng), None);
    let ok = law(&s, &[("c1", [8, 16]), ("c2", [16, 32])]);
    assert!(ga::estimate(&s, &ok, &Metric::Params, 10, &mut rng).is_some());
}

#[test]
fn references_are_points_of_their_spaces() {
    let r = resnet();
    let g = r.graph(&r.reference()).unwrap();
    let want = ModelConfig::ResNet(ResNetConfig {
        bias: false,
        ..ResNetConfig::resnet8()
    })
    .build()
    .unwrap();
    assert_eq!(
        g, want,
        "the resnet space's reference is ResNet-8 (without conv biases)"
    );
    let p = plain();
    assert_eq!(p.reference(), vec![32, 64, 128, 3, 3, 3]);
    // bounds that exclude the reference are refused
    let e = Space::new(
        serde_json::from_str(r#"{ "family": "plain_cnn", "channels": [1, 16] }"#).unwrap(),
    );
    assert!(e.is_ok(), "plain reference caps at the upper bound");
    let e =
        Space::new(serde_json::from_str(r#"{ "family": "resnet", "stem": [20, 30] }"#).unwrap())
            .unwrap_err()
            .to_string();
    assert!(
        e.contains("s = 16") && e.contains("must contain its reference"),
        "{e}"
    );
    let e = Space::new(
        serde_json::from_str(r#"{ "family": "plain_cnn", "input": [3, 4, 4] }"#).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("too small"), "{e}");
    let e = serde_json::from_str::<SpaceConfig>(r#"{ "family": "plain_cnn", "chanels": [1, 2] }"#)
        .unwrap_err();
    assert!(e.to_string().contains("chanels"), "{e}");
}

#[test]
fn model_tables_build_the_same_graphs() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let p = plain();
    for _ in 0..50 {
        let x = p.full_law().sample(&p, &mut rng).unwrap();
        let t = p.model_table(&x);
        assert_eq!(t["arch"], "graph");
        let nodes = parse_nodes(t["nodes"].as_array().unwrap()).unwrap();
        let g = NodeListConfig {
            input: vec![3, 32, 32],
            classes: 10,
            nodes,
        }
        .build()
        .unwrap();
        assert_eq!(g, p.graph(&x).unwrap());
    }
    let r = resnet();
    for _ in 0..50 {
        let x = r.full_law().sample(&r, &mut rng).unwrap();
        let t = r.model_table(&x);
        assert_eq!(t["arch"], "full");
        let c: ModelConfig = serde_json::from_value(t["config"].clone()).unwrap();
        assert_eq!(c.build().unwrap(), r.graph(&x).unwrap());
    }
}

#[test]
fn costs_match_a_hand_count_and_the_graph() {
    // 3×8×8 → conv 3→2 k3 (no bias) → BN → ReLU → pool 2 → flatten (32) → fc 32→10.
    let s = Space::new(
        serde_json::from_str(r#"{ "family": "plain_cnn", "input": [3, 8, 8], "layers": 1, "channels": [1, 4], "kernels": [3] }"#)
            .unwrap(),
    )
    .unwrap();
    let g = s.graph(&[2, 3]).unwrap();
    let c = Costs::of(&g);
    // params: conv 54, BN 4, fc 320 + 10 → 388; weights 54 + 320 = 374
    // MACs: conv 128 outputs × 27 = 3456, fc 320 → 3776
    // peak: input 192 + conv output 128 = 320 (then ≤ 256)
    assert_eq!(
        c,
        Costs {
            params: 388,
            macs: 3776,
            weight_elems: 374,
            peak_activations: 320,
        }
    );
    assert_eq!(c.flops(), 7552);
    assert_eq!(c.weight_bytes(32), 388 * 4);
    assert_eq!(c.weight_bytes(8), 374 + 14 * 4);
    assert_eq!(c.peak_activation_bytes(32), 1280);
    assert_eq!(c.peak_activation_bytes(4), 160);
    // the same as the crate's own counts on sampled candidates of both spaces
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for sp in [plain(), resnet()] {
        for _ in 0..30 {
            let x = sp.full_law().sample(&sp, &mut rng).unwrap();
            let g = sp.graph(&x).unwrap();
            let c = Costs::of(&g);
            assert_eq!((c.params, c.macs), (g.params(), g.macs()));
            for (w, t) in [(4, 3), (5, 10), (8, 7), (8, 23)] {
                let f = Format::Float(FloatFormat::new(w, t).unwrap());
                assert_eq!(c.weight_bytes(1 + w + t), weight_bytes(&g, f, false));
            }
            assert!(c.peak_activations <= crate::memory::counts(&g).values);
        }
    }
}

#[test]
fn peak_activations_of_a_residual_block_by_hand() {
    // ResNet with stem 1 channel on 1×4×4, one stage of one block c = 2, e = 1, k = 3:
    // the shortcut keeps the block input alive across both convs.
    let s = Space::new(
        serde_json::from_str(
            r#"{ "family": "resnet", "input": [1, 4, 4], "stages": 1, "stem": [1, 16], "channels": [1, 16], "kernels": [3] }"#,
        )
        .unwrap(),
    )
    .unwrap();
    let g = s.graph(&[1, 2, 1, 3, 1]).unwrap();
    // values: in 16, conv0 16, bn0 16, relu0 16 | c1 32, b1 32, relu1 32, c2 32, b2 32,
    // sc 32 (1×1 conv, 1→2 channels), add 32, relu 32 | pool 2, fc 10.
    // At c2: relu0 (16, read by sc later) + relu1 (32) + c2 (32) = 80; at sc: relu0 16 + b2 32
    // + sc 32 = 80; at the add: b2 + sc + add = 96 (the peak).
    assert_eq!(Costs::of(&g).peak_activations, 96);
}

#[test]
fn ga_fitness_against_hand_values() {
    let (mu, sigma) = ga::stats(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(mu, 2.5);
    assert!((sigma - 1.25f64.sqrt()).abs() < 1e-15);
    assert_eq!(ga::cost(10.0, 2.0, (7.0, 13.0)), 2.0);
    assert_eq!(ga::cost(15.0, 5.0, (10.0, 20.0)), 0.0);
    assert_eq!(ga::cost(100.0, 0.0, (10.0, 20.0)), 90.0 + 80.0);
    // A law fixed at one candidate: σ = 0 and µ = that candidate's parameters.
    let p = plain();
    let one = law(
        &p,
        &[
            ("c1", [2, 2]),
            ("c2", [3, 3]),
            ("c3", [4, 4]),
            ("k1", [1, 1]),
            ("k2", [3, 3]),
            ("k3", [5, 5]),
        ],
    );
    let (mu, sigma) = ga::estimate(
        &p,
        &one,
        &Metric::Params,
        10,
        &mut ChaCha8Rng::seed_from_u64(0),
    )
    .unwrap();
    // conv1 3·2·1 + BN 4, conv2 2·3·9 + BN 6, conv3 3·4·25 + BN 8, fc 4·4·4·10 + 10
    assert_eq!(mu, (6 + 4 + 54 + 6 + 300 + 8 + 650) as f64);
    assert_eq!(sigma, 0.0);
    let (mb, _) = ga::estimate(
        &p,
        &one,
        &Metric::WeightBytes(8),
        3,
        &mut ChaCha8Rng::seed_from_u64(0),
    )
    .unwrap();
    // weights 6 + 54 + 300 + 640 = 1000 at 1 byte, BN 18 + fc bias 10 at 4 bytes
    assert_eq!(mb, 1000.0 + 28.0 * 4.0);
}

#[test]
fn bands_slide_over_1_2_5() {
    assert_eq!(ga::bands(3, 4), vec![(1e3, 2e3), (2e3, 5e3), (5e3, 1e4)]);
    let b = ga::bands(3, 7);
    assert_eq!(b.len(), 12, "`004`: twelve searches over 1e3 … 1e7");
    assert_eq!(b[11], (5e6, 1e7));
    assert!(ga::bands(4, 4).is_empty());
}

#[test]
fn spectral_clustering_separates_blobs_and_returns_k_distinct_laws() {
    // Three tight blobs of five points each.
    let mut pts = vec![];
    for (cx, cy) in [(0.0, 0.0), (5.0, 5.0), (0.0, 9.0)] {
        for i in 0..5 {
            pts.push(vec![cx + 0.01 * i as f64, cy - 0.02 * i as f64]);
        }
    }
    let l = spectral(&pts, 3, 1);
    for b in 0..3 {
        let first = l[5 * b];
        assert!(l[5 * b..5 * b + 5].iter().all(|&x| x == first), "{l:?}");
    }
    let mut d = l.clone();
    d.sort();
    d.dedup();
    assert_eq!(d.len(), 3);
    assert_eq!(spectral(&pts, 3, 1), l, "seeded");
    // k distinct laws out of a population with duplicates
    let p = plain();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut pop: Vec<Scored> = (0..40)
        .map(|i| {
            let mut l = p.full_law();
            l.limits[0] = [0, (i % 20) * 6];
            Scored {
                law: l,
                mu: 0.0,
                sigma: 0.0,
                cost: rand::Rng::random_range(&mut rng, 0.0..1.0),
            }
        })
        .collect();
    pop[3].cost = f64::INFINITY;
    let k = ga::most_different(&p, &pop, 7, 0);
    assert_eq!(k.len(), 7);
    for i in 0..k.len() {
        for j in 0..i {
            assert_ne!(k[i].law, k[j].law);
        }
    }
    assert!(k.windows(2).all(|w| w[0].cost <= w[1].cost));
    // fewer distinct laws than k: all of them
    assert_eq!(ga::most_different(&p, &pop[..2], 7, 0).len(), 2);
}

#[test]
fn a_ga_run_moves_mu_pm_sigma_into_the_band() {
    let p = plain();
    let band = (2e4, 5e4);
    let cfg = GaConfig {
        n_init: 40,
        n_steps: 400,
        n_eval: 10,
        tournament: 4,
        k: 5,
        seed: 11,
    };
    let pop = ga::evolve(&p, &Metric::Params, band, &cfg);
    // random laws over the full space sit far above the band (mostly ~1e5 parameters)
    let full = ga::estimate(
        &p,
        &p.full_law(),
        &Metric::Params,
        400,
        &mut ChaCha8Rng::seed_from_u64(1),
    )
    .unwrap();
    assert!(ga::cost(full.0, full.1, band) > 5e4, "{full:?}");
    let best = &pop[0];
    assert!(
        best.cost < 0.2 * (band.1 - band.0),
        "best cost {} (µ {}, σ {})",
        best.cost,
        best.mu,
        best.sigma
    );
    // re-estimated on fresh samples, the best law's µ ± σ is close to the band
    let (mu, sigma) = ga::estimate(
        &p,
        &best.law,
        &Metric::Params,
        400,
        &mut ChaCha8Rng::seed_from_u64(9),
    )
    .unwrap();
    assert!(band.0 < mu && mu < band.1, "µ {mu}");
    assert!(
        ga::cost(mu, sigma, band) < 0.6 * (band.1 - band.0),
        "µ {mu} σ {sigma}"
    );
    // the whole design: k laws per band, reproducible
    let d = ga::design(&p, &Metric::Params, &[band, (5e4, 1e5)], &cfg);
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|b| b.laws.len() == 5));
    let again = ga::design(&p, &Metric::Params, &[band, (5e4, 1e5)], &cfg);
    assert_eq!(d[1].laws, again[1].laws);
}

#[test]
fn loglog_fit_recovers_a_power_law_and_validates_out_of_sample() {
    let x: Vec<f64> = (1..=50).map(|i| 1e3 * 1.2f64.powi(i)).collect();
    let y: Vec<f64> = x.iter().map(|v| 2.0 * v.powf(0.8)).collect();
    let f = LogLogFit::fit(&x, &y).unwrap();
    assert!(
        (f.slope - 0.8).abs() < 1e-12 && (f.intercept - 2f64.ln()).abs() < 1e-9,
        "{f:?}"
    );
    assert!((f.r2 - 1.0).abs() < 1e-12);
    assert!((f.predict(1e6) - 2.0 * 1e6f64.powf(0.8)).abs() < 1e-6 * 1e6f64.powf(0.8));
    assert!(LogLogFit::fit(&[1.0, 1.0], &[2.0, 3.0]).is_none());
    assert!(LogLogFit::fit(&[1.0, 0.0], &[2.0, 3.0]).is_none());
    // Hand values: points (1, e), (e, e^3): slope 2, intercept 1.
    let e = std::f64::consts::E;
    let h = LogLogFit::fit(&[1.0, e], &[e, e.powi(3)]).unwrap();
    assert!((h.slope - 2.0).abs() < 1e-12 && (h.intercept - 1.0).abs() < 1e-12);
    // Latency follows FLOPs (±10 %); parameters follow FLOPs only loosely.
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let n = 200;
    let flops: Vec<f64> = (0..n)
        .map(|_| 10f64.powf(rand::Rng::random_range(&mut rng, 5.0..9.0)))
        .collect();
    let params: Vec<f64> = flops
        .iter()
        .map(|f| f / 100.0 * 10f64.powf(rand::Rng::random_range(&mut rng, -1.0..1.0)))
        .collect();
    let lat: Vec<f64> = flops
        .iter()
        .map(|f| 1e-9 * f * rand::Rng::random_range(&mut rng, 0.9..1.1))
        .collect();
    let pr = LatencyPredictor::fit(&flops, &params, &lat, 0.25, 1).unwrap();
    assert_eq!(pr.by_flops.heldout_n, 50);
    assert_eq!(pr.by_flops.fit.n, 150);
    assert!(pr.by_flops.heldout_r2 > 0.99, "{pr:?}");
    assert!(pr.by_flops.heldout_median_rel_error < 0.06, "{pr:?}");
    assert!(
        pr.by_params.heldout_r2 < pr.by_flops.heldout_r2 - 0.05,
        "{pr:?}"
    );
    // held-out points are not fitted: split is disjoint and covers all
    let (a, b) = split(n, 0.25, 1);
    assert_eq!(a.len() + b.len(), n);
    assert!(a.iter().all(|i| !b.contains(i)));
    // an outlier in the held-out set lowers the held-out R² but not the fit's own R²
    let mut lat2 = lat.clone();
    lat2[b[0]] *= 1000.0;
    let pr2 = LatencyPredictor::fit(&flops, &params, &lat2, 0.25, 1).unwrap();
    assert_eq!(pr2.by_flops.fit, pr.by_flops.fit);
    assert!(pr2.by_flops.heldout_r2 < pr.by_flops.heldout_r2 - 0.1);
}

#[test]
fn laws_written_in_values_are_checked() {
    let p = plain();
    let w = |k: &str, v| BTreeMap::from([(k.to_string(), v)]);
    let e = Law::from_values(p.variables(), &w("c9", [1, 2])).unwrap_err();
    assert!(
        e.contains("unknown variable `c9`") && e.contains("c1, c2, c3, k1"),
        "{e}"
    );
    let e = Law::from_values(p.variables(), &w("c1", [9, 2])).unwrap_err();
    assert!(e.contains("lower limit is above"), "{e}");
    let e = Law::from_values(p.variables(), &w("k1", [4, 4])).unwrap_err();
    assert!(
        e.contains("holds no value") && e.contains("[1, 3, 5, 7]"),
        "{e}"
    );
    let l = Law::from_values(p.variables(), &w("c2", [8, 16])).unwrap();
    assert_eq!(l.to_values(p.variables())["c2"], [8, 16]);
    assert_eq!(l.to_values(p.variables())["c1"], [1, 128]);
    // same seed, same samples
    let draw = |s| {
        let mut r = ChaCha8Rng::seed_from_u64(s);
        (0..20)
            .map(|_| l.sample(&p, &mut r).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(5), draw(5));
    assert_ne!(draw(5), draw(6));
}

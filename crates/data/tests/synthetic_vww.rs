//! `synthetic_vww`: determinism (seed, thread count), shapes and class balance, the same
//! resize path as the `vww` loader, parameter parsing, and that the classes are learnable but
//! not trivial (a nearest-class-mean classifier on gradient-energy features beats chance).

use std::path::Path;

use whittle_data::synth_vww::{NATIVE, SyntheticVwwParams, native_image};
use whittle_data::vww::to_planes;
use whittle_data::{Dataset, DatasetSpec, FetchParams, build};

fn fetch(p: SyntheticVwwParams, seed: u64, threads: usize, normalize: bool) -> Dataset {
    let fp = FetchParams {
        dataset: DatasetSpec::SyntheticVww(p),
        normalize,
        ..Default::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| build(&fp, seed, Path::new("/nonexistent"), &|_, _, _| {}))
        .unwrap()
}

fn small() -> SyntheticVwwParams {
    SyntheticVwwParams {
        train_per_class: 6,
        val_per_class: 2,
        test_per_class: 3,
        ..Default::default()
    }
}

/// Features of a (3, s, s) item: on the grey image averaged over 2 × 2 blocks (noise down),
/// the logarithm of the ratio of horizontal to vertical gradient energy — upright figures
/// have more of the former — and the mean gradient energy.
fn features(item: &[f32], s: usize) -> Vec<f64> {
    let n = s * s;
    let h = s / 2;
    let g = |x: usize, y: usize| {
        let mut v = 0f64;
        for c in 0..3 {
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                v += item[c * n + (2 * y + dy) * s + 2 * x + dx] as f64;
            }
        }
        v / 12.0
    };
    let (mut ex, mut ey) = (0f64, 0f64);
    for y in 0..h - 1 {
        for x in 0..h - 1 {
            ex += (g(x + 1, y) - g(x, y)).powi(2);
            ey += (g(x, y + 1) - g(x, y)).powi(2);
        }
    }
    vec![(ex / ey).ln()]
}

#[test]
fn deterministic_across_threads_and_seed_sensitive() {
    let a = fetch(small(), 7, 1, false);
    let b = fetch(small(), 7, 2, false);
    assert_eq!(a, b);
    let c = fetch(small(), 8, 2, false);
    assert_ne!(a.train.x, c.train.x);
    assert_eq!(a.classes, ["non_person", "person"]);
    assert_eq!(a.input_shape, [3, 96, 96]);
    assert_eq!(a.layout, "channels,height,width");
    assert_eq!(a.train.shape, [12, 3, 96, 96]);
    assert_eq!(a.val.shape, [4, 3, 96, 96]);
    assert_eq!(a.test.shape, [6, 3, 96, 96]);
    assert_eq!(a.train.counts(2), [6, 6]);
    assert_eq!(a.test.y, [0, 0, 0, 1, 1, 1]);
    assert!(a.train.x.iter().all(|v| (0.0..=1.0).contains(v)));
    // Splits are drawn from separate streams: no test image repeats a training image.
    for i in 0..a.test.len() {
        assert!((0..a.train.len()).all(|j| a.train.item(j) != a.test.item(i)));
    }
}

#[test]
fn items_go_through_the_loader_resize() {
    let p = SyntheticVwwParams {
        size: 40,
        ..small()
    };
    let ds = fetch(p.clone(), 3, 2, false);
    assert_eq!(ds.train.shape, [12, 3, 40, 40]);
    let img = native_image(&p, 3, 0, 1, 2);
    assert_eq!(img.dimensions(), (NATIVE, NATIVE));
    // Class-major order: train item 6 + 2 is person #2.
    assert_eq!(ds.train.item(8), &to_planes(&img, 40)[..]);
    let img = native_image(&p, 3, 2, 0, 1);
    assert_eq!(ds.test.item(1), &to_planes(&img, 40)[..]);
}

#[test]
fn normalised_per_channel_on_train() {
    let ds = fetch(small(), 5, 2, true);
    let st = ds.normalization.as_ref().unwrap();
    assert_eq!(st.channel_axis, 0);
    assert_eq!(st.mean.len(), 3);
    let n = 96 * 96;
    for c in 0..3 {
        let mut sum = 0f64;
        for i in 0..ds.train.len() {
            sum += ds.train.item(i)[c * n..(c + 1) * n]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>();
        }
        assert!((sum / (n * ds.train.len()) as f64).abs() < 1e-4);
    }
}

#[test]
fn parameters_parse_with_defaults_and_checks() {
    let p: FetchParams = toml::from_str("dataset = \"synthetic_vww\"").unwrap();
    let p = p.resolve().unwrap();
    assert_eq!(
        p.dataset,
        DatasetSpec::SyntheticVww(SyntheticVwwParams::default())
    );
    let d = SyntheticVwwParams::default();
    assert_eq!(
        (d.train_per_class, d.val_per_class, d.test_per_class, d.size),
        (200, 40, 80, 96)
    );
    let e = toml::from_str::<FetchParams>("dataset = { kind = \"synthetic_vww\", sise = 64 }")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sise"), "{e}");
    let p: FetchParams =
        toml::from_str("dataset = { kind = \"synthetic_vww\", size = 4 }").unwrap();
    let e = p.resolve().unwrap_err().to_string();
    assert!(e.contains("dataset.size"), "{e}");
    let e = toml::from_str::<FetchParams>("dataset = \"synthetic_vw\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("synthetic_vww"), "{e}");
}

/// The classes differ, but not trivially: a nearest-class-mean classifier on one
/// orientation feature gets about 61 % on 600 test images (chance 50 %, σ ≈ 2 %).
#[test]
fn classes_are_learnable_by_a_trivial_classifier_only_partly() {
    let p = SyntheticVwwParams {
        test_per_class: 300,
        ..Default::default()
    };
    let ds = fetch(p, 1, 2, false);
    let mean = |s: &whittle_data::Split, c: u32| {
        let v: Vec<f64> = (0..s.len())
            .filter(|&i| s.y[i] == c)
            .map(|i| features(s.item(i), 96)[0])
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (m0, m1) = (mean(&ds.train, 0), mean(&ds.train, 1));
    assert!(m1 > m0, "upright figures: more horizontal gradient energy");
    let ok = (0..ds.test.len())
        .filter(|&i| {
            let f = features(ds.test.item(i), 96)[0];
            let pred = u32::from((f - m1).abs() < (f - m0).abs());
            pred == ds.test.y[i]
        })
        .count();
    let acc = ok as f64 / ds.test.len() as f64;
    assert!(acc > 0.57 && acc < 0.9, "nearest-class-mean accuracy {acc}");
}

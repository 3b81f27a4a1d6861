//! `synthetic_machine`: determinism (seed, thread count, saved bytes), split structure (clips,
//! machine IDs, normal-only training), anomalies that a trivial detector finds (AUC), the
//! anomaly-detection store round trip, and parameter parsing.

use std::path::Path;
use std::time::Instant;

use whittle_data::synth_machine::SyntheticMachineParams;
use whittle_data::{
    Dataset, DatasetSpec, FeatureSpec, FetchParams, LogMelParams, Split, Task, build, load, save,
};

fn small(p: SyntheticMachineParams) -> FetchParams {
    FetchParams {
        dataset: DatasetSpec::SyntheticMachine(p),
        ..Default::default()
    }
}

fn tiny() -> SyntheticMachineParams {
    SyntheticMachineParams {
        machine_ids: 2,
        train_clips: 4,
        val_clips: 2,
        test_normal_clips: 3,
        test_anomalous_clips: 3,
        ..Default::default()
    }
}

fn run(p: &FetchParams, seed: u64, threads: usize) -> Dataset {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| build(p, seed, Path::new("/nonexistent"), &|_, _, _| {}))
        .unwrap()
}

fn files(ds: &Dataset) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    save(ds, dir.path()).unwrap();
    (
        std::fs::read(dir.path().join("data.safetensors")).unwrap(),
        std::fs::read(dir.path().join("dataset.json")).unwrap(),
    )
}

#[test]
fn deterministic_bytes_across_threads_and_seed_sensitive() {
    let a = run(&small(tiny()), 5, 1);
    let b = run(&small(tiny()), 5, 2);
    assert_eq!(a, b);
    assert_eq!(files(&a), files(&b));
    let c = run(&small(tiny()), 6, 2);
    assert_ne!(a.train.x, c.train.x);
    // 1 s = 16000 samples: 1 + 16000 / 512 = 32 frames, 28 windows of (5, 128) per clip.
    assert_eq!(a.input_shape, [5, 128]);
    assert_eq!(a.layout, "frames,mels");
    assert_eq!(a.train.shape, [2 * 4 * 28, 5, 128]);
    assert_eq!(a.val.shape, [2 * 2 * 28, 5, 128]);
    assert_eq!(a.test.shape, [2 * 6 * 28, 5, 128]);
    assert!(a.train.x.iter().all(|v| v.is_finite()));
}

#[test]
fn splits_carry_clips_machine_ids_and_normal_only_training() {
    let ds = run(&small(tiny()), 1, 2);
    assert_eq!(ds.task, Task::AnomalyDetection);
    assert_eq!(ds.classes, ["normal", "anomaly"]);
    assert_eq!(ds.groups, ["id_00", "id_01"]);
    assert!(ds.train.y.iter().chain(&ds.val.y).all(|&y| y == 0));
    assert_eq!(ds.train.n_clips(), 8);
    let clips = ds.test.clips();
    assert_eq!(clips.len(), 12);
    // By ID, normal before anomalous; every clip has 28 contiguous windows.
    let order: Vec<(u32, u32)> = clips.iter().map(|c| (c.group, c.label)).collect();
    let want: Vec<(u32, u32)> = [0, 1]
        .iter()
        .flat_map(|&g| [(g, 0); 3].into_iter().chain([(g, 1); 3]))
        .collect();
    assert_eq!(order, want);
    for (i, c) in clips.iter().enumerate() {
        assert_eq!(c.clip, i as u32);
        assert_eq!(c.items, i * 28..(i + 1) * 28);
    }
    assert_eq!(ds.test.counts(2), [6 * 28, 6 * 28]);
    // Normalisation is per mel band on the training split: band means there are ~0.
    let stats = ds.normalization.as_ref().unwrap();
    assert_eq!((stats.channel_axis, stats.mean.len()), (1, 128));
    let mut band0 = 0f64;
    for i in 0..ds.train.len() {
        band0 += ds
            .train
            .item(i)
            .iter()
            .step_by(128)
            .map(|&v| v as f64)
            .sum::<f64>();
    }
    assert!((band0 / (ds.train.len() * 5) as f64).abs() < 1e-3);
}

/// ROC AUC with ties counted one half.
fn auc(normal: &[f64], anomalous: &[f64]) -> f64 {
    let mut s = 0.0;
    for a in anomalous {
        for n in normal {
            s += if a > n {
                1.0
            } else if a == n {
                0.5
            } else {
                0.0
            };
        }
    }
    s / (normal.len() * anomalous.len()) as f64
}

#[test]
fn auc_helper_counts_ties_as_half() {
    assert_eq!(auc(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
    assert_eq!(auc(&[3.0, 4.0], &[1.0, 2.0]), 0.0);
    // Pairs (2,1) = 1, (2,2) = ½, (0,1) = 0, (0,2) = 0: 1.5 / 4.
    assert_eq!(auc(&[1.0, 2.0], &[2.0, 0.0]), 0.375);
}

/// Per machine ID: clip score = mean squared distance of its windows to the mean training
/// window of that ID; returns the AUC of each ID.
fn distance_auc(ds: &Dataset) -> Vec<f64> {
    let d = ds.train.item_len();
    let mut out = Vec::new();
    for g in 0..ds.groups.len() as u32 {
        let mut mean = vec![0f64; d];
        let rows: Vec<usize> = (0..ds.train.len())
            .filter(|&i| ds.train.group[i] == g)
            .collect();
        for &i in &rows {
            for (m, v) in mean.iter_mut().zip(ds.train.item(i)) {
                *m += *v as f64 / rows.len() as f64;
            }
        }
        let (mut normal, mut anomalous) = (Vec::new(), Vec::new());
        for c in ds.test.clips().iter().filter(|c| c.group == g) {
            let score = c
                .items
                .clone()
                .map(|i| {
                    ds.test
                        .item(i)
                        .iter()
                        .zip(&mean)
                        .map(|(v, m)| (*v as f64 - m).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / c.items.len() as f64;
            if c.label == 1 {
                anomalous.push(score);
            } else {
                normal.push(score);
            }
        }
        out.push(auc(&normal, &anomalous));
    }
    out
}

#[test]
fn default_size_is_fast_and_anomalies_are_found_by_a_trivial_detector() {
    let t = Instant::now();
    let ds = run(&small(SyntheticMachineParams::default()), 42, 2);
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "default synthetic_machine: {secs:.2} s, {} train windows",
        ds.train.len()
    );
    assert!(secs < 10.0, "{secs} s");
    assert_eq!(ds.groups.len(), 4);
    assert_eq!(ds.train.n_clips(), 4 * 40);
    assert_eq!(ds.test.n_clips(), 4 * 24);
    let aucs = distance_auc(&ds);
    let mean = aucs.iter().sum::<f64>() / aucs.len() as f64;
    eprintln!("distance-to-mean AUC per ID: {aucs:?}, mean {mean:.3}");
    assert!(mean > 0.75, "{aucs:?}");
    assert!(aucs.iter().all(|&a| a > 0.6), "{aucs:?}");
    // Anomalous windows carry more energy than normal ones above 1.5 kHz on average (clicks
    // and bearing noise are broadband/high; the unnormalised features are compared).
    let raw = run(
        &FetchParams {
            normalize: false,
            ..small(SyntheticMachineParams::default())
        },
        42,
        2,
    );
    let hf: Vec<usize> = whittle_data::logmel::band_centres(&LogMelParams::default())
        .iter()
        .enumerate()
        .filter(|(_, f)| **f > 1500.0)
        .map(|(b, _)| b)
        .collect();
    let energy = |label: u32| {
        let (mut s, mut n) = (0f64, 0usize);
        for i in (0..raw.test.len()).filter(|&i| raw.test.y[i] == label) {
            let item = raw.test.item(i);
            for f in 0..5 {
                for &b in &hf {
                    s += item[f * 128 + b] as f64;
                    n += 1;
                }
            }
        }
        s / n as f64
    };
    let (en, ea) = (energy(0), energy(1));
    eprintln!("mean high-band log-mel: normal {en:.2} dB, anomalous {ea:.2} dB");
    assert!(ea > en + 1.0, "normal {en}, anomalous {ea}");
}

#[test]
fn anomaly_store_round_trip_and_classification_files_unchanged() {
    let ds = run(&small(tiny()), 3, 2);
    let dir = tempfile::tempdir().unwrap();
    save(&ds, dir.path()).unwrap();
    let back = load(dir.path()).unwrap();
    assert_eq!(back, ds);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dataset.json")).unwrap()).unwrap();
    assert_eq!(meta["task"], "anomaly_detection");
    assert_eq!(meta["groups"], serde_json::json!(["id_00", "id_01"]));
    assert_eq!(meta["splits"]["test"]["clips"], 12);
    assert_eq!(meta["splits"]["test"]["clips_per_class"]["anomaly"], 6);
    let st = std::fs::read(dir.path().join("data.safetensors")).unwrap();
    let t = safetensors::SafeTensors::deserialize(&st).unwrap();
    assert_eq!(t.tensor("test_clip").unwrap().shape(), [12 * 28]);
    assert_eq!(t.tensor("train_group").unwrap().shape(), [8 * 28]);
    // A classification set written by hand: no task, groups or clip tensors appear.
    let cls = Dataset {
        train: Split::new(vec![1.0, 2.0, 3.0, 4.0], &[2], vec![0, 1]).unwrap(),
        val: Split::empty(&[2]),
        test: Split::new(vec![5.0, 6.0], &[2], vec![1]).unwrap(),
        classes: vec!["a".into(), "b".into()],
        input_shape: vec![2],
        layout: "features".into(),
        ..Default::default()
    };
    let dir2 = tempfile::tempdir().unwrap();
    save(&cls, dir2.path()).unwrap();
    let text = std::fs::read_to_string(dir2.path().join("dataset.json")).unwrap();
    assert!(!text.contains("task") && !text.contains("groups") && !text.contains("clips"));
    let st = std::fs::read(dir2.path().join("data.safetensors")).unwrap();
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&st)
        .unwrap()
        .names()
        .into_iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(load(dir2.path()).unwrap(), cls);
    // Clip indices that break the contract are refused on save and on load.
    let mut bad = ds.clone();
    bad.test.clip[5] = 7;
    assert!(save(&bad, tempfile::tempdir().unwrap().path()).is_err());
    let mut bad = ds.clone();
    bad.test.group[0] = 9;
    assert!(save(&bad, tempfile::tempdir().unwrap().path()).is_err());
    let mut j = meta.clone();
    j["groups"] = serde_json::json!(["id_00"]);
    std::fs::write(dir.path().join("dataset.json"), j.to_string()).unwrap();
    let err = format!("{:#}", load(dir.path()).unwrap_err());
    assert!(err.contains("outside the 1 groups"), "{err}");
}

#[test]
fn params_parse_with_defaults_and_reject_unknown_keys() {
    let p: FetchParams = toml::from_str(r#"dataset = "synthetic_machine""#).unwrap();
    let r = p.resolve().unwrap();
    assert_eq!(
        r.features,
        Some(FeatureSpec::LogMel(LogMelParams::default()))
    );
    let explicit: FetchParams = toml::from_str(
        r#"
        dataset = { kind = "synthetic_machine", machine_ids = 4, train_clips = 40 }
        features = { kind = "log_mel", n_fft = 1024, hop = 512, n_mels = 128, frames = 5 }
        "#,
    )
    .unwrap();
    assert_eq!(explicit.resolve().unwrap(), r);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["dataset"]["kind"], "synthetic_machine");
    assert_eq!(json["features"]["kind"], "log_mel");
    assert_eq!(serde_json::from_value::<FetchParams>(json).unwrap(), r);
    for (toml_text, word) in [
        (
            r#"dataset = { kind = "synthetic_machine", machine_id = 3 }"#,
            "machine_id",
        ),
        (
            "dataset = \"synthetic_machine\"\nfeatures = { kind = \"log_mel\", nfft = 3 }",
            "nfft",
        ),
        (
            r#"dataset = { kind = "dcase2020", source = "/d" }"#,
            "machine_type",
        ),
        (
            r#"dataset = { kind = "dcase2020", source = "/d", machine_type = "fan", idz = [1] }"#,
            "idz",
        ),
    ] {
        let err = toml::from_str::<FetchParams>(toml_text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(word), "{toml_text}: {err}");
    }
    for (toml_text, word) in [
        (
            "dataset = \"synthetic_machine\"\nfeatures = { kind = \"mfcc\" }",
            "log_mel",
        ),
        (
            "dataset = \"synthetic_kws\"\nfeatures = { kind = \"log_mel\" }",
            "mfcc",
        ),
        (
            r#"dataset = { kind = "synthetic_machine", anomalies = ["rattle"] }"#,
            "rattle",
        ),
        (
            r#"dataset = { kind = "synthetic_machine", machine_ids = 0 }"#,
            "machine_ids",
        ),
        (
            r#"dataset = { kind = "dcase2020", source = "/d", machine_type = "fan", val_fraction = 1.0 }"#,
            "val_fraction",
        ),
    ] {
        let p: FetchParams = toml::from_str(toml_text).unwrap();
        let err = p.resolve().unwrap_err().to_string();
        assert!(err.contains(word), "{toml_text}: {err}");
    }
    let d: FetchParams = toml::from_str(
        r#"dataset = { kind = "dcase2020", source = "/d", machine_type = "ToyCar" }"#,
    )
    .unwrap();
    let d = d.resolve().unwrap();
    assert_eq!(
        serde_json::from_value::<FetchParams>(serde_json::to_value(&d).unwrap()).unwrap(),
        d
    );
}

/// The saved files of a small classification set, pinned: the anomaly-detection fields must
/// leave classification files byte for byte as they were (checked against the cached flagship
/// `fetch` output when the fields were added).
#[test]
fn classification_files_are_pinned() {
    use sha2::{Digest, Sha256};
    let p = FetchParams {
        dataset: DatasetSpec::SyntheticImages(whittle_data::synth_images::SyntheticImagesParams {
            train_per_class: 2,
            val_per_class: 1,
            test_per_class: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let (st, json) = files(&run(&p, 9, 2));
    let hex = |b: &[u8]| -> String {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    assert_eq!(
        hex(&st),
        "a6cf3677e3d7724b61f7565f0080f61920f0de6fc1d184b56e381aa8b0093f94"
    );
    assert_eq!(
        hex(&json),
        "c18f8bdc1b2d1c473d4b6a1098b9f8499a68f25b1afd90b6f07176c869f439eb"
    );
}

//! CIFAR-10 loader on fixture batches in the real binary format: record decoding, the
//! seeded stratified validation split, train-only normalisation, archive source, and broken
//! inputs (truncated batch, bad label, missing batch, empty class, checksum mismatch).

mod common;

use std::path::Path;

use whittle_data::cifar::{Cifar10Params, read_batch};
use whittle_data::{Dataset, DatasetSpec, FetchParams, build};

fn params(src: &Path, val: usize) -> Cifar10Params {
    Cifar10Params {
        source: src.to_str().unwrap().into(),
        sha256: None,
        val_per_class: val,
    }
}

fn fetch(p: Cifar10Params, seed: u64, normalize: bool, dl: &Path) -> anyhow::Result<Dataset> {
    let fp = FetchParams {
        dataset: DatasetSpec::Cifar10(p),
        normalize,
        ..Default::default()
    };
    build(&fp, seed, dl, &|_, _, _| {})
}

/// The fixture record id of an item (pixel (0,0) of R = (label*20 + id*3) % 256, unique here
/// together with the label for ids < 100 and 1000..1010).
fn record_id(item: &[f32], label: u32) -> usize {
    let p0 = (item[0] * 255.0).round() as usize;
    (0..1010)
        .find(|id| (label as usize * 20 + id * 3) % 256 == p0 && (*id < 100 || *id >= 1000))
        .unwrap()
}

#[test]
fn records_decode_to_planes_in_unit_range() {
    let dir = tempfile::tempdir().unwrap();
    common::cifar_tree(dir.path());
    let (x, y) = read_batch(&dir.path().join("data_batch_2.bin")).unwrap();
    assert_eq!(y.len(), 20);
    assert_eq!(y[13], 3);
    let rec = common::cifar_record(3, 20 + 13);
    for (k, v) in x[13 * 3072..14 * 3072].iter().enumerate() {
        assert_eq!(*v, rec[1 + k] as f32 / 255.0);
    }
}

#[test]
fn stratified_validation_and_train_only_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    common::cifar_tree(dir.path());
    let ds = fetch(params(dir.path(), 3), 42, false, dir.path()).unwrap();
    assert_eq!(ds.classes[9], "truck");
    assert_eq!(ds.train.shape, [70, 3, 32, 32]);
    assert_eq!(ds.val.counts(10), [3; 10]);
    assert_eq!(ds.train.counts(10), [7; 10]);
    assert_eq!(ds.test.counts(10), [1; 10]);
    // Every training record is in exactly one of train / val, in original order.
    let mut ids: Vec<usize> = (0..ds.train.len())
        .map(|i| record_id(ds.train.item(i), ds.train.y[i]))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    ids.extend((0..ds.val.len()).map(|i| record_id(ds.val.item(i), ds.val.y[i])));
    ids.sort();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    // Seeded: same seed same split, another seed another split.
    assert!(
        fetch(params(dir.path(), 3), 42, false, dir.path())
            .unwrap()
            .val
            == ds.val
    );
    assert!(
        fetch(params(dir.path(), 3), 43, false, dir.path())
            .unwrap()
            .val
            != ds.val
    );
    // Normalisation statistics come from the training split only.
    let n = fetch(params(dir.path(), 3), 42, true, dir.path()).unwrap();
    let stats = n.normalization.unwrap();
    for c in 0..3 {
        let vals: Vec<f64> = (0..ds.train.len())
            .flat_map(|i| ds.train.item(i)[c * 1024..(c + 1) * 1024].to_vec())
            .map(|v| v as f64)
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let s = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
        assert!((stats.mean[c] as f64 - m).abs() < 1e-6 && (stats.std[c] as f64 - s).abs() < 1e-6);
        let t0 = n.test.item(0)[c * 1024] as f64 * s + m;
        assert!((t0 - ds.test.item(0)[c * 1024] as f64).abs() < 1e-5);
    }
}

#[test]
fn archive_source_matches_folder() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    common::cifar_tree(&tree);
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    common::tar_gz(&tree, "cifar-10-batches-bin", &archive);
    let dl = dir.path().join("dl");
    let a = fetch(params(&archive, 2), 1, true, &dl).unwrap();
    let f = fetch(params(&tree, 2), 1, true, &dl).unwrap();
    assert!(
        a.train == f.train
            && a.val == f.val
            && a.test == f.test
            && a.normalization == f.normalization
    );
    let sha = whittle_data::source::sha256_file(&archive).unwrap();
    assert!(
        fetch(
            Cifar10Params {
                sha256: Some(sha),
                ..params(&archive, 2)
            },
            1,
            true,
            &dl
        )
        .is_ok()
    );
    let err = format!(
        "{:#}",
        fetch(
            Cifar10Params {
                sha256: Some("1".repeat(64)),
                ..params(&archive, 2)
            },
            1,
            true,
            &dl
        )
        .unwrap_err()
    );
    assert!(
        err.contains("checksum mismatch") && err.contains("cifar-10-binary.tar.gz"),
        "{err}"
    );
}

#[test]
fn broken_batches_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str, f: &dyn Fn(&Path)| -> String {
        let d = dir.path().join(name);
        common::cifar_tree(&d);
        f(&d);
        format!(
            "{:#}",
            fetch(params(&d, 1), 0, true, dir.path()).unwrap_err()
        )
    };
    let err = case("trunc", &|d| {
        let p = d.join("data_batch_3.bin");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    });
    assert!(
        err.contains("data_batch_3.bin") && err.contains("truncated"),
        "{err}"
    );
    let err = case("label", &|d| {
        let p = d.join("test_batch.bin");
        let mut b = std::fs::read(&p).unwrap();
        b[3073 * 4] = 10;
        std::fs::write(&p, b).unwrap();
    });
    assert!(
        err.contains("test_batch.bin") && err.contains("record 4 has label 10"),
        "{err}"
    );
    let err = case("missing", &|d| {
        std::fs::remove_file(d.join("data_batch_5.bin")).unwrap()
    });
    assert!(err.contains("data_batch_5.bin"), "{err}");
    let err = case("empty_class", &|d| {
        for b in 1..=5 {
            let p = d.join(format!("data_batch_{b}.bin"));
            let bytes: Vec<u8> = std::fs::read(&p)
                .unwrap()
                .chunks(3073)
                .filter(|r| r[0] != 9)
                .flatten()
                .copied()
                .collect();
            std::fs::write(&p, bytes).unwrap();
        }
    });
    assert!(
        err.contains("class 'truck' has no training images"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        fetch(params(&dir.path().join("absent"), 1), 0, true, dir.path()).unwrap_err()
    );
    assert!(
        err.contains("absent") && err.contains("does not exist"),
        "{err}"
    );
    // Too few images to carve the requested validation split.
    let d = dir.path().join("few");
    common::cifar_tree(&d);
    let err = format!(
        "{:#}",
        fetch(params(&d, 10), 0, true, dir.path()).unwrap_err()
    );
    assert!(err.contains("val_per_class = 10"), "{err}");
}

//! `dcase2020` loader on fixture trees in the DCASE 2020 task 2 layout written here: split
//! structure (normal-only training, seeded validation hold-out, test normal + anomalous per
//! ID), features equal to the log-mel windows of the files, ID and clip-count selection, an
//! archive source, and every broken input with an error naming the file or folder.

mod common;

use std::path::Path;

use whittle_data::dcase::DcaseParams;
use whittle_data::{Dataset, DatasetSpec, FetchParams, LogMel, LogMelParams, Task, build, wav};

/// A 16-bit WAV of `len` samples: a tone at `freq` plus, for anomalies, crackle.
fn write(path: &Path, len: usize, rate: u32, channels: u16, freq: f64, crackle: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let mut s = 12345u32;
    for n in 0..len {
        let mut v = 0.3 * (2.0 * std::f64::consts::PI * freq * n as f64 / rate as f64).sin();
        if crackle && n % 400 < 20 {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            v += 0.4 * ((s >> 16) as f64 / 32768.0 - 1.0);
        }
        for _ in 0..channels {
            w.write_sample((v * 32767.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// `ToyCar` with IDs 01 and 03: 6 normal training clips each, 2 normal + 2 anomalous test
/// clips each; 0.5 s clips (1 + 8000 / 512 = 16 frames, 12 windows).
fn tree(root: &Path) {
    for id in [1u32, 3] {
        let f = 300.0 + 100.0 * id as f64;
        for i in 0..6 {
            let p = root.join(format!("ToyCar/train/normal_id_{id:02}_{i:08}.wav"));
            write(&p, 8000, 16000, 1, f + i as f64, false);
        }
        for i in 0..2 {
            let p = root.join(format!("ToyCar/test/normal_id_{id:02}_{i:08}.wav"));
            write(&p, 8000, 16000, 1, f + 10.0 + i as f64, false);
            let p = root.join(format!("ToyCar/test/anomaly_id_{id:02}_{i:08}.wav"));
            write(&p, 8000, 16000, 1, f + 10.0 + i as f64, true);
        }
    }
    std::fs::write(root.join("ToyCar/train/.DS_Store"), b"not audio").unwrap();
}

fn params(src: &Path) -> DcaseParams {
    DcaseParams {
        source: src.to_str().unwrap().into(),
        sha256: None,
        machine_type: "ToyCar".into(),
        ids: vec![],
        train_clips: 0,
        test_clips: 0,
        val_fraction: 1.0 / 3.0,
    }
}

fn fetch(p: DcaseParams, downloads: &Path) -> anyhow::Result<Dataset> {
    let fp = FetchParams {
        dataset: DatasetSpec::Dcase2020(p),
        normalize: false,
        ..Default::default()
    };
    build(&fp, 42, downloads, &|_, _, _| {})
}

fn windows(path: &Path) -> Vec<f32> {
    LogMel::new(&LogMelParams::default())
        .unwrap()
        .windows(&wav::read(path).unwrap())
        .unwrap()
}

#[test]
fn folder_splits_labels_and_features() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let ds = fetch(params(dir.path()), dir.path()).unwrap();
    assert_eq!(ds.task, Task::AnomalyDetection);
    assert_eq!(ds.classes, ["normal", "anomaly"]);
    assert_eq!(ds.groups, ["id_01", "id_03"]);
    assert_eq!(ds.input_shape, [5, 128]);
    // Per ID: 6 training clips, round(6 / 3) = 2 held out for validation.
    assert_eq!(ds.train.n_clips(), 8);
    assert_eq!(ds.val.n_clips(), 4);
    assert_eq!(ds.test.n_clips(), 8);
    assert_eq!(ds.train.len(), 8 * 12);
    assert!(ds.train.y.iter().chain(&ds.val.y).all(|&y| y == 0));
    let test: Vec<(u32, u32)> = ds.test.clips().iter().map(|c| (c.group, c.label)).collect();
    assert_eq!(
        test,
        [
            (0, 0),
            (0, 0),
            (0, 1),
            (0, 1),
            (1, 0),
            (1, 0),
            (1, 1),
            (1, 1)
        ]
    );
    // Test clips in file-name order: the first is normal_id_01_00000000.wav, the third
    // anomaly_id_01_00000000.wav.
    let c = ds.test.clips();
    let first = &ds.test.x[c[0].items.start * 640..c[0].items.end * 640];
    assert_eq!(
        first,
        &windows(&dir.path().join("ToyCar/test/normal_id_01_00000000.wav"))[..]
    );
    let third = &ds.test.x[c[2].items.start * 640..c[2].items.end * 640];
    assert_eq!(
        third,
        &windows(&dir.path().join("ToyCar/test/anomaly_id_01_00000000.wav"))[..]
    );
    // Training and validation clips of ID 01 together are exactly its 6 training files.
    let mut got: Vec<Vec<f32>> = Vec::new();
    for s in [&ds.train, &ds.val] {
        for c in s.clips().iter().filter(|c| c.group == 0) {
            got.push(s.x[c.items.start * 640..c.items.end * 640].to_vec());
        }
    }
    let mut want: Vec<Vec<f32>> = (0..6)
        .map(|i| {
            windows(
                &dir.path()
                    .join(format!("ToyCar/train/normal_id_01_{i:08}.wav")),
            )
        })
        .collect();
    let key = |v: &Vec<f32>| v.iter().map(|x| x.to_bits() as u64).sum::<u64>();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want);
    // Same seed, same data; another seed holds out other validation clips.
    let again = fetch(params(dir.path()), dir.path()).unwrap();
    assert_eq!(
        (&again.train, &again.val, &again.test),
        (&ds.train, &ds.val, &ds.test)
    );
    let fp = FetchParams {
        dataset: DatasetSpec::Dcase2020(params(dir.path())),
        normalize: false,
        ..Default::default()
    };
    let other = (0..20)
        .map(|s| build(&fp, s, dir.path(), &|_, _, _| {}).unwrap())
        .any(|o| o.val.x != ds.val.x);
    assert!(other);
}

#[test]
fn id_and_clip_count_selection_and_archive_source() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dev_data");
    tree(&root);
    let mut p = params(&root);
    p.ids = vec![3];
    p.train_clips = 3;
    p.test_clips = 1;
    p.val_fraction = 0.0;
    let ds = fetch(p.clone(), dir.path()).unwrap();
    assert_eq!(ds.groups, ["id_03"]);
    assert_eq!(
        (ds.train.n_clips(), ds.val.n_clips(), ds.test.n_clips()),
        (3, 0, 2)
    );
    assert!(ds.train.group.iter().all(|&g| g == 0));
    assert_eq!(ds.val.shape, [0, 5, 128]);
    assert_eq!(ds.test.counts(2), [12, 12]);
    // The same tree packed as .tar.gz (inside a top folder) gives the same data.
    let archive = dir.path().join("toycar.tar.gz");
    common::tar_gz(&root, "dev_data", &archive);
    let mut pa = p.clone();
    pa.source = archive.to_str().unwrap().into();
    let dl = dir.path().join("downloads");
    let from_archive = fetch(pa, &dl).unwrap();
    assert_eq!(
        (&from_archive.train, &from_archive.test),
        (&ds.train, &ds.test)
    );
    // Central windows only.
    let fp = FetchParams {
        dataset: DatasetSpec::Dcase2020(p),
        features: Some(whittle_data::FeatureSpec::LogMel(LogMelParams {
            windows_per_clip: 2,
            ..Default::default()
        })),
        normalize: false,
    };
    let central = build(&fp, 42, dir.path(), &|_, _, _| {}).unwrap();
    assert_eq!(central.train.len(), 3 * 2);
    // Windows 5 and 6 of the 12 (frames 5..10 and 6..11).
    assert_eq!(central.train.item(0), ds.train.item(5));
    assert_eq!(central.train.item(1), ds.train.item(6));
}

fn err_of(root: &Path, p: DcaseParams) -> String {
    format!("{:#}", fetch(p, root).unwrap_err())
}

#[test]
fn broken_inputs_give_errors_naming_the_file() {
    type Break = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "garbage wav",
            Box::new(|r: &Path| {
                std::fs::write(
                    r.join("ToyCar/train/normal_id_01_00000002.wav"),
                    b"RIFF..junk",
                )
                .unwrap()
            }),
            "normal_id_01_00000002.wav",
        ),
        (
            "8 kHz",
            Box::new(|r: &Path| {
                write(
                    &r.join("ToyCar/test/anomaly_id_03_00000001.wav"),
                    4000,
                    8000,
                    1,
                    440.0,
                    false,
                )
            }),
            "anomaly_id_03_00000001.wav: expected 16-bit PCM mono 16000 Hz",
        ),
        (
            "stereo",
            Box::new(|r: &Path| {
                write(
                    &r.join("ToyCar/test/normal_id_01_00000000.wav"),
                    8000,
                    16000,
                    2,
                    440.0,
                    false,
                )
            }),
            "normal_id_01_00000000.wav: expected 16-bit PCM mono",
        ),
        (
            "too short",
            Box::new(|r: &Path| {
                write(
                    &r.join("ToyCar/train/normal_id_03_00000004.wav"),
                    300,
                    16000,
                    1,
                    440.0,
                    false,
                )
            }),
            "normal_id_03_00000004.wav: clip of 300 samples is too short",
        ),
        (
            "bad name",
            Box::new(|r: &Path| {
                write(
                    &r.join("ToyCar/test/normal_01.wav"),
                    8000,
                    16000,
                    1,
                    440.0,
                    false,
                )
            }),
            "normal_01.wav: file name not in the DCASE form",
        ),
        (
            "anomaly in train",
            Box::new(|r: &Path| {
                write(
                    &r.join("ToyCar/train/anomaly_id_01_00000000.wav"),
                    8000,
                    16000,
                    1,
                    440.0,
                    false,
                )
            }),
            "anomaly_id_01_00000000.wav: anomalous clip (id_01) in the training folder",
        ),
        (
            "no anomalies for an ID",
            Box::new(|r: &Path| {
                for i in 0..2 {
                    std::fs::remove_file(r.join(format!("ToyCar/test/anomaly_id_03_{i:08}.wav")))
                        .unwrap();
                }
            }),
            "no anomalous test clips anomaly_id_03_*.wav for machine ID 3",
        ),
        (
            "no test folder",
            Box::new(|r: &Path| std::fs::remove_dir_all(r.join("ToyCar/test")).unwrap()),
            "ToyCar/test is missing",
        ),
    ];
    for (what, breakit, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        breakit(dir.path());
        let err = err_of(dir.path(), params(dir.path()));
        assert!(err.contains(want), "{what}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut p = params(dir.path());
    p.ids = vec![7];
    let err = err_of(dir.path(), p);
    assert!(
        err.contains("no training clips normal_id_07_*.wav") && err.contains("ToyCar/train"),
        "{err}"
    );
    let mut p = params(dir.path());
    p.machine_type = "fan".into();
    let err = err_of(dir.path(), p);
    assert!(err.contains("no fan/train found"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join("ToyCar/train")).unwrap();
    std::fs::create_dir_all(empty.path().join("ToyCar/test")).unwrap();
    let err = err_of(empty.path(), params(empty.path()));
    assert!(
        err.contains("no training clips normal_id_XX_*.wav"),
        "{err}"
    );
}

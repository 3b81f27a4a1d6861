//! Speech Commands loader on fixture trees written in the real layout: folder, .tar.gz
//! archive and URL (local HTTP server) sources, split lists, _unknown_/_silence_ counts,
//! zero padding, augmentation, and every broken input with its error.

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use whittle_data::speech_commands::SpeechCommandsParams;
use whittle_data::{Dataset, DatasetSpec, FetchParams, Mfcc, MfccParams, build, source};

fn params(src: &str) -> SpeechCommandsParams {
    SpeechCommandsParams {
        source: src.into(),
        sha256: None,
        keywords: vec!["yes".into(), "no".into()],
        unknown_percentage: 50.0,
        silence_percentage: 50.0,
        time_shift_ms: 0.0,
        background_frequency: 0.0,
        background_volume: 0.1,
    }
}

fn fetch(p: SpeechCommandsParams, downloads: &Path) -> anyhow::Result<Dataset> {
    let fp = FetchParams {
        dataset: DatasetSpec::SpeechCommands(p),
        normalize: false,
        ..Default::default()
    };
    build(&fp, 42, downloads, &|_, _, _| {})
}

/// Same data (the description differs: it records the source).
fn same(a: &Dataset, b: &Dataset) -> bool {
    (&a.train, &a.val, &a.test, &a.classes, &a.input_shape)
        == (&b.train, &b.val, &b.test, &b.classes, &b.input_shape)
}

fn clip_mfcc(path: &Path) -> Vec<f32> {
    let mut x: Vec<f32> = hound::WavReader::open(path)
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    x.resize(16000, 0.0);
    Mfcc::new(&MfccParams::default()).unwrap().compute(&x)
}

#[test]
fn folder_splits_counts_and_features() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sc");
    common::speech_tree(&root);
    let ds = fetch(params(root.to_str().unwrap()), dir.path()).unwrap();
    assert_eq!(ds.classes, ["yes", "no", "_silence_", "_unknown_"]);
    // train: 2 yes, 2 no, ceil(50 % of 4) = 2 unknown, 2 silence; val/test: 1, 1, 1, 1.
    assert_eq!(ds.train.counts(4), [2, 2, 2, 2]);
    assert_eq!(ds.val.counts(4), [1, 1, 1, 1]);
    assert_eq!(ds.test.counts(4), [1, 1, 1, 1]);
    assert_eq!(ds.train.shape, [8, 49, 10]);
    // Item order: keyword files sorted, then unknown, then silence. yes/a_nohash_1 is 0.5 s.
    assert_eq!(
        ds.train.item(1),
        &clip_mfcc(&root.join("yes/a_nohash_1.wav"))[..]
    );
    assert_eq!(
        ds.val.item(0),
        &clip_mfcc(&root.join("yes/a_nohash_2.wav"))[..]
    );
    assert_eq!(
        ds.test.item(1),
        &clip_mfcc(&root.join("no/a_nohash_3.wav"))[..]
    );
    // Unknown training clips come from the other words' training files.
    let cands: Vec<Vec<f32>> = ["cat", "dog"]
        .iter()
        .flat_map(|w| (0..2).map(move |i| (w, i)))
        .map(|(w, i)| clip_mfcc(&root.join(format!("{w}/a_nohash_{i}.wav"))))
        .collect();
    for i in 4..6 {
        assert_eq!(ds.train.y[i], 3);
        assert!(cands.iter().any(|c| &c[..] == ds.train.item(i)));
    }
    // Silence is cut from the noise: not the log floor, not a keyword.
    assert_eq!(ds.train.y[6], 2);
    assert!(ds.train.item(6)[0] > 1e-6f32.ln() * 40f32.sqrt() + 1.0);
    // Same seed, same data; augmentation changes training only.
    assert!(fetch(params(root.to_str().unwrap()), dir.path()).unwrap() == ds);
    let aug = SpeechCommandsParams {
        time_shift_ms: 100.0,
        background_frequency: 1.0,
        ..params(root.to_str().unwrap())
    };
    let a = fetch(aug, dir.path()).unwrap();
    assert_ne!(a.train.x, ds.train.x);
    assert!(a.val == ds.val && a.test == ds.test);
}

#[test]
fn archive_and_url_sources_match_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sc");
    common::speech_tree(&root);
    let folder = fetch(params(root.to_str().unwrap()), dir.path()).unwrap();
    let archive = dir.path().join("speech_commands_v0.02.tar.gz");
    common::tar_gz(&root, ".", &archive);
    let downloads = dir.path().join("downloads");
    let ds = fetch(params(archive.to_str().unwrap()), &downloads).unwrap();
    assert!(same(&ds, &folder));
    // The temporary unpack folder is gone.
    assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0);

    let body = std::fs::read(&archive).unwrap();
    let sha = source::sha256_file(&archive).unwrap();
    let (base, count) = common::serve(body.clone());
    let url = format!("{base}/data/speech_commands_v0.02.tar.gz");
    let seen = Mutex::new(Vec::new());
    let fp = FetchParams {
        dataset: DatasetSpec::SpeechCommands(SpeechCommandsParams {
            sha256: Some(sha.clone()),
            ..params(&url)
        }),
        normalize: false,
        ..Default::default()
    };
    let ds = build(&fp, 42, &downloads, &|phase, done, total| {
        if phase == "download" {
            seen.lock().unwrap().push((done, total));
        }
    })
    .unwrap();
    assert!(same(&ds, &folder));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.last(), Some(&(body.len() as u64, body.len() as u64)));
    let saved = source::download_path(&url, &sha, &downloads);
    assert_eq!(std::fs::read(&saved).unwrap(), body);
    // Present: never downloaded again.
    let again = build(&fp, 42, &downloads, &|_, _, _| {}).unwrap();
    assert!(same(&again, &folder));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Wrong checksum: clear error, nothing saved under any name.
    let wrong = "0".repeat(64);
    let bad = SpeechCommandsParams {
        sha256: Some(wrong.clone()),
        ..params(&url)
    };
    let err = format!("{:#}", fetch(bad, &downloads).unwrap_err());
    assert!(
        err.contains("checksum mismatch") && err.contains(&url),
        "{err}"
    );
    assert!(!source::download_path(&url, &wrong, &downloads).exists());
    let names: Vec<String> = std::fs::read_dir(&downloads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    assert_eq!(
        names,
        [saved.file_name().unwrap().to_string_lossy().to_string()]
    );
    // A URL needs a checksum; a 404 names the URL.
    let err = format!("{:#}", fetch(params(&url), &downloads).unwrap_err());
    assert!(err.contains("sha256 is required"), "{err}");
    let missing = format!("{base}/missing.tar.gz");
    let err = format!(
        "{:#}",
        fetch(
            SpeechCommandsParams {
                sha256: Some(sha),
                ..params(&missing)
            },
            &downloads
        )
        .unwrap_err()
    );
    assert!(err.contains(&missing) && err.contains("404"), "{err}");
}

fn err_of(root: &Path, p: SpeechCommandsParams) -> String {
    format!("{:#}", fetch(p, &root.join("dl")).unwrap_err())
}

#[test]
fn broken_inputs_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    // Missing folder.
    let err = err_of(base, params(base.join("nowhere").to_str().unwrap()));
    assert!(
        err.contains("nowhere") && err.contains("does not exist"),
        "{err}"
    );
    // Wrong WAV formats, each in its own otherwise-good tree.
    for (name, ch, rate, bits, what) in [
        ("eight_bit", 1, 16000, 8, "8-bit"),
        ("stereo", 2, 16000, 16, "2 channel"),
        ("cd_rate", 1, 44100, 16, "44100 Hz"),
    ] {
        let root = base.join(name);
        common::speech_tree(&root);
        let bad = root.join("no/a_nohash_3.wav");
        common::write_wav(&bad, 16000, ch, rate, bits, 440.0);
        let err = err_of(base, params(root.to_str().unwrap()));
        assert!(
            err.contains("no/a_nohash_3.wav")
                && err.contains("expected 16-bit PCM mono")
                && err.contains(what),
            "{err}"
        );
    }
    // Not a WAV at all.
    let root = base.join("garbage");
    common::speech_tree(&root);
    std::fs::write(root.join("yes/a_nohash_0.wav"), b"RIFF....not really").unwrap();
    let err = err_of(base, params(root.to_str().unwrap()));
    assert!(err.contains("yes/a_nohash_0.wav"), "{err}");
    // Empty class.
    let root = base.join("empty");
    common::speech_tree(&root);
    for i in 0..4 {
        std::fs::remove_file(root.join(format!("no/a_nohash_{i}.wav"))).unwrap();
    }
    let err = err_of(base, params(root.to_str().unwrap()));
    assert!(
        err.contains("class 'no' is empty") && err.contains("empty/no"),
        "{err}"
    );
    // Missing keyword folder (default keywords include "up").
    let root = base.join("nokw");
    common::speech_tree(&root);
    let err = err_of(
        base,
        SpeechCommandsParams {
            keywords: SpeechCommandsParams::default_keywords(),
            ..params(root.to_str().unwrap())
        },
    );
    assert!(err.contains("nokw/up") && err.contains("missing"), "{err}");
    // Missing validation list.
    let root = base.join("nolist");
    common::speech_tree(&root);
    std::fs::remove_file(root.join("validation_list.txt")).unwrap();
    let err = err_of(base, params(root.to_str().unwrap()));
    assert!(err.contains("validation_list.txt"), "{err}");
    // No background noise to cut silence from.
    let root = base.join("nonoise");
    common::speech_tree(&root);
    std::fs::remove_dir_all(root.join("_background_noise_")).unwrap();
    let err = err_of(base, params(root.to_str().unwrap()));
    assert!(err.contains("_background_noise_"), "{err}");
    assert!(
        fetch(
            SpeechCommandsParams {
                silence_percentage: 0.0,
                ..params(root.to_str().unwrap())
            },
            &base.join("dl")
        )
        .is_ok()
    );
    // Truncated archive: names the archive; the unpack folder is cleaned up.
    let root = base.join("good");
    common::speech_tree(&root);
    let archive = base.join("sc.tar.gz");
    common::tar_gz(&root, ".", &archive);
    let bytes = std::fs::read(&archive).unwrap();
    let cut = base.join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = err_of(base, params(cut.to_str().unwrap()));
    assert!(
        err.contains("cut.tar.gz") && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(base.join("dl")).unwrap().count(), 0);
    // Local archive with a wrong checksum.
    let p = SpeechCommandsParams {
        sha256: Some("ab".repeat(32)),
        ..params(archive.to_str().unwrap())
    };
    let err = err_of(base, p);
    assert!(
        err.contains("checksum mismatch") && err.contains("sc.tar.gz"),
        "{err}"
    );
    // Malformed checksum parameter.
    let fp = FetchParams {
        dataset: DatasetSpec::SpeechCommands(SpeechCommandsParams {
            sha256: Some("xyz".into()),
            ..params("x")
        }),
        ..Default::default()
    };
    assert!(fp.resolve().unwrap_err().to_string().contains("sha256"));
}

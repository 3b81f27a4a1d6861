//! `gc` and the cache's shared files: the teacher logits distillation keeps in
//! `<cache>/artifacts/` and the archives downloaded into `<cache>/downloads/` stay while an
//! experiment's node names them; unreferenced ones and stale temporaries are listed by
//! `--dry-run` (with their sizes) and removed by `gc`, and the experiment is still fully
//! cached afterwards.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A CIFAR-10 binary folder in the real format: 5 training batches of 20 records (2 per
/// class), a test batch of 10.
fn cifar_tree(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let record = |label: u8, idx: usize| -> Vec<u8> {
        let mut v = vec![label];
        v.extend((0..3072).map(|p| ((label as usize * 20 + idx * 3 + p) % 256) as u8));
        v
    };
    for b in 0..5 {
        let bytes: Vec<u8> = (0..20)
            .flat_map(|j| record((j % 10) as u8, b * 20 + j))
            .collect();
        std::fs::write(dir.join(format!("data_batch_{}.bin", b + 1)), bytes).unwrap();
    }
    let bytes: Vec<u8> = (0..10).flat_map(|j| record(j as u8, 1000 + j)).collect();
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
}

fn sh(dir: &Path, script: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

const URL: &str = "https://downloads.invalid/cifar-10-binary.tar.gz";

fn experiment(sha: &str) -> String {
    format!(
        r#"
[experiment]
name = "gcx"
seed = 5

[stages.data]
kind = "fetch"
dataset = {{ kind = "synthetic_kws", train_per_class = 8, val_per_class = 2, test_per_class = 1 }}

[stages.teacher]
kind = "train"
inputs = ["data"]
model = {{ arch = "tcn", channels = 8, dilations = [1, 2] }}
epochs = 4
lr = 1e-2

[stages.student]
kind = "distill"
inputs = ["teacher", "data"]
student = {{ arch = "tcn", channels = 4, dilations = [1, 2] }}
epochs = 4
lr = 1e-2

[stages.images]
kind = "fetch"
dataset = {{ kind = "cifar10", source = "{URL}", sha256 = "{sha}", val_per_class = 1 }}
"#
    )
}

#[test]
fn gc_keeps_referenced_downloads_and_teacher_logits_and_removes_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let cache = p.join("cache");
    let downloads = cache.join("downloads");
    let artifacts = cache.join("artifacts");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::create_dir_all(&artifacts).unwrap();

    // The "downloaded" archive is already in place under its final name, so the run verifies
    // and reuses it instead of downloading.
    cifar_tree(&p.join("src/cifar-10-batches-bin"));
    sh(p, "tar czf cifar.tar.gz -C src cifar-10-batches-bin");
    let sha = sh(p, "sha256sum cifar.tar.gz")[..64].to_string();
    let kept_download = downloads.join(format!("{sha}-cifar-10-binary.tar.gz"));
    std::fs::copy(p.join("cifar.tar.gz"), &kept_download).unwrap();
    std::fs::write(p.join("exp.toml"), experiment(&sha)).unwrap();

    let o = whittle(p, &cache, &["run", "exp.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(summary(&o), "summary: ran=4 cached=0 resumed=0 failed=0");

    // the logits distill wrote, keyed by the teacher's and the data's node keys
    let rows: serde_json::Value =
        serde_json::from_slice(&whittle(p, &cache, &["status", "exp.toml", "--json"]).stdout)
            .unwrap();
    let key = |node: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == node)
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let kept_logits = artifacts.join(format!(
        "teacher_logits-{}-{}.safetensors",
        &key("teacher")[..16],
        &key("data")[..16]
    ));
    assert!(kept_logits.is_file(), "{}", kept_logits.display());

    // what no experiment references
    let old_logits = artifacts.join("teacher_logits-0123456789abcdef-fedcba9876543210.safetensors");
    std::fs::write(&old_logits, vec![7u8; 3000]).unwrap();
    let old_download = downloads.join(format!("{}-speech_commands_v0.02.tar.gz", "ab".repeat(32)));
    std::fs::write(&old_download, vec![1u8; 5000]).unwrap();
    // temporaries: one left by a run killed three days ago, one that may be in progress
    let stale = downloads.join(".unpack-stale");
    std::fs::create_dir_all(stale.join("x")).unwrap();
    std::fs::write(stale.join("x/y.wav"), vec![0u8; 100]).unwrap();
    sh(p, "touch -d '3 days ago' cache/downloads/.unpack-stale");
    let fresh = downloads.join(".download-inprogress");
    std::fs::write(&fresh, b"partial").unwrap();

    let o = whittle(p, &cache, &["gc", "exp.toml", "--dry-run"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains(
            "4 cached entr(y/ies) and 2 shared file(s) kept; 3 item(s) to remove, freeing 7.9 KiB"
        ),
        "{out}"
    );
    let listed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("would remove"))
        .collect();
    let mut expected = vec![
        format!("would remove {} (100 B, stale temporary)", stale.display()),
        format!(
            "would remove {} (4.9 KiB, unreferenced shared file)",
            old_download.display()
        ),
        format!(
            "would remove {} (2.9 KiB, unreferenced shared file)",
            old_logits.display()
        ),
    ];
    expected.sort();
    assert_eq!(listed, expected, "{out}");
    // a dry run removes nothing
    assert!(old_logits.is_file() && old_download.is_file() && stale.is_dir());

    let o = whittle(p, &cache, &["gc", "exp.toml"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("gc: freed 7.9 KiB"), "{out}");
    assert!(!old_logits.exists() && !old_download.exists() && !stale.exists());
    assert!(kept_logits.is_file() && kept_download.is_file() && fresh.is_file());
    assert_eq!(entries(&cache).len(), 4);

    // the experiment is still fully cached, and a second gc finds nothing
    let o = whittle(p, &cache, &["run", "exp.toml"]);
    assert_eq!(summary(&o), "summary: ran=0 cached=4 resumed=0 failed=0");
    let o = whittle(p, &cache, &["gc", "exp.toml", "--dry-run"]);
    assert!(text(&o).0.contains("0 item(s) to remove"), "{}", text(&o).0);

    // without the experiment, gc collects its downloads and logits with its entries
    std::fs::write(
        p.join("other.toml"),
        "[experiment]\nname = \"o\"\nseed = 1\n[stages.a]\nkind = \"command\"\ncmd = \"true\"\n",
    )
    .unwrap();
    let o = whittle(p, &cache, &["gc", "other.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(!kept_logits.exists() && !kept_download.exists());
    assert!(entries(&cache).is_empty());
}

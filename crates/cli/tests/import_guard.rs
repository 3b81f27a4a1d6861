//! The `import` stage declares its memory need from the file's size: under a budget too small
//! for it (`WHITTLE_MEMORY_LIMIT`), the import node fails before the file is read, with the
//! estimate and the budget, the data node completes, and with room the same file imports
//! (a Keras model converted by tf2onnx, its final Softmax dropped).

mod common;
use common::*;

const EXP: &str = r#"
[experiment]
name = "import_guard"
seed = 1

[stages.data]
kind = "fetch"
dataset = { kind = "synthetic_kws", train_per_class = 4, val_per_class = 2, test_per_class = 2 }

[stages.net]
kind = "import"
inputs = ["data"]
path = "net.onnx"
"#;

#[test]
fn an_import_too_big_for_the_budget_fails_with_the_estimate() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../export/tests/fixtures/onnx/keras_dense.onnx");
    std::fs::copy(&fixture, d.path().join("net.onnx")).unwrap();
    std::fs::write(d.path().join("e.toml"), EXP).unwrap();
    let run = |limit: &str| {
        cmd(d.path(), &cache, &["run", "e.toml"])
            .env("WHITTLE_MEMORY_LIMIT", limit)
            .output()
            .unwrap()
    };
    let o = run("100K");
    let (out, err) = text(&o);
    let all = format!("{out}\n{err}");
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert_eq!(summary(&o), "summary: ran=1 cached=0 resumed=0 failed=1");
    let line = all
        .lines()
        .find(|l| l.contains("FAILED net:"))
        .unwrap_or_else(|| panic!("{all}"));
    // 7 copies of the 48.6 KiB file (340.4 KiB) plus the data set, × 1.25
    assert!(
        line.contains("stage `net` (kind `import`) needs an estimated ")
            && line.contains("(ONNX file `net.onnx` of 48.6 KiB held 7× while importing")
            && line.contains("only 100.0 KiB is available (WHITTLE_MEMORY_LIMIT=100K)"),
        "{line}"
    );
    let o = run("1G");
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert_eq!(summary(&o), "summary: ran=1 cached=1 resumed=0 failed=0");
}

/// A file that passes the check before loading (its size and the data fit) but whose graph's
/// evaluation activations (a trained Keras DS-CNN: 24 channels of 25 × 5 and 32 of 25 × 5 per
/// sample, 120 test rows at batch 100) do not: the node fails once the file is parsed, naming
/// the evaluation estimate and the budget; at batch 10 the same node fits.
#[test]
fn an_import_whose_evaluation_does_not_fit_fails_once_parsed() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../export/tests/fixtures/onnx/keras_kws_trained.onnx");
    std::fs::copy(&fixture, d.path().join("net.onnx")).unwrap();
    let exp = EXP.replace("test_per_class = 2", "test_per_class = 10");
    std::fs::write(d.path().join("e.toml"), &exp).unwrap();
    let run = |limit: &str, batch: &str| {
        cmd(
            d.path(),
            &cache,
            &[
                "run",
                "e.toml",
                "--set",
                &format!("stages.net.batch_size={batch}"),
            ],
        )
        .env("WHITTLE_MEMORY_LIMIT", limit)
        .output()
        .unwrap()
    };
    let o = run("4M", "100");
    let (out, err) = text(&o);
    let all = format!("{out}\n{err}");
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert_eq!(summary(&o), "summary: ran=1 cached=0 resumed=0 failed=1");
    let line = all
        .lines()
        .find(|l| l.contains("FAILED net"))
        .unwrap_or_else(|| panic!("{all}"));
    eprintln!("{line}");
    assert!(
        line.contains("net.onnx: memory: the imported network needs an estimated ")
            && line.contains("evaluation: weights ")
            && line.contains("activations at batch 100 ")
            && line.contains("only 4.0 MiB is available (WHITTLE_MEMORY_LIMIT=4M)"),
        "{line}"
    );
    let o = run("4M", "10");
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert_eq!(summary(&o), "summary: ran=1 cached=1 resumed=0 failed=0");
}

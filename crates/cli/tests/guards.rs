//! Guards against a typo or an impossible request, end to end on a tiny synthetic data set:
//! a network that cannot fit in memory fails its node before it starts (with the estimate and
//! the budget, set through `WHITTLE_MEMORY_LIMIT`) while the other nodes complete and stay
//! cached, and the process exits 1 instead of being killed; a training with `lr = 1e9` fails
//! as diverged naming the epoch, unless `allow_divergence = true`, which keeps the result
//! and puts a warning in the report.

mod common;
use common::*;

const DATA: &str = r#"
[experiment]
name = "guard"
seed = 1

[stages.data]
kind = "fetch"
dataset = { kind = "synthetic_kws", train_per_class = 4, val_per_class = 2, test_per_class = 2 }
"#;

const SMALL: &str = r#"model = { arch = "tcn", channels = 4, dilations = [1, 2] }
epochs = 2
batch_size = 16
"#;

fn exp(stages: &str) -> String {
    format!("{DATA}{stages}")
}

#[test]
fn a_network_that_cannot_fit_fails_its_node_not_the_process() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    std::fs::write(
        d.path().join("e.toml"),
        exp(&format!(
            r#"
[stages.small]
kind = "train"
inputs = ["data"]
{SMALL}
[stages.huge]
kind = "train"
inputs = ["data"]
model = {{ arch = "ds_cnn", channels = 100000 }}
epochs = 1
"#
        )),
    )
    .unwrap();
    let run = || {
        cmd(d.path(), &cache, &["run", "e.toml"])
            .env("WHITTLE_MEMORY_LIMIT", "2G")
            .output()
            .unwrap()
    };
    let o = run();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert_eq!(summary(&o), "summary: ran=2 cached=0 resumed=0 failed=1");
    let all = format!("{out}\n{err}");
    let line = all
        .lines()
        .find(|l| l.contains("FAILED huge:"))
        .unwrap_or_else(|| panic!("{all}"));
    // 4 blocks of 100,000² pointwise weights alone are 4·10¹⁰ parameters, 149 GiB each copy
    assert!(
        line.contains("stage `huge` (kind `train`) needs an estimated ")
            && line.contains(" TiB of memory (weights ")
            && line.contains("only 2.0 GiB is available (WHITTLE_MEMORY_LIMIT=2G)"),
        "{line}"
    );
    // the data and the small network stay cached
    let again = run();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        summary(&again),
        "summary: ran=0 cached=2 resumed=0 failed=1"
    );
}

#[test]
fn a_diverged_training_fails_unless_allowed_and_then_warns() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    std::fs::write(
        d.path().join("e.toml"),
        exp(&format!(
            r#"
[stages.boom]
kind = "train"
inputs = ["data"]
lr = 1e9
{SMALL}
[stages.kept]
kind = "train"
inputs = ["data"]
lr = 1e9
allow_divergence = true
{SMALL}
[stages.after]
kind = "finetune"
inputs = ["boom", "data"]
epochs = 1
"#
        )),
    )
    .unwrap();
    let o = whittle(d.path(), &cache, &["run", "e.toml"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert_eq!(summary(&o), "summary: ran=2 cached=0 resumed=0 failed=1");
    let all = format!("{out}\n{err}");
    let line = all
        .lines()
        .find(|l| l.contains("FAILED boom:"))
        .unwrap_or_else(|| panic!("{all}"));
    // lr = 1e9: the first epoch's mean loss is ~1e18 against ln 12 ≈ 2.5 before any step
    assert!(
        line.contains("training diverged at epoch 1: loss ")
            && line.contains("over 1000× the initial loss"),
        "{line}"
    );
    assert!(
        line.contains("set `allow_divergence = true` on stage `boom`"),
        "{line}"
    );
    assert!(err.contains("skipped 1 node(s) downstream"), "{err}");
    let md = std::fs::read_to_string(d.path().join("reports/guard.md")).unwrap();
    let warn = md
        .lines()
        .find(|l| l.starts_with("- ⚠ `kept`: training "))
        .unwrap_or_else(|| panic!("no warning for `kept`:\n{md}"));
    assert!(
        md.contains("## Warnings") && warn.ends_with("(kept: `allow_divergence = true`)"),
        "{warn}"
    );
}

//! Node keys: cosmetic edits keep every key; a changed parameter changes exactly that node and
//! its descendants; keys follow the documented derivation; sweeps and gathers expand as
//! documented.

use std::collections::HashMap;
use std::path::Path;

use whittle_engine::{Experiment, Plan, Registry, canon::canonical_json};

const BASE: &str = r#"
[experiment]
name = "keys"
seed = 7
description = "first"

[stages.data]
kind = "command"
cmd = "echo data > $WHITTLE_OUT/d"

[stages.train]
kind = "command"
inputs = ["data"]
cmd = "echo train"
env = { LR = 0.1, EPOCHS = 3 }

[stages.search]
kind = "command"
inputs = ["train", "data"]
cmd = "echo search"
sweep = { "env.LAMBDA" = [1e-6, 1e-5] }

[stages.finetune]
kind = "command"
inputs = ["search"]
cmd = "echo finetune"

[stages.report]
kind = "command"
inputs = ["finetune", "data"]
gather = ["finetune"]
cmd = "echo report"

[stages.side]
kind = "command"
inputs = ["data"]
cmd = "echo side"
"#;

fn keys(text: &str, dir: &Path) -> HashMap<String, String> {
    let reg = Registry::with_builtins();
    let exp = Experiment::parse(&dir.join("e.toml"), text.to_string(), &[], &reg).unwrap();
    Plan::build(exp, &reg)
        .unwrap()
        .nodes
        .into_iter()
        .map(|n| (n.name, n.key))
        .collect()
}

#[test]
fn expansion_names_and_gather() {
    let reg = Registry::with_builtins();
    let exp = Experiment::parse(Path::new("e.toml"), BASE.into(), &[], &reg).unwrap();
    let plan = Plan::build(exp, &reg).unwrap();
    let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "data",
            "side",
            "train",
            "search[LAMBDA=1e-6]",
            "search[LAMBDA=1e-5]",
            "finetune[LAMBDA=1e-6]",
            "finetune[LAMBDA=1e-5]",
            "report"
        ]
    );
    let report = plan.node("report").unwrap();
    let inputs: Vec<&str> = report
        .inputs
        .iter()
        .map(|&i| plan.nodes[i].name.as_str())
        .collect();
    assert_eq!(
        inputs,
        ["finetune[LAMBDA=1e-6]", "finetune[LAMBDA=1e-5]", "data"]
    );
    let ft = plan.node("finetune[LAMBDA=1e-5]").unwrap();
    assert_eq!(plan.nodes[ft.inputs[0]].name, "search[LAMBDA=1e-5]");
    // the swept value is substituted into the parameters
    let s = plan.node("search[LAMBDA=1e-5]").unwrap();
    assert_eq!(s.params["env"]["LAMBDA"], serde_json::json!(1e-5));
}

#[test]
fn two_sweeps_fan_out_as_a_cartesian_product_and_join_downstream() {
    let text = r#"
[experiment]
name = "x"
seed = 1
[stages.a]
kind = "command"
cmd = "true"
sweep = { "env.A" = [1, 2], "env.B" = ["p", "q", "r"] }
[stages.b]
kind = "command"
cmd = "true"
sweep = { "env.A" = [5, 6] }
[stages.c]
kind = "command"
inputs = ["a", "b"]
cmd = "true"
"#;
    let reg = Registry::with_builtins();
    let plan = Plan::build(
        Experiment::parse(Path::new("e.toml"), text.into(), &[], &reg).unwrap(),
        &reg,
    )
    .unwrap();
    let count = |s: &str| plan.nodes.iter().filter(|n| n.stage == s).count();
    assert_eq!((count("a"), count("b"), count("c")), (6, 2, 12));
    assert!(plan.node("a[A=2,B=q]").is_some());
    // the key `A` appears in two stages: names qualify it
    assert!(
        plan.node("c[B=r,a.A=1,b.A=6]").is_some(),
        "{:?}",
        plan.nodes.iter().map(|n| &n.name).collect::<Vec<_>>()
    );
}

#[test]
fn cosmetic_edits_keep_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = keys(BASE, dir.path());
    // reorder stages and keys, add comments and whitespace, rename, new description, [report]
    let cosmetic = r#"
# a comment
[stages.side]
cmd    =   "echo side"   # trailing comment
inputs = [ "data" ]
kind = "command"

[stages.report]
gather = ["finetune"]
kind = "command"
cmd = "echo report"
inputs = ["finetune", "data"]

[stages.finetune]
cmd = "echo finetune"
kind = "command"
inputs = ["search"]

[stages.search]
sweep = { "env.LAMBDA" = [0.000001, 1.0e-5] }
kind = "command"
cmd = "echo search"
inputs = ["train", "data"]
threads = 1

[stages.train]
env = { EPOCHS = 3, LR = 0.1 }
inputs = ["data"]
kind = "command"
cmd = "echo train"

[stages.data]
kind = "command"
cmd = "echo data > $WHITTLE_OUT/d"

[experiment]
seed = 7
name = "renamed"
description = "another description"

[report]
compare = ["architecture"]
"#;
    assert_eq!(keys(cosmetic, dir.path()), base);
}

#[test]
fn a_changed_parameter_changes_that_node_and_descendants_only() {
    let dir = tempfile::tempdir().unwrap();
    let base = keys(BASE, dir.path());
    let edited = keys(&BASE.replace("LR = 0.1", "LR = 0.2"), dir.path());
    let changed: Vec<&str> = {
        let mut v: Vec<&str> = base
            .iter()
            .filter(|(n, k)| edited[*n] != **k)
            .map(|(n, _)| n.as_str())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        changed,
        [
            "finetune[LAMBDA=1e-5]",
            "finetune[LAMBDA=1e-6]",
            "report",
            "search[LAMBDA=1e-5]",
            "search[LAMBDA=1e-6]",
            "train"
        ]
    );
    // a sweep value edit changes only its branch (and the gathering node)
    let edited = keys(&BASE.replace("[1e-6, 1e-5]", "[1e-6, 2e-5]"), dir.path());
    assert_eq!(edited["search[LAMBDA=1e-6]"], base["search[LAMBDA=1e-6]"]);
    assert_eq!(
        edited["finetune[LAMBDA=1e-6]"],
        base["finetune[LAMBDA=1e-6]"]
    );
    assert!(!edited.contains_key("search[LAMBDA=1e-5]"));
    assert_ne!(edited["report"], base["report"]);
    assert_eq!(edited["side"], base["side"]);
    // the seed joins every key
    let reseeded = keys(&BASE.replace("seed = 7", "seed = 8"), dir.path());
    assert!(base.iter().all(|(n, k)| reseeded[n] != *k));
}

#[test]
fn key_follows_the_documented_derivation() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(BASE, dir.path());
    // hand-derived: blake3 over length-prefixed fields
    let field = |h: &mut blake3::Hasher, b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    let derive = |params: &str, inputs: &[&str]| {
        let mut h = blake3::Hasher::new();
        field(&mut h, b"whittle-node-key-v1");
        field(&mut h, b"command");
        field(&mut h, b"1");
        field(&mut h, params.as_bytes());
        field(&mut h, &(inputs.len() as u64).to_le_bytes());
        for i in inputs {
            field(&mut h, i.as_bytes());
        }
        field(&mut h, &7u64.to_le_bytes());
        field(&mut h, b"");
        h.finalize().to_hex().to_string()
    };
    let data = derive(
        r#"{"cmd":"echo data > $WHITTLE_OUT/d","deps":[],"env":{},"threads":1}"#,
        &[],
    );
    assert_eq!(k["data"], data);
    let train = derive(
        r#"{"cmd":"echo train","deps":[],"env":{"EPOCHS":3,"LR":0.1},"threads":1}"#,
        &[&data],
    );
    assert_eq!(k["train"], train);
    // canonical encoding sorts keys regardless of insertion order
    let v: serde_json::Value = serde_json::from_str(r#"{"b":{"z":1,"y":2},"a":0.5}"#).unwrap();
    assert_eq!(canonical_json(&v), r#"{"a":0.5,"b":{"y":2,"z":1}}"#);
}

#[test]
fn two_experiments_share_a_stage_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let other = r#"
[experiment]
name = "other"
seed = 7
[stages.data]
kind = "command"
cmd = "echo data > $WHITTLE_OUT/d"
[stages.different]
kind = "command"
inputs = ["data"]
cmd = "echo something else"
"#;
    assert_eq!(
        keys(other, dir.path())["data"],
        keys(BASE, dir.path())["data"]
    );
}

#[test]
fn deps_content_joins_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tools")).unwrap();
    std::fs::write(dir.path().join("tools/conv.sh"), "v1").unwrap();
    let text = BASE.replace(
        "cmd = \"echo side\"",
        "cmd = \"echo side\"\ndeps = [\"tools\"]",
    );
    let a = keys(&text, dir.path());
    std::fs::write(dir.path().join("tools/conv.sh"), "v2").unwrap();
    // (a different mtime or size defeats the in-process memo)
    std::fs::write(dir.path().join("tools/conv.sh"), "v2-longer").unwrap();
    let b = keys(&text, dir.path());
    assert_ne!(a["side"], b["side"]);
    assert_eq!(a["report"], b["report"]);
}

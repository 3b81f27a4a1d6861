//! Tests of the `space` and `select` stage kinds through a hand-built `RunContext`: a small
//! plain-CNN space sampled, a few candidates timed untrained, the predictor fitted, then a
//! selection at memory budgets whose child configurations build as `train` models.

use super::{Select, pick};
use crate::model_spec::ModelSpec;
use crate::space::{CandidateRow, SpaceOutput, SpaceStage};
use crate::stage_tests::{NoCkpt, NoProgress};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use whittle_engine::{CancelToken, InputArtifact, RunContext, StageKind};

fn table(s: &str) -> toml::Table {
    toml::from_str(s).unwrap()
}

fn run(
    kind: &dyn StageKind,
    params: &Value,
    inputs: &[InputArtifact],
    out: &Path,
) -> anyhow::Result<Value> {
    std::fs::create_dir_all(out).unwrap();
    let cancel = CancelToken::default();
    kind.run(&RunContext {
        node: "n",
        stage: "s",
        key: "k",
        params,
        seed: 7,
        inputs,
        out_dir: out,
        experiment_dir: Path::new("."),
        threads: 1,
        checkpoints: &NoCkpt,
        cancel: &cancel,
        progress: &NoProgress,
    })
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whittle-space-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const SPACE: &str = r#"
space = { family = "plain_cnn", input = [3, 16, 16], classes = 4 }
law = [{ c1 = [1, 8], c2 = [1, 8], c3 = [1, 8] }, { c1 = [8, 16], c2 = [8, 16], c3 = [8, 16] }]
samples = 300
time = 16
warmup = 1
runs = 3
"#;

#[test]
fn space_then_select_gives_train_models_within_each_budget() {
    let root = tmp("flow");
    let sp = SpaceStage.resolve(&table(SPACE)).unwrap();
    let m = run(&SpaceStage, &sp, &[], &root.join("space")).unwrap();
    assert_eq!(m["laws"], 2);
    assert_eq!(m["timed"], 16);
    let n = m["candidates"].as_u64().unwrap();
    assert_eq!(n + m["duplicates"].as_u64().unwrap(), 300);
    let out: SpaceOutput =
        serde_json::from_slice(&std::fs::read(root.join("space/space.json")).unwrap()).unwrap();
    assert_eq!(out.candidates.len() as u64, n);
    assert_eq!(out.variables, ["c1", "c2", "c3", "k1", "k2", "k3"]);
    // 150 from each law, each within its limits
    for c in &out.candidates {
        let hi = if c.law == 0 { 8 } else { 16 };
        assert!(c.values[..3].iter().all(|&v| v <= hi && v >= [1, 8][c.law]));
        assert_eq!(c.flops, 2 * c.macs);
        assert_eq!(
            c.weight_bytes.keys().collect::<Vec<_>>(),
            ["float(4,3)", "fp16", "fp32"]
        );
        assert!(c.predicted_latency_ms.is_some_and(|l| l > 0.0));
    }
    let pred = out.predictor.as_ref().unwrap();
    assert_eq!(pred["by_flops"]["heldout_n"], 4);
    assert_eq!(pred["by_flops"]["fit"]["n"], 12);
    // same seed, same output
    let again = run(&SpaceStage, &sp, &[], &root.join("space2")).unwrap();
    assert_eq!(again["candidates"], m["candidates"]);
    let b: SpaceOutput =
        serde_json::from_slice(&std::fs::read(root.join("space2/space.json")).unwrap()).unwrap();
    assert!(
        b.candidates
            .iter()
            .zip(&out.candidates)
            .all(|(x, y)| x.values == y.values)
    );

    // select at three fp16 weight budgets and one latency cell
    let mut sizes: Vec<u64> = out
        .candidates
        .iter()
        .map(|c| c.weight_bytes["fp16"])
        .collect();
    sizes.sort();
    let budgets = [sizes[10], sizes[sizes.len() / 2], sizes[sizes.len() - 1]];
    let sel = Select
        .resolve(&table(&format!(
            "cells = [{{ weight_bytes = {} }}, {{ weight_bytes = {} }}, {{ weight_bytes = {} }}, {{ latency_ms = 1e9, params = 0 }}]\nk = 2\nformat = \"half\"",
            budgets[0], budgets[1], budgets[2]
        )))
        .unwrap();
    assert_eq!(sel["format"], "fp16");
    let input = InputArtifact {
        stage: "space".into(),
        node: "space".into(),
        kind: "space".into(),
        key: "k".into(),
        dir: root.join("space"),
        params: sp.clone(),
        metrics: m.clone(),
    };
    let sm = run(&Select, &sel, &[input], &root.join("select")).unwrap();
    let children: Vec<Value> =
        serde_json::from_slice(&std::fs::read(root.join("select/selected.json")).unwrap()).unwrap();
    let selection: Value =
        serde_json::from_slice(&std::fs::read(root.join("select/selection.json")).unwrap())
            .unwrap();
    assert_eq!(sm["children"].as_u64().unwrap() as usize, children.len());
    // what `for_each` stages fan out over: the same list, as the engine reads it
    let listed = whittle_engine::plan::read_children(&root.join("select/children.json")).unwrap();
    assert_eq!(listed, children);
    assert!(
        children.len() <= 6 && children.len() >= 3,
        "{}",
        children.len()
    );
    for (ci, cell) in selection["cells"].as_array().unwrap()[..3]
        .iter()
        .enumerate()
    {
        let rows = cell["selected"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        let feasible: Vec<&CandidateRow> = out
            .candidates
            .iter()
            .filter(|c| c.weight_bytes["fp16"] <= budgets[ci])
            .collect();
        assert_eq!(cell["feasible"].as_u64().unwrap() as usize, feasible.len());
        let max_macs = feasible.iter().map(|c| c.macs).max().unwrap();
        assert_eq!(
            rows[0]["macs"], max_macs,
            "workload proxy: the largest workload first"
        );
        for r in rows {
            assert!(r["weight_bytes"].as_u64().unwrap() <= budgets[ci]);
            // the child is a `model` table a train stage builds, with the candidate's params
            let t = &children[r["child"].as_u64().unwrap() as usize];
            let spec: ModelSpec = serde_json::from_value(t.clone()).unwrap();
            spec.validate().unwrap();
            let cfg = spec.config(&[3, 16, 16], 4).unwrap();
            let g = cfg.build().unwrap();
            assert_eq!(g.params(), r["params"].as_u64().unwrap());
            assert_eq!(g.macs(), r["macs"].as_u64().unwrap());
            // the analytic peak is the one the reports give trained networks
            let model = whittle_nn::Model::new(cfg, 1).unwrap();
            assert_eq!(
                4 * crate::common::peak_activation_elems(&model),
                r["peak_activation_bytes"].as_u64().unwrap()
            );
        }
    }
    assert_eq!(
        selection["cells"][3]["feasible"], 0,
        "params = 0 fits nothing"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_ga_space_designs_laws_per_band() {
    let root = tmp("ga");
    let p = SpaceStage
        .resolve(&table(
            r#"
space = { family = "resnet", input = [3, 16, 16] }
law = "ga"
samples = 200
decades = [4, 5]
ga = { n_init = 12, n_steps = 60, n_eval = 4, tournament = 3, k = 2 }
"#,
        ))
        .unwrap();
    let m = run(&SpaceStage, &p, &[], &root).unwrap();
    let out: SpaceOutput =
        serde_json::from_slice(&std::fs::read(root.join("space.json")).unwrap()).unwrap();
    assert_eq!(out.laws.len(), 6, "three bands × k = 2");
    assert_eq!(m["laws"], 6);
    let bands: Vec<Value> = out.laws.iter().map(|l| l["band"].clone()).collect();
    assert_eq!(bands[0], json!([1e4, 2e4]));
    assert_eq!(bands[5], json!([5e4, 1e5]));
    assert!(
        out.laws
            .iter()
            .all(|l| l["metric"] == "params" && l["cost"].as_f64().is_some())
    );
    assert!(out.predictor.is_none());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn parameter_errors_point_at_their_keys() {
    let e = |s: &str| SpaceStage.resolve(&table(s)).unwrap_err();
    let x = e("space = { family = \"plain_cnn\" }\nmetric = \"accuracy\"");
    assert_eq!(x.path, ["metric"]);
    assert!(x.message.contains("unknown metric `accuracy`"), "{x}");
    let x = e("space = { family = \"plain_cnn\" }\nlaw = [{ c1 = [1, 4] }, { q = [1, 2] }]");
    assert_eq!(x.path, ["law", "1"]);
    assert!(x.message.contains("unknown variable `q`"), "{x}");
    let x = e("space = { family = \"plain_cnn\" }\nlaw = \"manual\"");
    assert!(x.message.contains("unknown law `manual`"), "{x}");
    let x = e("space = { family = \"resnet\", stem = [20, 30] }");
    assert_eq!(x.path, ["space"]);
    let x = e("space = { family = \"plain_cnn\" }\nformats = [\"fp32\", \"fp7\"]");
    assert_eq!(x.path, ["formats", "1"]);
    let x = e("space = { family = \"plain_cnn\" }\ndecades = [5, 3]");
    assert_eq!(x.path, ["decades"]);
    let s = |t: &str| Select.resolve(&table(t)).unwrap_err();
    assert_eq!(s("cells = [{ params = 10 }, {}]").path, ["cells", "1"]);
    assert_eq!(s("cells = [{ parms = 10 }]").path, ["cells", "0", "parms"]);
    assert_eq!(
        s("cells = [{ params = 10 }]\nproxy = \"best\"").path,
        ["proxy"]
    );
    assert_eq!(s("cells = []").path, ["cells"]);
}

#[test]
fn spread_picks_evenly_over_the_parameter_range() {
    let row = |id: usize, params: u64| CandidateRow {
        id,
        law: 0,
        values: vec![],
        params,
        macs: 1000 - params,
        flops: 0,
        weight_bytes: BTreeMap::new(),
        peak_activation_bytes: 0,
        latency_ms: None,
        predicted_latency_ms: None,
    };
    let rows: Vec<CandidateRow> = (0..9).map(|i| row(i, 10 * (9 - i as u64))).collect();
    let refs: Vec<&CandidateRow> = rows.iter().collect();
    let ids = |v: Vec<&CandidateRow>| v.iter().map(|c| c.params).collect::<Vec<_>>();
    assert_eq!(ids(pick(&refs, 3, "spread")), [10, 50, 90]);
    assert_eq!(ids(pick(&refs, 1, "spread")), [90]);
    assert_eq!(
        ids(pick(&refs, 2, "workload")),
        [10, 20],
        "largest MACs first"
    );
    assert_eq!(pick(&refs[..2], 5, "spread").len(), 2);
}

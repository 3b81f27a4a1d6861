//! `experiments/mlperf_tiny.toml` at CI size: the four MLPerf Tiny tasks of `000` (KWS, IC,
//! VWW, AD) in one run, each with its warm-up, six-λ PIT sweep, fine-tuning and int8. Each task's
//! rows carry their own metric (AUC for anomaly detection), the report has one section per task
//! with its `000` table and reference figures, no front mixes tasks, and a rerun is a no-op.

mod common;
use common::*;

#[test]
fn the_four_mlperf_tiny_tasks_run_in_one_experiment_with_a_section_each() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = root
        .join("experiments/mlperf_tiny.toml")
        .display()
        .to_string();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let mut sets: Vec<String> = Vec::new();
    for t in ["kws", "ic", "vww"] {
        for (k, v) in [
            ("train_per_class", 8),
            ("val_per_class", 3),
            ("test_per_class", 5),
        ] {
            sets.push(format!("stages.{t}_data.dataset.{k}={v}"));
        }
    }
    sets.push("stages.ad_data.dataset.train_clips=8".into());
    for t in ["kws", "ic", "vww", "ad"] {
        for s in ["", "_pit", "_ft"] {
            sets.push(format!("stages.{t}{s}.epochs=1"));
            // one epoch on a handful of items may well stay at chance
            sets.push(format!("stages.{t}{s}.allow_divergence=true"));
        }
    }
    let mut args = vec!["run".to_string(), file.clone()];
    for s in &sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = whittle(d.path(), &cache, &args);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        summary(&o).starts_with("summary: ran=60 cached=0 resumed=0 failed=0"),
        "{}",
        summary(&o)
    );

    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("reports/mlperf_tiny/metrics.json")).unwrap(),
    )
    .unwrap();
    let models = metrics["models"].as_array().unwrap();
    for t in ["kws", "ic", "vww", "ad"] {
        let mine: Vec<_> = models
            .iter()
            .filter(|m| m["node"].as_str().unwrap().starts_with(&format!("{t}")))
            .collect();
        // seed + 6 searched + 6 fine-tuned; int8 of the seed and of the 6 fine-tuned
        assert_eq!(mine.len(), 13 + 7, "{t}: {}", mine.len());
        for m in &mine {
            let (key, other) = if t == "ad" {
                ("test_auc", "test_accuracy")
            } else {
                ("test_accuracy", "test_auc")
            };
            let v = m[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{t}: no {key}: {m}"));
            assert!((0.0..=1.0).contains(&v), "{m}");
            assert!(m[other].is_null(), "{t}: {m}");
        }
        let searched: Vec<u64> = mine
            .iter()
            .filter(|m| m["stage_kind"] == "finetune")
            .map(|m| m["params"].as_u64().unwrap())
            .collect();
        assert_eq!(searched.len(), 6, "{t}");
    }

    let md = std::fs::read_to_string(d.path().join("reports/mlperf_tiny.md")).unwrap();
    for (task, title, table) in [
        ("kws_data", "keyword spotting", "6.4"),
        ("ic_data", "image classification", "6.2"),
        ("vww_data", "visual wake words", "6.3"),
        ("ad_data", "anomaly detection", "6.1"),
    ] {
        let head = format!("## Task `{task}`: {title}");
        let at = md.find(&head).unwrap_or_else(|| panic!("no {head}:\n{md}"));
        let section = &md[at..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
        assert!(
            section.contains(&format!("as `000` Table {table}")),
            "{section}"
        );
        assert!(section.contains(&format!("Reference figures from `000` Table {table}")));
        // six λ rows in the task's table, each naming this task's fine-tuned network
        let prefix = task.trim_end_matches("_data");
        let rows = section
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains(&format!("`{prefix}_ft[lambda=")))
            .filter(|l| l.ends_with("]` |"))
            .count();
        assert!(rows >= 6, "{task}: {rows} rows\n{section}");
        let other = ["kws_ft", "ic_ft", "vww_ft", "ad_ft"]
            .into_iter()
            .filter(|o| !o.starts_with(prefix))
            .find(|o| section.contains(&format!("`{o}[")));
        assert_eq!(other, None, "{task}'s section lists another task's network");
        if task == "ad_data" {
            assert!(section.contains("test AUC"), "{section}");
        } else {
            assert!(!section.contains("AUC"), "{section}");
        }
    }
    assert!(md.contains("## Tasks\n"));

    // a rerun is a no-op
    let o = whittle(d.path(), &cache, &args);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        summary(&o).starts_with("summary: ran=0 cached=60 resumed=0 failed=0"),
        "{}",
        summary(&o)
    );
}

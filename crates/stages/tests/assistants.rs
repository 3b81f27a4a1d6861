//! Teacher-assistant chains declared with `assistants`: the nodes and inputs they expand into,
//! prefix reuse by keys, `auto`, and errors that point into the stage that was written.

use std::collections::HashMap;
use whittle_engine::{Experiment, Plan};

const BASE: &str = r#"
[experiment]
name = "ta"
seed = 1

[stages.data]
kind = "fetch"
dataset = { kind = "synthetic_kws", train_per_class = 2, val_per_class = 1, test_per_class = 1 }

[stages.teacher]
kind = "train"
inputs = ["data"]
model = { arch = "tcn", channels = 64 }
epochs = 1

[stages.student]
kind = "distill"
inputs = ["teacher", "data"]
student = { arch = "tcn", channels = 8 }
assistants = ASSISTANTS
temperature = 2.0
epochs = 1
sweep = { seed = [1, 2] }
"#;

/// node name → (key, input node names)
fn plan(assistants: &str) -> Result<HashMap<String, (String, Vec<String>)>, String> {
    let reg = whittle_stages::registry();
    let text = BASE.replace("ASSISTANTS", assistants);
    let exp = Experiment::parse(std::path::Path::new("e.toml"), text, &[], &reg)
        .map_err(|e| e.to_string())?;
    let plan = Plan::build(exp, &reg).map_err(|e| e.to_string())?;
    let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    Ok(plan
        .nodes
        .iter()
        .map(|n| {
            let ins = n.inputs.iter().map(|&i| names[i].clone()).collect();
            (n.name.clone(), (n.key.clone(), ins))
        })
        .collect())
}

#[test]
fn two_assistants_expand_into_a_chain_with_the_sweep_on_the_student_only() {
    let p = plan(r#"[{ arch = "tcn", channels = 32 }, { arch = "tcn", channels = 16 }]"#).unwrap();
    let mut names: Vec<&String> = p.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "data",
            "student-ta1",
            "student-ta2",
            "student[seed=1]",
            "student[seed=2]",
            "teacher"
        ]
    );
    assert_eq!(p["student-ta1"].1, ["teacher", "data"]);
    assert_eq!(p["student-ta2"].1, ["student-ta1", "data"]);
    assert_eq!(p["student[seed=1]"].1, ["student-ta2", "data"]);
    assert_eq!(p["student[seed=2]"].1, ["student-ta2", "data"]);
}

#[test]
fn adding_an_assistant_or_changing_the_student_keeps_the_unchanged_prefix() {
    let one = plan(r#"[{ arch = "tcn", channels = 32 }]"#).unwrap();
    let two =
        plan(r#"[{ arch = "tcn", channels = 32 }, { arch = "tcn", channels = 16 }]"#).unwrap();
    assert_eq!(one["student-ta1"].0, two["student-ta1"].0, "TA₁ is reused");
    assert_ne!(one["student[seed=1]"].0, two["student[seed=1]"].0);
    // the explicit chain of distill stages written by hand gives the same keys
    let reg = whittle_stages::registry();
    let hand = BASE
        .replace(
            "[stages.student]",
            "[stages.student-ta1]\nkind = \"distill\"\ninputs = [\"teacher\", \"data\"]\nstudent = { arch = \"tcn\", channels = 32 }\ntemperature = 2.0\nepochs = 1\n\n[stages.student]",
        )
        .replace("inputs = [\"teacher\", \"data\"]\nstudent = { arch = \"tcn\", channels = 8 }", "inputs = [\"student-ta1\", \"data\"]\nstudent = { arch = \"tcn\", channels = 8 }")
        .replace("assistants = ASSISTANTS\n", "");
    let exp = Experiment::parse(std::path::Path::new("e.toml"), hand, &[], &reg).unwrap();
    let plan = Plan::build(exp, &reg).unwrap();
    let key = |n: &str| plan.nodes.iter().find(|x| x.name == n).unwrap().key.clone();
    assert_eq!(key("student-ta1"), one["student-ta1"].0);
    assert_eq!(key("student[seed=1]"), one["student[seed=1]"].0);
}

#[test]
fn auto_inserts_one_assistant_between_teacher_and_student_sizes() {
    let p = plan(r#""auto""#).unwrap();
    assert!(p.contains_key("student-ta1") && !p.contains_key("student-ta2"));
    let p = BASE.replace("ASSISTANTS", "\"auto\"\nauto_assistants = 3");
    let reg = whittle_stages::registry();
    let exp = Experiment::parse(std::path::Path::new("e.toml"), p, &[], &reg).unwrap();
    let plan = Plan::build(exp, &reg).unwrap();
    let tas: Vec<&str> = plan
        .nodes
        .iter()
        .filter(|n| n.name.starts_with("student-ta"))
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(tas, ["student-ta1", "student-ta2", "student-ta3"]);
}

#[test]
fn bad_assistants_point_at_the_stage_that_was_written() {
    let e = plan(r#"[{ arch = "tcn", channels = 0 }]"#).unwrap_err();
    assert!(e.contains("e.toml:") && e.contains("channels"), "{e}");
    let e = plan("3").unwrap_err();
    assert!(e.contains("expected a list of models"), "{e}");
    let e = plan(r#""auto""#.replace("auto", "autox").as_str()).unwrap_err();
    assert!(e.contains("expected a list of models"), "{e}");
    // line of the `assistants` key
    let line = BASE
        .lines()
        .position(|l| l.starts_with("assistants"))
        .unwrap()
        + 1;
    assert!(e.contains(&format!("e.toml:{line}:")), "{e}");
}

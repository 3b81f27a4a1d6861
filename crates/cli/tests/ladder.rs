//! The `ladder` stage end to end on a tiny KWS study: two trained DS-CNNs and their
//! elastic-width slices become a ladder; the policy's choices on a synthetic and a CSV trace
//! are in the metrics; the C artifact compiles with `cc` and its dispatcher makes the same
//! choices as the Rust replay on every step; with a flash budget too small for the variants
//! together the stage writes the loader artifact, whose `step` (reading the `.bin` blobs with
//! `fopen`) makes the same choices and reads the bytes the metrics say; a bad CSV row, a bad
//! policy and a bad C mode are located errors.

mod common;
use common::*;
use serde_json::Value;
use std::process::Command;

const TOML: &str = r#"
[experiment]
name = "ladder_quick"
seed = 3

[stages.data]
kind = "fetch"
dataset = { kind = "synthetic_kws", train_per_class = 6, val_per_class = 2, test_per_class = 4 }

[stages.net]
kind = "train"
inputs = ["data"]
sweep = { model = [{ arch = "ds_cnn", channels = 8, blocks = 1 }, { arch = "ds_cnn", channels = 16, blocks = 2 }] }
epochs = 2
lr = 2e-3

[stages.ladder]
kind = "ladder"
inputs = ["net", "data"]
gather = ["net"]
widths = [0.5]
formats = ["int8"]
keep_dominated = true
runs = 3
passes = 1
latency_source = "mcu"
c_artifact = true
policy = { kind = "fit", deadline_ms = 0.2, hysteresis = 0.1 }
traces = [{ kind = "square", steps = 30, period = 10 }, { kind = "csv", path = "log.csv", name = "log" }]
"#;

const CSV: &str =
    "time,free_ram_bytes,cpu_budget\n0,100000,1\n1,100000,0.3\n2,3000,1\n3,100000,0.9\n";

fn ladder_node(dir: &std::path::Path) -> Value {
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reports/ladder_quick/metrics.json")).unwrap(),
    )
    .unwrap();
    m["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "ladder")
        .unwrap()
        .clone()
}

#[test]
fn a_tiny_ladder_runs_and_its_c_dispatcher_agrees_with_the_replay() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    std::fs::write(d.path().join("ladder.toml"), TOML).unwrap();
    std::fs::write(d.path().join("log.csv"), CSV).unwrap();
    let o = whittle(d.path(), &cache, &["run", "ladder.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let node = ladder_node(d.path());
    let l = &node["metrics"]["ladder"];
    let vars = l["variants"].as_array().unwrap();
    // 2 networks × (itself + one slice), int8; all kept (keep_dominated).
    assert_eq!(l["candidates"], 4);
    assert_eq!(vars.len(), 4);
    let slices: Vec<&Value> = vars.iter().filter(|v| v["kind"] == "slice").collect();
    assert_eq!(slices.len(), 2);
    assert!(
        slices
            .iter()
            .all(|v| v["accuracy_uncalibrated"].is_number() && v["width"] == 0.5)
    );
    // Cheapest first on the first cost axis (latency).
    let lat: Vec<f64> = vars
        .iter()
        .map(|v| v["latency_ms"].as_f64().unwrap())
        .collect();
    assert!(lat.windows(2).all(|w| w[0] <= w[1]), "{lat:?}");
    let pool: Vec<&Value> = vars
        .iter()
        .filter(|v| v.get("dominated_by").is_none())
        .collect();
    let traces = l["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[1]["name"], "log");
    assert_eq!(traces[1]["steps"], 4);
    for t in traces {
        let steps = t["steps"].as_u64().unwrap();
        let per: u64 = t["policy"]["steps_per_variant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(per, steps);
        assert_eq!(t["fixed"].as_array().unwrap().len(), pool.len());
    }
    // The C artifact: every front variant fits the STM32F746 together.
    let a = &l["artifact"];
    assert_eq!(a["fits"], true, "{a}");
    assert_eq!(a["mode"], "together", "{a}");
    assert_eq!(a["variants"].as_array().unwrap().len(), pool.len());
    let out = cache
        .join("entries")
        .join(node["key"].as_str().unwrap())
        .join("out");
    let name = a["name"].as_str().unwrap();
    // Replay every trace through the C dispatcher.
    let mut main = format!(
        "#include <stdio.h>\n#include \"{name}.h\"\nint main(void) {{\n    {name}_state_t s;\n"
    );
    for t in traces {
        let ram: Vec<String> = t["free_ram_bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{v}u"))
            .collect();
        let cpu: Vec<String> = t["cpu_budget"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{:?}", v.as_f64().unwrap()))
            .collect();
        main += &format!(
            "    {{ static const uint32_t r[] = {{ {} }}; static const double c[] = {{ {} }}; int i;\n\
             \x20     {name}_init(&s); for (i = 0; i < {}; ++i) printf(\"%d \", {name}_select(&s, r[i], c[i])); printf(\"\\n\"); }}\n",
            ram.join(", "),
            cpu.join(", "),
            ram.len()
        );
    }
    main += &format!(
        "    {{ static float x[{up}_INPUT_SIZE], y[{up}_OUTPUT_SIZE]; static int8_t arena[{up}_ARENA_SIZE]; int v;\n\
         \x20     for (v = 0; v < {up}_NUM_VARIANTS; ++v) {{ {name}_predict(v, x, y, arena); printf(\"%g \", y[0]); }} printf(\"\\n\"); }}\n\
         \x20   return 0;\n}}\n",
        up = name.to_uppercase()
    );
    let c_dir = out.join("c");
    let main_c = d.path().join("main.c");
    std::fs::write(&main_c, main).unwrap();
    let exe = d.path().join("ladder_exe");
    let mut cc = Command::new("cc");
    cc.args(["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&c_dir)
        .arg("-o")
        .arg(&exe)
        .arg(&main_c);
    for e in std::fs::read_dir(&c_dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "c") {
            cc.arg(e.path());
        }
    }
    let r = cc
        .arg("-lm")
        .output()
        .expect("running the system C compiler `cc`");
    assert!(
        r.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let stdout = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), traces.len() + 1);
    for (t, line) in traces.iter().zip(&lines) {
        let want: Vec<String> = t["chosen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        let got: Vec<String> = line.split_whitespace().map(String::from).collect();
        assert_eq!(got, want, "C dispatcher vs Rust replay on `{}`", t["name"]);
    }
    // The report has the ladder section and its plots.
    let md = std::fs::read_to_string(d.path().join("reports/ladder_quick.md")).unwrap();
    assert!(md.contains("## Dynamic inference: ladder `ladder`"), "{md}");
    assert!(md.contains("### Trace `log` (csv, 4 steps)"));
    assert!(
        d.path()
            .join("reports/ladder_quick/ladder_ladder_log.svg")
            .exists()
    );
}

#[test]
fn bad_trace_rows_and_policies_are_located_errors() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let bad = TOML.replace("policy = { kind = \"fit\"", "policy = { kind = \"greedy\"");
    std::fs::write(d.path().join("bad_policy.toml"), bad).unwrap();
    let o = whittle(d.path(), &cache, &["status", "bad_policy.toml"]);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("bad_policy.toml:28:")
            && err.contains("`policy.kind`: unknown policy kind `greedy` (known: fit, thresholds)"),
        "{out}\n{err}"
    );
    for (edit, want) in [
        (
            "c_artifact = true\nc_mode = \"lazy\"\n",
            "`c_mode`: unknown C artifact mode `lazy` (known: together, loader)",
        ),
        (
            "c_artifact = false\nc_slot = \"flash\"\n",
            "`c_slot`: only used by the C artifact: set c_artifact = true",
        ),
    ] {
        let bad = TOML.replace("c_artifact = true\n", edit);
        std::fs::write(d.path().join("bad_c.toml"), bad).unwrap();
        let o = whittle(d.path(), &cache, &["status", "bad_c.toml"]);
        let (out, err) = text(&o);
        assert!(!o.status.success());
        assert!(
            err.contains("bad_c.toml:") && err.contains(want),
            "{out}\n{err}"
        );
    }
    std::fs::write(d.path().join("ladder.toml"), TOML).unwrap();
    std::fs::write(
        d.path().join("log.csv"),
        "time,free_ram_bytes,cpu_budget\n0,100,1\n1,100,2\n",
    )
    .unwrap();
    let o = whittle(d.path(), &cache, &["run", "ladder.toml"]);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    let all = format!("{out}\n{err}");
    assert!(
        all.contains("log.csv:3: column `cpu_budget`: 2 is outside (0, 1]"),
        "{all}"
    );
}

/// Compiles the C files of `c_dir` with `main` into `exe`.
fn compile(c_dir: &std::path::Path, main: &str, exe: &std::path::Path) {
    let main_c = exe.with_extension("c");
    std::fs::write(&main_c, main).unwrap();
    let mut cc = Command::new("cc");
    cc.args(["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(c_dir)
        .arg("-o")
        .arg(exe)
        .arg(&main_c);
    for e in std::fs::read_dir(c_dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "c") {
            cc.arg(e.path());
        }
    }
    let r = cc
        .arg("-lm")
        .output()
        .expect("running the system C compiler `cc`");
    assert!(
        r.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

fn sum(a: &Value, k: &str) -> u64 {
    a["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[k].as_u64().unwrap())
        .sum()
}

#[test]
fn a_flash_budget_too_small_for_all_variants_picks_the_loader() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    std::fs::write(d.path().join("log.csv"), CSV).unwrap();
    // A wider second network, so parameters outweigh the C tables; a loose deadline, so
    // the policy follows the free RAM of the square trace and switches.
    let base = TOML
        .replace("channels = 16, blocks = 2", "channels = 64, blocks = 2")
        .replace("deadline_ms = 0.2", "deadline_ms = 100.0");
    // 1. Forced loader mode on the STM32F746: the sizes.
    let forced = base.replace(
        "c_artifact = true\n",
        "c_artifact = true\nc_mode = \"loader\"\n",
    );
    std::fs::write(d.path().join("ladder.toml"), forced).unwrap();
    let o = whittle(d.path(), &cache, &["run", "ladder.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let a = ladder_node(d.path())["metrics"]["ladder"]["artifact"].clone();
    assert_eq!(a["mode"], "loader", "{a}");
    let params = sum(&a, "param_bytes");
    let tables = sum(&a, "table_bytes");
    let largest = a["slot_bytes"].as_u64().unwrap();
    assert!(tables < params && largest < params, "{a}");
    // 2. A flash budget below the parameters together (but above the largest variant and
    // the tables): chosen automatically.
    let budget = largest.max(tables) + 1;
    assert!(budget < params);
    let auto = base.replace(
        "c_artifact = true\n",
        &format!("c_artifact = true\nc_flash_bytes = {budget}\n"),
    );
    std::fs::write(d.path().join("ladder.toml"), auto).unwrap();
    let o = whittle(d.path(), &cache, &["run", "ladder.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let node = ladder_node(d.path());
    let l = &node["metrics"]["ladder"];
    let a = &l["artifact"];
    assert_eq!(a["mode"], "loader", "{a}");
    assert_eq!(a["slot"], "ram");
    assert_eq!(a["fits"], true, "{a}");
    assert_eq!(a["excluded"].as_array().unwrap().len(), 0, "{a}");
    assert_eq!(a["flash_budget_bytes"], budget);
    // Flash holds the tables; SRAM the largest arena, input + output and the slot.
    assert_eq!(a["flash_bytes"].as_u64().unwrap(), tables);
    let vars = a["variants"].as_array().unwrap();
    let arena = vars
        .iter()
        .map(|v| v["arena_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(a["sram_bytes"].as_u64().unwrap() > arena + largest);
    let out = cache
        .join("entries")
        .join(node["key"].as_str().unwrap())
        .join("out");
    let c_dir = out.join("c");
    let name = a["name"].as_str().unwrap();
    let blob: Vec<u64> = vars
        .iter()
        .map(|v| v["blob_bytes"].as_u64().unwrap())
        .collect();
    for (k, b) in blob.iter().enumerate() {
        let f = c_dir.join(format!("{name}_v{k}.bin"));
        assert_eq!(std::fs::metadata(&f).unwrap().len(), *b);
        assert_eq!(*b, vars[k]["param_bytes"].as_u64().unwrap() + 20);
    }
    // Switch cost: a load on the first step and on every change, of the blob's bytes.
    let traces = l["traces"].as_array().unwrap();
    let cost = a["switch_cost"].as_array().unwrap();
    assert_eq!(cost.len(), traces.len());
    let mut want_bytes = Vec::new();
    for (t, c) in traces.iter().zip(cost) {
        let ch: Vec<usize> = t["chosen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let loads: Vec<usize> = (0..ch.len())
            .filter(|&i| i == 0 || ch[i] != ch[i - 1])
            .map(|i| ch[i])
            .collect();
        let bytes: u64 = loads.iter().map(|&k| blob[k]).sum();
        assert_eq!(c["loads"].as_u64().unwrap() as usize, loads.len(), "{c}");
        assert_eq!(c["bytes_read"].as_u64().unwrap(), bytes, "{c}");
        want_bytes.push(bytes);
    }
    assert!(
        cost[0]["loads"].as_u64().unwrap() >= 3,
        "the square trace switches: {cost:?}"
    );
    // The C dispatcher's `step`, reading the blobs with fopen: the same choices and bytes.
    let mut main = format!(
        "#include <stdio.h>\n#include \"{name}.h\"\n\
         static uint32_t rd(void *ctx, int v, uint32_t off, uint8_t *dst, uint32_t len) {{\n\
         \x20   char p[4096]; FILE *f; size_t n;\n\
         \x20   snprintf(p, sizeof p, \"%s/{name}_v%d.bin\", (const char *)ctx, v);\n\
         \x20   if (!(f = fopen(p, \"rb\")) || fseek(f, (long)off, SEEK_SET) != 0) {{ if (f) fclose(f); return 0; }}\n\
         \x20   n = fread(dst, 1, len, f); fclose(f); return (uint32_t)n;\n}}\n\
         int main(int argc, char **argv) {{\n    {name}_state_t s; uint32_t before;\n\
         \x20   static float x[{up}_INPUT_SIZE], y[{up}_OUTPUT_SIZE]; static int8_t arena[{up}_ARENA_SIZE];\n\
         \x20   if (argc < 2) return 2;\n",
        up = name.to_uppercase()
    );
    for t in traces {
        let ram: Vec<String> = t["free_ram_bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{v}u"))
            .collect();
        let cpu: Vec<String> = t["cpu_budget"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{:?}", v.as_f64().unwrap()))
            .collect();
        main += &format!(
            "    {{ static const uint32_t r[] = {{ {} }}; static const double c[] = {{ {} }}; int i, v;\n\
             \x20     {name}_init(&s); {name}_load(-1, rd, argv[1]); before = {name}_bytes_read();\n\
             \x20     for (i = 0; i < {}; ++i) {{ v = {name}_step(&s, r[i], c[i], rd, argv[1]); printf(\"%d \", v);\n\
             \x20         if (v < 0 || {name}_predict(v, x, y, arena) != 0) return 3; }}\n\
             \x20     printf(\"| %lu\\n\", (unsigned long)({name}_bytes_read() - before)); }}\n",
            ram.join(", "),
            cpu.join(", "),
            ram.len()
        );
    }
    main += "    return 0;\n}\n";
    let exe = d.path().join("loader_exe");
    compile(&c_dir, &main, &exe);
    let run = Command::new(&exe).arg(&c_dir).output().unwrap();
    assert!(run.status.success(), "{run:?}");
    let stdout = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), traces.len());
    for ((t, line), bytes) in traces.iter().zip(&lines).zip(&want_bytes) {
        let want: Vec<String> = t["chosen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        let (picks, read) = line.split_once(" | ").unwrap();
        let got: Vec<String> = picks.split_whitespace().map(String::from).collect();
        assert_eq!(got, want, "C step vs Rust replay on `{}`", t["name"]);
        assert_eq!(
            read.parse::<u64>().unwrap(),
            *bytes,
            "bytes read on `{}`",
            t["name"]
        );
    }
    let md = std::fs::read_to_string(d.path().join("reports/ladder_quick.md")).unwrap();
    assert!(md.contains("### C artifact for stm32f746 (loader)"), "{md}");
    assert!(md.contains("each fits, one at a time"), "{md}");
}

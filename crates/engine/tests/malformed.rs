//! Malformed experiment files: each must fail with the expected message at the expected
//! `FILE:LINE:COL`, never panic, and never touch a cache.

use std::path::Path;

use whittle_engine::{Experiment, Plan, Registry, query::load_plan};

const HEAD: &str = "[experiment]\nname = \"t\"\nseed = 1\n\n";

/// (file text, --set args, expected line, expected column, expected message fragment)
fn cases() -> Vec<(String, Vec<&'static str>, usize, usize, &'static str)> {
    let h = |rest: &str| format!("{HEAD}{rest}");
    vec![
        // 1. TOML syntax error
        ("[experiment\nname = \"t\"\n".into(), vec![], 1, 12, "invalid TOML"),
        // 2. unknown top-level table
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n\n[extra]\nx = 1\n"), vec![], 9, 2, "unknown top-level key `extra`"),
        // 3. no [experiment]
        ("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n".into(), vec![], 1, 1, "missing `[experiment]`"),
        // 4. seed of the wrong type
        ("[experiment]\nname = \"t\"\nseed = \"forty-two\"\n[stages.a]\nkind = \"command\"\ncmd = \"true\"\n".into(), vec![], 3, 1, "`seed` must be a non-negative integer, found a string"),
        // 5. negative seed
        ("[experiment]\nname = \"t\"\nseed = -3\n[stages.a]\nkind = \"command\"\ncmd = \"true\"\n".into(), vec![], 3, 1, "`seed` must be a non-negative integer, found an integer `-3`"),
        // 6. unknown key in [experiment]
        ("[experiment]\nname = \"t\"\nseed = 1\n  nmae = \"x\"\n[stages.a]\nkind = \"command\"\ncmd = \"true\"\n".into(), vec![], 4, 3, "unknown key `nmae` in [experiment]"),
        // 7. missing seed
        ("[experiment]\nname = \"t\"\n[stages.a]\nkind = \"command\"\ncmd = \"true\"\n".into(), vec![], 1, 2, "missing `seed`"),
        // 8. no stages at all
        (HEAD.into(), vec![], 1, 1, "no stages"),
        // 9. stage without kind: points at the stage header
        (h("[stages.prep]\ncmd = \"true\"\n"), vec![], 5, 9, "stage `prep` has no `kind`; expected one of: command"),
        // 10. unknown kind
        (h("[stages.a]\nkind = \"comand\"\ncmd = \"true\"\n"), vec![], 6, 1, "unknown stage kind `comand`; expected one of: command"),
        // 11. kind of the wrong type
        (h("[stages.a]\nkind = 7\n"), vec![], 6, 1, "`kind` must be a string, found an integer"),
        // 12. inputs not a list
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n[stages.b]\nkind = \"command\"\ninputs = \"a\"\ncmd = \"true\"\n"), vec![], 10, 1, "`inputs` must be a list of stage names, found a string"),
        // 13. input that does not exist: points at the list element
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n[stages.b]\nkind = \"command\"\ninputs = [\"a\", \"nope\"]\ncmd = \"true\"\n"), vec![], 10, 16, "unknown input stage `nope`; expected one of: a, b"),
        // 14. a stage that is its own input
        (h("[stages.a]\nkind = \"command\"\ninputs = [\"a\"]\ncmd = \"true\"\n"), vec![], 7, 11, "stage `a` lists itself as an input"),
        // 15. cycle: named stage by stage
        (h("[stages.a]\nkind = \"command\"\ninputs = [\"c\"]\ncmd = \"true\"\n[stages.b]\nkind = \"command\"\ninputs = [\"a\"]\ncmd = \"true\"\n[stages.c]\nkind = \"command\"\ninputs = [\"b\"]\ncmd = \"true\"\n"), vec![], 7, 11, "cycle between stages: a -> b -> c -> a"),
        // 16. unknown kind-specific key
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n\ncmmd = \"x\"\n"), vec![], 9, 1, "unknown field `cmmd`, expected one of `cmd`, `deps`, `threads`, `env`"),
        // 17. kind-specific key of the wrong type
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\nthreads = \"two\"\n"), vec![], 8, 1, "invalid type: string \"two\", expected usize"),
        // 18. missing required kind-specific key: points at the stage header
        (h("[stages.a]\nkind = \"command\"\n"), vec![], 5, 9, "missing field `cmd`"),
        // 19. sweep is not a table
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\nsweep = [1, 2]\n"), vec![], 8, 1, "`sweep` must be a table of key = [values], found a list"),
        // 20. sweep value is not a list
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\nsweep = { \"env.N\" = 3 }\n"), vec![], 8, 11, "sweep `env.N` must be a list of values, found an integer"),
        // 21. empty sweep
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\nsweep = { \"env.N\" = [] }\n"), vec![], 8, 11, "sweep `env.N` is empty"),
        // 22. swept value rejected by the kind: points at the sweep entry
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\nsweep = { threads = [1, \"x\"] }\n"), vec![], 8, 11, "`threads`: invalid type: string \"x\", expected usize"),
        // 23. key both set and swept
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\nthreads = 2\nsweep = { threads = [1, 2] }\n"), vec![], 9, 11, "`threads` is both set in the stage and swept"),
        // 24. gather names a stage that is not an input
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n[stages.b]\nkind = \"command\"\ninputs = [\"a\"]\ngather = [\"c\"]\ncmd = \"true\"\n"), vec![], 11, 11, "`gather` names `c`, which is not in `inputs`"),
        // 25. invalid stage name
        (h("[stages.\"a b\"]\nkind = \"command\"\ncmd = \"true\"\n"), vec![], 5, 9, "invalid stage name `a b`"),
        // 26. stage that is not a table
        (h("[stages]\na = 3\n"), vec![], 6, 1, "stage `a` must be a table like `[stages.a]`, found an integer"),
        // 27. missing dependency file
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\ndeps = [\"no/such/file.bin\"]\n"), vec![], 5, 9, "dependency `no/such/file.bin`"),
        // 28. an error introduced by --set is reported at the --set argument
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n"), vec!["stages.a.threads=0"], 0, 0, "`threads` must be at least 1"),
        // 29. malformed --set
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n"), vec!["stages.a.threads"], 0, 0, "expected PATH=VALUE"),
        // 30. unknown executor kind: points at the value's key
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n[executor]\nkind = \"pbs\"\n"), vec![], 9, 1, "[executor]: unknown variant `pbs`, expected `local` or `slurm`"),
        // 31. a Slurm memory size that is not one
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n[executor]\nkind = \"slurm\"\nmem = \"lots\"\n"), vec![], 10, 1, "[executor]: `lots` is not a Slurm memory size"),
        // 32. per-stage resources of a stage that does not exist
        (h("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n[executor.stages.b]\ntime = \"10\"\n"), vec![], 8, 18, "[executor]: no stage `b` in this experiment"),
        // 33. executor not a table
        (format!("executor = \"slurm\"\n{HEAD}[stages.a]\nkind = \"command\"\ncmd = \"true\"\n"), vec![], 1, 1, "`executor` must be a table, found a string"),
    ]
}

#[test]
fn every_malformed_file_is_located_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::with_builtins();
    let cache = dir.path().join("cache");
    for (i, (text, sets, line, col, msg)) in cases().into_iter().enumerate() {
        let file = dir.path().join(format!("case{}.toml", i + 1));
        std::fs::write(&file, &text).unwrap();
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let err = match load_plan(&file, &sets, &reg) {
            Ok(_) => panic!("case {}: accepted:\n{text}", i + 1),
            Err(e) => e,
        };
        let ee = err
            .downcast_ref::<whittle_engine::ExperimentError>()
            .unwrap_or_else(|| panic!("case {}: {err:#}", i + 1));
        let shown = ee.to_string();
        assert!(
            shown.contains(msg),
            "case {}: message {shown:?} lacks {msg:?}",
            i + 1
        );
        if line == 0 {
            assert!(
                ee.line.is_none() && shown.contains("--set"),
                "case {}: {shown}",
                i + 1
            );
        } else {
            assert_eq!(
                (ee.line, ee.col),
                (Some(line), Some(col)),
                "case {}: {shown}",
                i + 1
            );
            let prefix = format!("{}:{line}:{col}: ", file.display());
            assert!(
                shown.starts_with(&prefix),
                "case {}: {shown:?} should start with {prefix:?}",
                i + 1
            );
        }
    }
    assert!(!cache.exists(), "validation must not touch a cache");
}

#[test]
fn garbage_never_panics() {
    let reg = Registry::with_builtins();
    let bits = [
        "[experiment]",
        "name = \"x\"",
        "seed = 1",
        "[stages.a]",
        "kind = \"command\"",
        "cmd = \"true\"",
        "inputs = [\"a\"]",
        "inputs = [\"b\"]",
        "[stages.b]",
        "sweep = { x = [] }",
        "gather = [\"a\"]",
        "[report]",
        "seed = -1",
        "kind = []",
        "= 3",
        "[[stages.c]]",
        "sweep = { \"env.X\" = [1,2] }",
    ];
    // deterministic pseudo-random combinations
    let mut state = 0x9e3779b97f4a7c15u64;
    for _ in 0..400 {
        let mut text = String::new();
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(bits[(state % bits.len() as u64) as usize]);
            text.push('\n');
        }
        if let Ok(exp) = Experiment::parse(Path::new("g.toml"), text, &[], &reg) {
            let _ = Plan::build(exp, &reg);
        }
    }
}

/// Writes every case of the table as a seed of the fuzz corpus (`just fuzz-seed`): the file
/// `seed-malformed-NN.toml` in `$WHITTLE_FUZZ_SEEDS`, `--set` arguments as `#set` lines.
#[test]
#[ignore = "writes the fuzz seed corpus; run by `just fuzz-seed`"]
fn write_fuzz_seeds() {
    let dir = std::env::var_os("WHITTLE_FUZZ_SEEDS").expect("WHITTLE_FUZZ_SEEDS is not set");
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    for (i, (text, sets, ..)) in cases().into_iter().enumerate() {
        let mut seed: String = sets.iter().map(|s| format!("#set {s}\n")).collect();
        seed.push_str(&text);
        std::fs::write(dir.join(format!("seed-malformed-{:02}.toml", i + 1)), seed).unwrap();
    }
}

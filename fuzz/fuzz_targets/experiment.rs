//! Fuzz target: experiment TOML text → validated experiment → plan, or a located error, with
//! the real stage registry (so every kind's `resolve` and `expand` run too). It must never
//! panic, whatever the text.
//!
//! Lines of the form `#set PATH=VALUE` (TOML comments) are passed as `--set` overrides, so
//! the override path is fuzzed as well. Plans whose stages hash `deps` are not built: the
//! fuzzer would otherwise hash whatever files it names (`deps = ["/"]`), which is slow and
//! tells nothing about the parser.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use whittle_engine::{Experiment, Plan, Registry};

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(whittle_stages::registry)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sets: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#set "))
        .map(str::to_string)
        .collect();
    let reg = registry();
    // An absolute folder that does not exist: relative paths in the file resolve to nothing.
    let file = Path::new("/nonexistent-whittle-fuzz/experiment.toml");
    let Ok(exp) = Experiment::parse(file, text.to_string(), &sets, reg) else {
        return;
    };
    let hashes_files = exp.stages.values().any(|s| {
        s.params.contains_key("deps") || s.sweep.iter().any(|(k, _)| k.starts_with("deps"))
    });
    if !hashes_files {
        let _ = Plan::build(exp, reg);
    }
});

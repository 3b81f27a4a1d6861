//! Helpers shared by the CLI tests: run the built `whittle` binary in a folder with a cache.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn whittle(dir: &Path, cache: &Path, args: &[&str]) -> Output {
    cmd(dir, cache, args).output().expect("spawn whittle")
}

pub fn cmd(dir: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_whittle"));
    c.current_dir(dir)
        .env("WHITTLE_CACHE", cache)
        .env_remove("RUST_LOG")
        .args(args);
    c
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The `summary:` line of a run.
pub fn summary(o: &Output) -> String {
    let (out, err) = text(o);
    out.lines()
        .find(|l| l.starts_with("summary:"))
        .map(String::from)
        .unwrap_or_else(|| panic!("no summary line:\n{out}\n{err}"))
}

/// Lines of a log file that the commands append their node names to, then empty it.
pub fn take_log(p: &Path) -> Vec<String> {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let _ = std::fs::remove_file(p);
    let mut v: Vec<String> = s.lines().map(String::from).collect();
    v.sort();
    v
}

/// Every entry key in the cache.
pub fn entries(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("entries"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// All files under `dir` as (relative path, bytes), sorted.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p: PathBuf = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push((
                    p.strip_prefix(base).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// A shell stage that resumes from `$WHITTLE_CHECKPOINTS/state`: `$STEPS` steps of `sleep`
/// seconds, one line per executed step appended to `$COUNTER_FILE` (outside the cache; not
/// part of any key), then `finish` (which sees the final `$acc`).
pub fn count_sh(sleep: f64, finish: &str) -> String {
    format!(
        r#"#!/bin/sh
set -e
ck="$WHITTLE_CHECKPOINTS"
i=0; acc=1
if [ -f "$ck/state" ]; then read i acc < "$ck/state"; echo "resuming from step $i" >&2; fi
while [ "$i" -lt "$STEPS" ]; do
  acc=$(( (acc * 31 + i) % 1000003 ))
  i=$((i + 1))
  echo "$i" >> "$COUNTER_FILE"
  echo "$i $acc" > "$ck/state.tmp"
  mv "$ck/state.tmp" "$ck/state"
  sleep {sleep}
done
{finish}
"#
    )
}

/// A string field (`key`, `state`, `job`, …) of `node` in `whittle status FILE --json`, run
/// in `dir` against `cache`; empty when the node has no such field.
pub fn status_field(dir: &Path, cache: &Path, file: &str, node: &str, field: &str) -> String {
    let o = whittle(dir, cache, &["status", file, "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {:?}", text(&o)));
    rows.as_array()
        .expect("a JSON array")
        .iter()
        .find(|r| r["node"] == node)
        .and_then(|r| r[field].as_str())
        .map(String::from)
        .unwrap_or_default()
}

//! Writing to a closed pipe (`whittle status FILE | head -1`): query commands end quietly,
//! killed by SIGPIPE like `git log`, with no panic message; `run` finishes its nodes anyway.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Output, Stdio};

use common::*;

/// SIGPIPE on Linux.
const SIGPIPE: i32 = 13;

const EXP: &str = r#"
[experiment]
name = "pipe"
seed = 1

[stages.data]
kind = "command"
cmd = "echo rows > $WHITTLE_OUT/data.txt"

[stages.train]
kind = "command"
inputs = ["data"]
sweep = { "env.LR" = [0.1, 0.2, 0.3] }
cmd = "cat $WHITTLE_IN_DATA/data.txt > $WHITTLE_OUT/model.txt; echo '{\"accuracy\": 0.5}' > $WHITTLE_OUT/metrics.json"
"#;

/// Run whittle with stdout (and stderr too when `both`) a pipe whose read end was closed
/// before it started, so its first write fails with EPIPE.
fn closed_pipe(dir: &Path, cache: &Path, args: &[&str], both: bool) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = cmd(dir, cache, args);
    if both {
        c.stderr(writer.try_clone().unwrap());
    } else {
        c.stderr(Stdio::piped());
    }
    c.stdout(writer).output().expect("spawn whittle")
}

fn assert_quiet_sigpipe(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(
        err.is_empty(),
        "{what}: nothing should be said, got {err:?}"
    );
    assert_eq!(
        o.status.signal(),
        Some(SIGPIPE),
        "{what}: should end killed by SIGPIPE, got {:?}",
        o.status
    );
}

#[test]
fn every_query_command_ends_quietly_on_a_closed_pipe() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    std::fs::write(d.path().join("exp.toml"), EXP).unwrap();
    let p = d.path();

    // before anything ran (status of pending nodes, gc of an empty cache)
    for args in [
        &["status", "exp.toml"][..],
        &["status", "exp.toml", "--json"],
        &["why", "exp.toml", "data"],
        &["gc", "exp.toml", "--dry-run"],
    ] {
        assert_quiet_sigpipe(&closed_pipe(p, &cache, args, false), &args.join(" "));
    }

    // a run whose stdout and stderr are both closed still runs every node to the end
    let o = closed_pipe(p, &cache, &["run", "exp.toml"], true);
    assert!(o.status.success(), "run: {:?}", o.status);
    assert_eq!(entries(&cache).len(), 4);
    let again = whittle(p, &cache, &["run", "exp.toml"]);
    assert_eq!(
        summary(&again),
        "summary: ran=0 cached=4 resumed=0 failed=0"
    );

    for args in [
        &["status", "exp.toml"][..],
        &["why", "exp.toml", "train[LR=0.2]"],
        &["report", "exp.toml"],
        &["diff", "exp.toml", "exp.toml"],
        &["diff", "exp.toml", "exp.toml", "--json"],
        &["gc", "exp.toml", "--dry-run"],
        &["gc", "exp.toml"],
    ] {
        assert_quiet_sigpipe(&closed_pipe(p, &cache, args, false), &args.join(" "));
    }
    // nothing was lost on the way
    assert_eq!(entries(&cache).len(), 4);

    // reading one line and then closing the pipe, as `| head -1` does
    let mut c = cmd(p, &cache, &["status", "exp.toml"]);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("data "), "{first}");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // Its four lines may all have fit in the pipe before it was closed: exit 0 or SIGPIPE.
    assert!(
        o.status.success() || o.status.signal() == Some(SIGPIPE),
        "{:?}",
        o.status
    );
}

#[test]
fn a_full_disk_behind_stdout_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    std::fs::write(d.path().join("exp.toml"), EXP).unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = cmd(d.path(), &cache, &["status", "exp.toml"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("cannot write to standard output"), "{err}");
    assert_eq!(o.status.code(), Some(2));
}

//! The Slurm command-line tools whittle uses: `sbatch --parsable`, `squeue` (one call for all
//! of the user's jobs, array tasks one per line, recently ended jobs included), `sacct` when
//! accounting is enabled (many clusters disable it; then it is not asked again), `scancel`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

/// A job's state as Slurm names it (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`,
/// `OUT_OF_MEMORY`, `TIMEOUT`, `CANCELLED`, `NODE_FAIL`, …) and the reason Slurm gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub state: String,
    pub reason: String,
    /// Job name (empty when it came from sacct).
    pub name: String,
}

impl JobState {
    /// Still queued or running: the job may yet commit its entry.
    pub fn alive(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
        )
    }
    /// Queued, not yet started.
    pub fn queued(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "CONFIGURING"
        )
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {what} (is Slurm installed and in PATH?)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submit a batch script; returns the job id.
pub fn sbatch(script: &Path) -> Result<String> {
    let out = run(Command::new("sbatch").arg("--parsable").arg(script))?;
    // `--parsable` prints `id` or `id;cluster`
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed `{}` instead of a job id", out.trim());
    }
    Ok(id)
}

/// Every job of this user that the controller still knows (queued, running, and ended
/// within `MinJobAge`), array tasks one per line as `ARRAYID_TASK`.
pub fn squeue() -> Result<HashMap<String, JobState>> {
    let out = run(Command::new("squeue").args([
        "--me",
        "--noheader",
        "--array",
        "--states=all",
        "--format=%i|%T|%j|%r",
    ]))?;
    Ok(parse_squeue(&out))
}

fn parse_squeue(out: &str) -> HashMap<String, JobState> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.trim().splitn(4, '|');
            let id = f.next()?.trim().to_string();
            let state = f.next()?.trim().to_string();
            let name = f.next().unwrap_or("").trim().to_string();
            let reason = f.next().unwrap_or("").trim().to_string();
            (!id.is_empty()).then_some((
                id,
                JobState {
                    state,
                    reason,
                    name,
                },
            ))
        })
        .collect()
}

static NO_SACCT: AtomicBool = AtomicBool::new(false);

/// Final states from accounting, for jobs the controller forgot; `None` when accounting is
/// disabled or `sacct` is missing (then it is not asked again by this process).
pub fn sacct(ids: &[String]) -> Option<HashMap<String, JobState>> {
    if ids.is_empty() || NO_SACCT.load(Ordering::Relaxed) {
        return None;
    }
    let r = run(Command::new("sacct").args([
        "--noheader",
        "--parsable2",
        "--allocations",
        "--format=JobID,State",
        &format!("--jobs={}", ids.join(",")),
    ]));
    match r {
        Ok(out) => Some(
            out.lines()
                .filter_map(|l| {
                    let (id, st) = l.trim().split_once('|')?;
                    // `CANCELLED by 0` → `CANCELLED`
                    let state = st.split_whitespace().next()?.to_string();
                    Some((
                        id.to_string(),
                        JobState {
                            state,
                            reason: String::new(),
                            name: String::new(),
                        },
                    ))
                })
                .collect(),
        ),
        Err(e) => {
            tracing::debug!("sacct unavailable, not asking again: {e:#}");
            NO_SACCT.store(true, Ordering::Relaxed);
            None
        }
    }
}

/// Cancel jobs (ids as `123` or `123_4`).
pub fn scancel(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    run(Command::new("scancel").args(ids))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines() {
        let out = "12|RUNNING|whittle-exp-abc|None\n 13_0|PENDING|whittle-exp-a1|Priority\n13_1|OUT_OF_MEMORY|whittle-exp-a1|OutOfMemory\n\n";
        let m = parse_squeue(out);
        assert_eq!(m.len(), 3);
        assert!(m["12"].alive() && !m["12"].queued());
        assert!(m["13_0"].queued());
        assert_eq!(m["13_1"].state, "OUT_OF_MEMORY");
        assert!(!m["13_1"].alive());
        assert_eq!(m["13_1"].name, "whittle-exp-a1");
        assert_eq!(m["13_1"].reason, "OutOfMemory");
    }
}

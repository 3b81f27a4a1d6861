//! The `[executor]` table: where an experiment's nodes run (`kind = "local"`, the default, or
//! `"slurm"`) and the Slurm options. It joins no key: the same node gives the same entry
//! wherever it runs.
//!
//! ```toml
//! [executor]
//! kind = "slurm"
//! partition = "cpu"            # sbatch --partition
//! account = "tinyml"           # sbatch --account
//! qos = "normal"               # sbatch --qos
//! sbatch_args = ["--constraint=avx512"]
//! time = "02:00:00"            # per job (sbatch --time), every stage
//! mem = "8G"                   # per job (sbatch --mem), every stage
//! array = true                 # ready nodes of one stage go as one job array
//! max_jobs = 500               # nodes queued or running at once
//! poll_secs = 2.0              # how often squeue is asked
//! whittle = "/shared/bin/whittle"  # the binary jobs run (default: this one)
//!
//! [executor.stages.train]      # per stage (the name written in [stages.NAME])
//! time = "08:00:00"
//! mem = "16G"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::stage::{ParamError, from_params};

/// Where nodes run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Threads of the `whittle run` process (the default).
    #[default]
    Local,
    /// One Slurm job per node (or one job array per stage's ready nodes).
    Slurm,
}

impl std::str::FromStr for ExecutorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "slurm" => Ok(Self::Slurm),
            _ => Err(format!(
                "unknown executor `{s}`; expected `local` or `slurm`"
            )),
        }
    }
}

impl std::fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::Slurm => "slurm",
        })
    }
}

/// Resources of one stage's jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageResources {
    pub time: Option<String>,
    pub mem: Option<String>,
    #[serde(default)]
    pub sbatch_args: Vec<String>,
}

/// The validated `[executor]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    #[serde(default)]
    pub kind: ExecutorKind,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    pub time: Option<String>,
    pub mem: Option<String>,
    #[serde(default = "yes")]
    pub array: bool,
    #[serde(default = "max_jobs")]
    pub max_jobs: usize,
    #[serde(default = "poll_secs")]
    pub poll_secs: f64,
    pub whittle: Option<PathBuf>,
    #[serde(default)]
    pub stages: BTreeMap<String, StageResources>,
}

fn yes() -> bool {
    true
}
fn max_jobs() -> usize {
    500
}
fn poll_secs() -> f64 {
    2.0
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            kind: ExecutorKind::Local,
            partition: None,
            account: None,
            qos: None,
            sbatch_args: Vec::new(),
            time: None,
            mem: None,
            array: true,
            max_jobs: max_jobs(),
            poll_secs: poll_secs(),
            whittle: None,
            stages: BTreeMap::new(),
        }
    }
}

impl ExecutorConfig {
    /// Parse and check `[executor]`; `is_stage` says whether a `[stages.NAME]` exists.
    pub fn from_table(
        t: &toml::Table,
        is_stage: &dyn Fn(&str) -> bool,
    ) -> Result<Self, ParamError> {
        let c: Self = from_params(t)?;
        if c.max_jobs == 0 {
            return Err(ParamError::new(["max_jobs"], "must be at least 1"));
        }
        if !(c.poll_secs.is_finite() && c.poll_secs > 0.0 && c.poll_secs <= 600.0) {
            return Err(ParamError::new(
                ["poll_secs"],
                format!("must be between 0 and 600 seconds, found {}", c.poll_secs),
            ));
        }
        check_resources(&[], c.time.as_deref(), c.mem.as_deref())?;
        for (name, r) in &c.stages {
            if !is_stage(name) {
                return Err(ParamError::new(
                    ["stages", name.as_str()],
                    format!("no stage `{name}` in this experiment"),
                ));
            }
            check_resources(&["stages", name], r.time.as_deref(), r.mem.as_deref())?;
        }
        Ok(c)
    }

    /// `time`, `mem` and extra sbatch arguments of a stage's jobs (stage values override).
    pub fn resources(&self, stage: &str) -> StageResources {
        let s = self.stages.get(stage);
        let mut args = self.sbatch_args.clone();
        if let Some(s) = s {
            args.extend(s.sbatch_args.iter().cloned());
        }
        StageResources {
            time: s.and_then(|s| s.time.clone()).or_else(|| self.time.clone()),
            mem: s.and_then(|s| s.mem.clone()).or_else(|| self.mem.clone()),
            sbatch_args: args,
        }
    }
}

fn check_resources(at: &[&str], time: Option<&str>, mem: Option<&str>) -> Result<(), ParamError> {
    let path = |k: &str| at.iter().map(|s| s.to_string()).chain([k.to_string()]);
    if let Some(t) = time {
        let ok = !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_digit() || c == ':' || c == '-')
            && t.chars().next().is_some_and(|c| c.is_ascii_digit());
        if !ok && !matches!(t, "UNLIMITED" | "INFINITE") {
            return Err(ParamError::new(
                path("time"),
                format!(
                    "`{t}` is not a Slurm time; expected minutes, MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS"
                ),
            ));
        }
    }
    if let Some(m) = mem {
        if mem_bytes(m).is_none() {
            return Err(ParamError::new(
                path("mem"),
                format!(
                    "`{m}` is not a Slurm memory size; expected e.g. 4000 (MB), 500M, 8G or 1T"
                ),
            ));
        }
    }
    Ok(())
}

/// Bytes of a Slurm memory size (`4000` = MB, `500M`, `8G`, `1T`, `64K`).
pub fn mem_bytes(m: &str) -> Option<u64> {
    let m = m.trim();
    let (num, unit) = match m.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => m.split_at(i),
        None => (m, "M"),
    };
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match unit.to_ascii_uppercase().as_str() {
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mul).filter(|&b| b > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ExecutorConfig, ParamError> {
        ExecutorConfig::from_table(&s.parse().unwrap(), &|s| s == "train")
    }

    #[test]
    fn defaults_and_stage_overrides() {
        let c = parse("kind = \"slurm\"\nmem = \"2G\"\ntime = \"10\"\nsbatch_args = [\"-N1\"]\n[stages.train]\nmem = \"8G\"\nsbatch_args = [\"--exclusive\"]").unwrap();
        assert_eq!(c.kind, ExecutorKind::Slurm);
        assert!(c.array);
        assert_eq!(c.max_jobs, 500);
        let r = c.resources("train");
        assert_eq!(r.mem.as_deref(), Some("8G"));
        assert_eq!(r.time.as_deref(), Some("10"));
        assert_eq!(r.sbatch_args, vec!["-N1", "--exclusive"]);
        assert_eq!(c.resources("other").mem.as_deref(), Some("2G"));
        assert_eq!(ExecutorConfig::default(), parse("").unwrap());
    }

    #[test]
    fn bad_values_say_which_key() {
        let cases = [
            ("kind = \"pbs\"", vec!["kind"], "unknown variant"),
            ("mem = \"lots\"", vec!["mem"], "not a Slurm memory size"),
            ("time = \"1h\"", vec!["time"], "not a Slurm time"),
            ("max_jobs = 0", vec!["max_jobs"], "at least 1"),
            ("poll_secs = -1.0", vec!["poll_secs"], "between 0 and 600"),
            (
                "[stages.nope]\nmem = \"1G\"",
                vec!["stages", "nope"],
                "no stage `nope`",
            ),
            (
                "[stages.train]\nmem = \"1Q\"",
                vec!["stages", "train", "mem"],
                "memory size",
            ),
            ("partitions = \"x\"", vec!["partitions"], "unknown field"),
        ];
        for (text, path, msg) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.path, path, "{text}: {e}");
            assert!(e.message.contains(msg), "{text}: {e}");
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(mem_bytes("4000"), Some(4000 << 20));
        assert_eq!(mem_bytes("500M"), Some(500 << 20));
        assert_eq!(mem_bytes("8g"), Some(8 << 30));
        assert_eq!(mem_bytes("1T"), Some(1 << 40));
        assert_eq!(mem_bytes("0"), None);
        assert_eq!(mem_bytes("1.5G"), None);
    }
}

//! What the Slurm executor keeps in the cache, under `<cache>/slurm/`, so that any controller
//! (a rerun after `kill -9` included) and any job can find it on the shared filesystem:
//!
//! - `batches/<id>.json`: one submission: experiment file, `--set` overrides, node names and
//!   keys (array task `i` runs `keys[i]`), and the job id once `sbatch` answered. It is written
//!   *before* `sbatch`, so a job never starts without it and a controller killed between the
//!   two still recognises the job by its name.
//! - `scripts/<id>.sh`: the batch script; `logs/<id>-<job>.log`: its output.
//! - `jobs/<key>.json`: the newest job of a node (id, batch, log), for `status` and adoption.
//!
//! Job names are `whittle-<experiment>-<id>`: a single node's id is the first 16 hex digits of
//! its key, an array's is `a` + 15 hex digits of the hash of its keys.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::config::StageResources;
use crate::cache::Cache;

/// One `sbatch` submission: a single node or a job array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub id: String,
    pub experiment: String,
    /// The experiment file (absolute) and its `--set` overrides: the job loads the same plan.
    pub file: PathBuf,
    pub sets: Vec<String>,
    pub nodes: Vec<String>,
    pub keys: Vec<String>,
    pub array: bool,
    /// Set once sbatch answered.
    pub job: Option<String>,
}

/// The newest job of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// `123` or `123_4` (array task).
    pub job: String,
    pub batch: String,
    pub node: String,
    pub log: PathBuf,
}

fn dir(cache: &Cache, sub: &str) -> PathBuf {
    cache.root().join("slurm").join(sub)
}

/// `[A-Za-z0-9_.]` of the experiment name (Slurm job names should stay shell- and
/// squeue-friendly).
pub fn job_prefix(experiment: &str) -> String {
    let clean: String = experiment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("whittle-{clean}-")
}

impl Batch {
    /// A batch for `keys` (their nodes' names alongside); the id follows from the keys.
    pub fn new(
        experiment: &str,
        file: PathBuf,
        sets: Vec<String>,
        nodes: Vec<String>,
        keys: Vec<String>,
    ) -> Self {
        let array = keys.len() > 1;
        let id = if array {
            let h = blake3::hash(keys.join("\n").as_bytes()).to_hex();
            format!("a{}", &h[..15])
        } else {
            keys[0][..16].to_string()
        };
        Self {
            id,
            experiment: experiment.to_string(),
            file,
            sets,
            nodes,
            keys,
            array,
            job: None,
        }
    }

    pub fn job_name(&self) -> String {
        format!("{}{}", job_prefix(&self.experiment), self.id)
    }

    pub fn path(cache: &Cache, id: &str) -> PathBuf {
        dir(cache, "batches").join(format!("{id}.json"))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a batch", path.display()))
    }

    pub fn save(&self, cache: &Cache) -> Result<PathBuf> {
        let p = Self::path(cache, &self.id);
        write_atomic(&p, serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(p)
    }

    /// The key array task `task` (or the single job, `None`) runs.
    pub fn key_for(&self, task: Option<usize>) -> Result<&str> {
        match (self.array, task) {
            (false, _) => Ok(&self.keys[0]),
            (true, Some(t)) if t < self.keys.len() => Ok(&self.keys[t]),
            (true, t) => anyhow::bail!(
                "batch {} is an array of {} nodes, but this job's array task is {t:?}",
                self.id,
                self.keys.len()
            ),
        }
    }

    /// The log of task `i` once the job id is known (`%j` or `%A_%a` of the script).
    pub fn log(&self, cache: &Cache, job: &str, i: usize) -> PathBuf {
        let name = if self.array {
            format!("{}-{job}_{i}.log", self.id)
        } else {
            format!("{}-{job}.log", self.id)
        };
        dir(cache, "logs").join(name)
    }

    /// The batch script: resources as `#SBATCH` lines, then `exec whittle exec-node`.
    #[allow(clippy::too_many_arguments)]
    pub fn script(
        &self,
        cache: &Cache,
        whittle: &Path,
        workdir: &Path,
        cpus: usize,
        res: &StageResources,
        partition: Option<&str>,
        account: Option<&str>,
        qos: Option<&str>,
    ) -> String {
        let logs = dir(cache, "logs");
        let log = if self.array {
            logs.join(format!("{}-%A_%a.log", self.id))
        } else {
            logs.join(format!("{}-%j.log", self.id))
        };
        let mut s = String::from("#!/bin/sh\n");
        let mut opt = |o: String| s.push_str(&format!("#SBATCH {o}\n"));
        opt(format!("--job-name={}", self.job_name()));
        opt(format!("--output={}", log.display()));
        opt(format!("--chdir={}", workdir.display()));
        opt(format!("--cpus-per-task={}", cpus.max(1)));
        opt("--ntasks=1".into());
        opt("--open-mode=append".into());
        if let Some(m) = &res.mem {
            opt(format!("--mem={m}"));
        }
        if let Some(t) = &res.time {
            opt(format!("--time={t}"));
        }
        for (k, v) in [("partition", partition), ("account", account), ("qos", qos)] {
            if let Some(v) = v {
                opt(format!("--{k}={v}"));
            }
        }
        if self.array {
            opt(format!("--array=0-{}", self.keys.len() - 1));
        }
        for a in &res.sbatch_args {
            opt(a.clone());
        }
        s.push_str(&format!(
            "# whittle {}: experiment `{}`, node(s): {}\n",
            env!("CARGO_PKG_VERSION"),
            self.experiment,
            self.nodes.join(", ")
        ));
        if let Some(b) = res.mem.as_deref().and_then(super::config::mem_bytes) {
            // whittle's own memory guard then refuses a node whose estimate exceeds `--mem`
            s.push_str(&format!("export WHITTLE_MEMORY_LIMIT={b}\n"));
        }
        s.push_str(&format!(
            "exec {} --cache {} exec-node {}\n",
            quote(&whittle.display().to_string()),
            quote(&cache.root().display().to_string()),
            quote(&Self::path(cache, &self.id).display().to_string()),
        ));
        s
    }

    pub fn write_script(&self, cache: &Cache, text: &str) -> Result<PathBuf> {
        let p = dir(cache, "scripts").join(format!("{}.sh", self.id));
        write_atomic(&p, text.as_bytes())?;
        // Slurm does not create the folder of `--output`: a job without it fails to launch
        let logs = dir(cache, "logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        Ok(p)
    }
}

impl JobRecord {
    pub fn path(cache: &Cache, key: &str) -> PathBuf {
        dir(cache, "jobs").join(format!("{key}.json"))
    }
    pub fn load(cache: &Cache, key: &str) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(cache, key)).ok()?;
        serde_json::from_str(&text).ok()
    }
    pub fn save(&self, cache: &Cache, key: &str) -> Result<()> {
        write_atomic(
            &Self::path(cache, key),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }
}

/// The last `n` lines of a log (empty if it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Single-quote for sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::cache::write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_tasks() {
        let k1 = "0123456789abcdef0123".to_string();
        let k2 = "fedcba98765432100000".to_string();
        let one = Batch::new(
            "my exp",
            "/e.toml".into(),
            vec![],
            vec!["a".into()],
            vec![k1.clone()],
        );
        assert_eq!(one.id, "0123456789abcdef");
        assert_eq!(one.job_name(), "whittle-my_exp-0123456789abcdef");
        assert_eq!(one.key_for(None).unwrap(), k1);
        let arr = Batch::new(
            "e",
            "/e.toml".into(),
            vec![],
            vec!["a".into(), "b".into()],
            vec![k1.clone(), k2.clone()],
        );
        assert!(arr.array && arr.id.starts_with('a') && arr.id.len() == 16);
        assert_eq!(arr.key_for(Some(1)).unwrap(), k2);
        assert!(arr.key_for(Some(2)).is_err() && arr.key_for(None).is_err());
    }

    #[test]
    fn script_has_resources_and_quotes() {
        let cache = Cache::new("/c ache");
        let b = Batch::new(
            "e",
            "/e.toml".into(),
            vec![],
            vec!["a".into(), "b".into()],
            vec!["0".repeat(64), "1".repeat(64)],
        );
        let res = StageResources {
            time: Some("10:00".into()),
            mem: Some("1G".into()),
            sbatch_args: vec!["--exclusive".into()],
        };
        let s = b.script(
            &cache,
            Path::new("/bin/whit'tle"),
            Path::new("/w"),
            3,
            &res,
            Some("cpu"),
            None,
            None,
        );
        for line in [
            "#SBATCH --cpus-per-task=3",
            "#SBATCH --mem=1G",
            "#SBATCH --time=10:00",
            "#SBATCH --partition=cpu",
            "#SBATCH --array=0-1",
            "#SBATCH --exclusive",
            "#SBATCH --chdir=/w",
            "export WHITTLE_MEMORY_LIMIT=1073741824",
            "exec '/bin/whit'\\''tle' --cache '/c ache' exec-node",
        ] {
            assert!(s.contains(line), "missing `{line}` in\n{s}");
        }
        assert!(!s.contains("--account"));
    }
}

//! The content-addressed cache: `<cache>/entries/<key>/` (manifest.json + out/ + logs/),
//! `<cache>/pending/<key>/` (work in progress: out/, checkpoints/, scratch/), per-key lock
//! files in `<cache>/locks/`, corrupted entries moved to `<cache>/corrupt/`, and the shared
//! folders [`SHARED_DIRS`] whose files stage kinds read or write for several nodes (downloads,
//! computed artifacts; see [`crate::StageKind::shared_files`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::checkpoints::DirCheckpoints;
use crate::hash::hash_tree;

/// The manifest file name inside an entry.
pub const MANIFEST: &str = "manifest.json";
/// Marker left in a pending folder by a failed attempt (holds the error).
pub const FAILED: &str = "failed.txt";
/// Folders of the cache root holding files shared between nodes, named by
/// [`crate::StageKind::shared_files`] relative to the root (`downloads/…`, `artifacts/…`).
pub const SHARED_DIRS: [&str; 2] = ["downloads", "artifacts"];

/// One input of a node as recorded in its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    pub stage: String,
    pub node: String,
    pub key: String,
}

/// One output file: blake3 (hex) and size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub blake3: String,
    pub size: u64,
}

/// The record of a completed node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub key: String,
    pub node: String,
    pub stage: String,
    pub kind: String,
    pub version: String,
    pub params: serde_json::Value,
    pub inputs: Vec<InputRecord>,
    pub seed: u64,
    /// blake3 (hex) of the kind's extra key bytes (e.g. `deps`), empty if none.
    #[serde(default)]
    pub extra: String,
    /// Output files relative to `out/`.
    pub outputs: BTreeMap<String, OutputRecord>,
    pub metrics: serde_json::Value,
    /// Unix seconds.
    pub started: f64,
    pub finished: f64,
    pub duration_secs: f64,
    /// Whether this run continued from saved state.
    pub resumed: bool,
    /// Experiment that produced it (informational; not part of the key).
    pub experiment: String,
    /// Where it ran when not in the controlling process, e.g.
    /// `{"kind": "slurm", "job": "1234_5", "host": "node07"}` (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<serde_json::Value>,
    /// Threads the scheduler granted the node (absent in entries written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// CPU seconds the node used (its thread pools', see [`crate::cpu::in_pool`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_secs: Option<f64>,
}

/// State of a key in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// A completed entry exists.
    Done,
    /// Nothing yet.
    Pending,
    /// Interrupted with saved state (checkpoints): the next run resumes it.
    Partial,
    /// The last attempt failed.
    Failed,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Done => "done",
            NodeState::Pending => "pending",
            NodeState::Partial => "partial",
            NodeState::Failed => "failed",
        })
    }
}

/// A held per-key lock; released on drop or when the process dies.
#[derive(Debug)]
pub struct KeyLock {
    _file: File,
}

/// The cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// Write `bytes` to `path` so readers see the old file or the whole new one, never a part:
/// a uniquely named temporary in the same folder (created if missing), then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Cache {
    /// The cache at `root` (created lazily when something is written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root: PathBuf = root.into();
        // absolute, because stages run in the experiment's folder
        let root = std::path::absolute(&root).unwrap_or(root);
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(key)
    }

    pub fn pending_dir(&self, key: &str) -> PathBuf {
        self.root.join("pending").join(key)
    }

    /// Output folder of a completed entry.
    pub fn out_dir(&self, key: &str) -> PathBuf {
        self.entry_dir(key).join("out")
    }

    /// Read an entry's manifest without verifying outputs.
    pub fn manifest(&self, key: &str) -> Option<Manifest> {
        let text = std::fs::read_to_string(self.entry_dir(key).join(MANIFEST)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Whether a completed entry exists (manifest present).
    pub fn is_done(&self, key: &str) -> bool {
        self.entry_dir(key).join(MANIFEST).is_file()
    }

    /// The entry's manifest if its outputs match their recorded hashes. `Ok(None)` if there is
    /// no entry; `Err` describes the corruption.
    pub fn verify(&self, key: &str) -> Result<Option<Manifest>> {
        let dir = self.entry_dir(key);
        if !dir.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(dir.join(MANIFEST))
            .context("manifest.json is missing or unreadable")?;
        let m: Manifest =
            serde_json::from_str(&text).context("manifest.json is not a valid manifest")?;
        if m.key != key {
            bail!("manifest is for key {} instead", m.key);
        }
        let out = dir.join("out");
        let found = if out.exists() {
            hash_tree(&out)?
        } else {
            Vec::new()
        };
        for (rel, hash, size) in &found {
            match m.outputs.get(rel) {
                None => bail!("unexpected output file `{rel}`"),
                Some(r) if r.blake3 != *hash || r.size != *size => {
                    bail!("output file `{rel}` does not match its hash")
                }
                _ => {}
            }
        }
        if found.len() != m.outputs.len() {
            let have: Vec<&String> = found.iter().map(|f| &f.0).collect();
            let missing: Vec<&String> = m.outputs.keys().filter(|k| !have.contains(k)).collect();
            bail!("output files missing: {missing:?}");
        }
        Ok(Some(m))
    }

    /// Move a (corrupted) entry aside to `<cache>/corrupt/`; returns where it went.
    pub fn quarantine(&self, key: &str) -> Result<PathBuf> {
        let dir = self.root.join("corrupt");
        std::fs::create_dir_all(&dir)?;
        let dst = dir.join(format!("{key}-{}", (now_unix() * 1000.0) as u64));
        std::fs::rename(self.entry_dir(key), &dst)?;
        Ok(dst)
    }

    fn lock_file(&self, key: &str) -> Result<File> {
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let p = dir.join(format!("{key}.lock"));
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .with_context(|| format!("cannot open {}", p.display()))
    }

    /// Try to take the lock of `key` without waiting.
    pub fn try_lock(&self, key: &str) -> Result<Option<KeyLock>> {
        let f = self.lock_file(key)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(KeyLock { _file: f })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// Take the lock of `key`, waiting (and saying so once via `on_wait`) while another run
    /// holds it. Gives up with `Ok(None)` when `stop()` becomes true.
    pub fn lock(
        &self,
        key: &str,
        mut on_wait: impl FnMut(),
        stop: impl Fn() -> bool,
    ) -> Result<Option<KeyLock>> {
        let mut said = false;
        loop {
            if let Some(l) = self.try_lock(key)? {
                return Ok(Some(l));
            }
            if !said {
                on_wait();
                said = true;
            }
            if stop() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Checkpoints of the pending entry of `key`.
    pub fn checkpoints(&self, key: &str) -> DirCheckpoints {
        DirCheckpoints::new(&self.pending_dir(key))
    }

    /// Done, failed, partial or pending.
    pub fn state(&self, key: &str) -> NodeState {
        if self.is_done(key) {
            NodeState::Done
        } else if self.pending_dir(key).join(FAILED).is_file() {
            NodeState::Failed
        } else if self.checkpoints(key).has_state() {
            NodeState::Partial
        } else {
            NodeState::Pending
        }
    }

    /// Keys of all completed entries.
    pub fn entry_keys(&self) -> Vec<String> {
        list_names(&self.root.join("entries"))
    }

    /// Keys with a pending folder.
    pub fn pending_keys(&self) -> Vec<String> {
        list_names(&self.root.join("pending"))
    }

    /// Every item directly inside the shared folders, as a path relative to the root
    /// (`downloads/<name>`), hidden temporaries included, sorted.
    pub fn shared_items(&self) -> Vec<String> {
        let mut v = Vec::new();
        for d in SHARED_DIRS {
            let names = std::fs::read_dir(self.root.join(d))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| format!("{d}/{}", e.file_name().to_string_lossy()));
            v.extend(names);
        }
        v.sort();
        v
    }

    /// Every completed entry's manifest.
    pub fn all_manifests(&self) -> Vec<Manifest> {
        self.entry_keys()
            .iter()
            .filter_map(|k| self.manifest(k))
            .collect()
    }

    /// Prepare the pending folder of `key` for a run (caller holds the lock): keep saved
    /// state (checkpoints, scratch), start with an empty `out/`. Returns the pending folder.
    pub fn begin(&self, key: &str) -> Result<PathBuf> {
        let p = self.pending_dir(key);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        let out = p.join("out");
        if out.exists() {
            std::fs::remove_dir_all(&out)?;
        }
        std::fs::create_dir_all(&out)?;
        let _ = std::fs::remove_file(p.join(FAILED));
        let _ = std::fs::remove_file(p.join(MANIFEST));
        Ok(p)
    }

    /// Record a failed attempt in the pending folder.
    pub fn mark_failed(&self, key: &str, error: &str) {
        let _ = std::fs::write(self.pending_dir(key).join(FAILED), error);
    }

    /// Commit the pending folder of `key` (caller holds the lock): hash outputs, write the
    /// manifest (filling `outputs`), drop saved state, rename into `entries/`.
    pub fn commit(&self, key: &str, mut manifest: Manifest) -> Result<Manifest> {
        let p = self.pending_dir(key);
        manifest.outputs = hash_tree(&p.join("out"))?
            .into_iter()
            .map(|(rel, blake3, size)| (rel, OutputRecord { blake3, size }))
            .collect();
        for sub in ["checkpoints", "scratch"] {
            let d = p.join(sub);
            if d.exists() {
                std::fs::remove_dir_all(&d)?;
            }
        }
        let text = serde_json::to_string_pretty(&manifest)?;
        std::fs::write(p.join(MANIFEST), text)?;
        let entries = self.root.join("entries");
        std::fs::create_dir_all(&entries)?;
        let dst = self.entry_dir(key);
        if dst.exists() {
            // a stale, unverified leftover; keep it for inspection
            self.quarantine(key)?;
        }
        std::fs::rename(&p, &dst)
            .with_context(|| format!("cannot move {} to {}", p.display(), dst.display()))?;
        Ok(manifest)
    }

    /// Total size in bytes of everything under `path`.
    pub fn size_of(path: &Path) -> u64 {
        let md = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => return 0,
        };
        if !md.is_dir() {
            return md.len();
        }
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| Self::size_of(&e.path()))
            .sum()
    }
}

fn list_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

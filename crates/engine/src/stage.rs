//! The contract between the engine and a stage kind: how parameters are validated and
//! resolved, and what a running stage may read (its inputs) and write (its output folder,
//! checkpoints, progress).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A parameter problem found by a stage kind. `path` is the key path inside the stage table
/// (e.g. `["model", "channels"]`; empty = the stage table itself); the engine turns it into
/// file, line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub path: Vec<String>,
    pub message: String,
}

impl ParamError {
    pub fn new(
        path: impl IntoIterator<Item = impl Into<String>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into_iter().map(Into::into).collect(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path.join("."), self.message)
        }
    }
}

/// Deserialize a stage's parameter table into a typed struct (use `#[serde(deny_unknown_fields)]`
/// and `#[serde(default)]` there), reporting the failing key path.
pub fn from_params<T: serde::de::DeserializeOwned>(params: &toml::Table) -> Result<T, ParamError> {
    let de = toml::Value::Table(params.clone());
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = e.into_inner().to_string();
        // serde reports an unknown field at its parent; point at the field itself.
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            if path.last().map(String::as_str) != Some(name) {
                path.push(name.to_string());
            }
        }
        ParamError { path, message }
    })
}

/// A stage rewritten by its kind into a chain (see [`StageKind::expand`]): `links` are new
/// stages of the same kind that run first, each as `(suffix, parameters)`, named
/// `<stage>-<suffix>`; the first link takes the stage's inputs, every next link takes the
/// previous link in place of the first input, and the stage itself (with `params`, the sugar
/// keys removed) takes the last link. Sweeps stay on the stage itself, so a chain prefix is
/// shared by every swept node and is cached on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    pub links: Vec<(String, toml::Table)>,
    pub params: toml::Table,
}

/// What [`StageKind::expand`] may look at besides the stage's own parameters: its inputs and
/// the kind and parameters of any stage of the experiment (before expansion).
pub struct ExpandContext<'a> {
    pub inputs: &'a [String],
    pub stage: &'a dyn Fn(&str) -> Option<(String, toml::Table)>,
}

/// A node's estimated peak memory: bytes and what they are made of (shown when it cannot fit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryNeed {
    pub bytes: u64,
    /// e.g. `weights 1.2 GiB, gradients …, activations at batch 100 …`.
    pub detail: String,
}

/// What a stage kind implements. One module per kind; registered with the engine's registry.
pub trait StageKind: Send + Sync {
    /// The `kind = "..."` name.
    fn name(&self) -> &'static str;
    /// Version of this kind's code: bump it whenever the same parameters would give different
    /// outputs. It joins every node key of this kind.
    fn version(&self) -> &'static str;
    /// Validate the kind-specific parameters (the stage table without the engine's own keys
    /// `kind`, `inputs`, `sweep`, `gather`) and resolve them: fill defaults, normalise, so that
    /// writing a default explicitly gives the same key. Returned JSON is hashed canonically.
    fn resolve(&self, params: &toml::Table) -> Result<serde_json::Value, ParamError>;
    /// Optional sugar: rewrite this stage into a chain of stages of the same kind (e.g. a
    /// distill stage with `assistants` becomes teacher → TA₁ → … → student). `None` keeps the
    /// stage as written. Errors point into the stage's own table.
    fn expand(
        &self,
        _params: &toml::Table,
        _ctx: &ExpandContext,
    ) -> Result<Option<Expansion>, ParamError> {
        Ok(None)
    }
    /// How many threads a node of this kind uses (the scheduler never oversubscribes cores).
    fn threads(&self, _resolved: &serde_json::Value) -> usize {
        1
    }
    /// The fewest threads a node of this kind can be given: the scheduler grants a node
    /// between this and [`StageKind::threads`], fewer when other nodes are ready to share the
    /// cores. Only a kind whose results do not depend on its thread count may return less
    /// than `threads` (the default: a fixed count).
    fn min_threads(&self, resolved: &serde_json::Value) -> usize {
        self.threads(resolved)
    }
    /// Estimated peak memory of a node of this kind, computed just before it starts, when its
    /// inputs are complete (their metrics and folders readable). The scheduler never starts
    /// nodes whose estimates together exceed the memory budget and fails a node whose
    /// estimate alone does (see [`crate::memory`]). `None`: unknown, not counted.
    fn memory(
        &self,
        _resolved: &serde_json::Value,
        _inputs: &[InputArtifact],
    ) -> Option<MemoryNeed> {
        None
    }
    /// Extra bytes that join the key, computed from outside the parameters (e.g. content hashes
    /// of files a command depends on, a device fingerprint). `dir` is the experiment file's folder.
    fn extra_key(&self, _resolved: &serde_json::Value, _dir: &Path) -> anyhow::Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Files outside its entry that a node of this kind reads or writes and other nodes may
    /// share: paths relative to the cache root, under one of [`crate::cache::SHARED_DIRS`]
    /// (e.g. `downloads/<sha256>-archive.tar.gz`). `inputs` are the (kind, key) of its inputs
    /// in order. `gc` keeps the files its referenced nodes name and removes the others.
    fn shared_files(&self, _resolved: &serde_json::Value, _inputs: &[(&str, &str)]) -> Vec<String> {
        Vec::new()
    }
    /// Run the node: read inputs, write outputs into `ctx.out_dir`, return metrics (a JSON object).
    fn run(&self, ctx: &RunContext) -> anyhow::Result<serde_json::Value>;
}

/// One input of a running node: the output folder of a completed upstream node.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    /// Upstream stage name (as in the TOML).
    pub stage: String,
    /// Upstream node name (e.g. `pit[lambda=1e-5]`).
    pub node: String,
    /// Upstream stage kind.
    pub kind: String,
    /// Upstream node key (hex).
    pub key: String,
    /// Folder holding its output files.
    pub dir: PathBuf,
    /// Its resolved parameters.
    pub params: serde_json::Value,
    /// Its metrics.
    pub metrics: serde_json::Value,
}

/// Cooperative cancellation (Ctrl-C): long stages check it between steps, save a checkpoint
/// and return an error.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Progress of one node; shown as a bar on a terminal, as log lines otherwise.
pub trait Progress: Send + Sync {
    fn set_length(&self, len: u64);
    fn set_position(&self, pos: u64);
    fn set_message(&self, msg: &str);
}

/// Checkpoints of one node, kept in its pending folder so an interrupted run resumes.
pub trait Checkpoints: Send + Sync {
    /// Write checkpoint number `step`: `write` fills the given (empty) folder; the checkpoint
    /// becomes visible atomically only once `write` succeeded. Older checkpoints may be pruned.
    fn save(
        &self,
        step: u64,
        write: &mut dyn FnMut(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()>;
    /// The newest complete checkpoint, if any: (step, folder).
    fn latest(&self) -> Option<(u64, PathBuf)>;
    /// A folder that survives interruption, for stages that manage their own resume state
    /// (the `command` kind passes it as `WHITTLE_CHECKPOINTS`). `None` if not supported.
    fn scratch_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// Everything a running node may see.
pub struct RunContext<'a> {
    /// Node name, e.g. `pit[lambda=1e-5]`.
    pub node: &'a str,
    /// Stage name from the TOML, e.g. `pit`.
    pub stage: &'a str,
    /// Node key (hex).
    pub key: &'a str,
    /// Resolved parameters (what [`StageKind::resolve`] returned, sweep values substituted).
    pub params: &'a serde_json::Value,
    /// The experiment seed.
    pub seed: u64,
    /// Inputs in the order of the stage's `inputs` list (a gathered stage gets every node).
    pub inputs: &'a [InputArtifact],
    /// Folder to write outputs into (inside the pending entry).
    pub out_dir: &'a Path,
    /// Folder of the experiment file (working directory for relative paths).
    pub experiment_dir: &'a Path,
    /// Threads granted to this node.
    pub threads: usize,
    pub checkpoints: &'a dyn Checkpoints,
    pub cancel: &'a CancelToken,
    pub progress: &'a dyn Progress,
}

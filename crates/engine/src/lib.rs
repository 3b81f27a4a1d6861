//! The whittle engine: experiment TOML → DAG of nodes → content-addressed, resumable runs.
//!
//! It knows nothing about neural networks: a stage is a kind name ([`StageKind`]), its
//! parameters, its input artifacts (folders of other nodes) and its output folder.
//!
//! Typical use: [`load_plan`] (parse + validate + expand + keys), then [`run`] against a
//! [`Cache`]; [`status`], [`why`] and [`Cache::manifest`] answer questions about a plan.

pub mod cache;
pub mod canon;
pub mod checkpoints;
pub mod command;
pub mod cpu;
pub mod experiment;
pub mod hash;
pub mod locate;
pub mod memory;
pub mod plan;
pub mod progress;
pub mod query;
pub mod registry;
pub mod scheduler;
pub mod slurm;
pub mod stage;

pub use cache::{Cache, Manifest, NodeState};
pub use experiment::{Experiment, ExperimentError, StageDef};
pub use plan::{Node, Plan};
pub use progress::Reporter;
pub use query::{StatusRow, load_plan, manifests, status, why};
pub use registry::Registry;
pub use scheduler::{RunOptions, RunSummary, run, run_node, run_with_budget};
pub use stage::{
    CancelToken, Checkpoints, ExpandContext, Expansion, InputArtifact, MemoryNeed, ParamError,
    Progress, RunContext, StageKind, from_params,
};

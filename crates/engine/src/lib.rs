//! The whittle engine: experiment TOML → DAG of nodes → content-addressed, resumable runs.
//!
//! It knows nothing about neural networks: a stage is a kind name ([`StageKind`]), its
//! parameters, its input artifacts (folders of other nodes) and its output folder.
//!
//! Typical use: [`load_plan`] (parse + validate + expand + keys), then [`run`] against a
//! [`Cache`]; [`status`], [`why`] and [`Cache::manifest`] answer questions about a plan.
//! A plan with dynamic fan-out (`for_each`) grows as its sources complete: [`run_rounds`]
//! and [`load_plan_cached`].

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
pub use plan::{Deferred, Node, Plan};
pub use progress::Reporter;
pub use query::{StatusRow, load_plan, load_plan_cached, manifests, status, why};
pub use registry::Registry;
pub use scheduler::{RunOptions, RunSummary, run, run_node, run_rounds, run_with_budget};
pub use stage::{
    CancelToken, Checkpoints, ExpandContext, Expansion, InputArtifact, MemoryNeed, ParamError,
    Progress, RunContext, StageKind, from_params,
};

//! The whittle engine: experiment TOML → DAG of nodes → content-addressed, resumable runs.
//!
//! It knows nothing about neural networks: a stage is a kind name ([`StageKind`]), its
//! parameters, its input artifacts (folders of other nodes) and its output folder.

pub mod stage;

pub use stage::{
    CancelToken, Checkpoints, InputArtifact, ParamError, Progress, RunContext, StageKind,
    from_params,
};

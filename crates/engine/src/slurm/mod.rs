//! Slurm as an executor: whittle stays the planner and the cache, Slurm runs the nodes.
//!
//! The controller (`whittle run --executor slurm`) runs the usual scheduling loop; a ready
//! node that is not cached becomes an `sbatch` job whose script runs `whittle exec-node
//! <batch>`, which executes exactly that node (by key) and commits it to the cache on the
//! shared filesystem. Ready nodes of one stage dispatched together go as one job array.
//!
//! - **Completion comes from the cache**: a node is done when its entry is committed; job
//!   states come from one `squeue` call per poll (ended jobs stay visible there for
//!   `MinJobAge`), then `sacct` when accounting is enabled. A job that ends without committing
//!   fails its node with the Slurm state, the error the job recorded, and the tail of its log;
//!   only its descendants are skipped.
//! - **Interruption**: Ctrl-C cancels the submitted jobs (`scancel`: Slurm sends SIGTERM, the
//!   job saves its checkpoint like a local run does) or, with `keep_jobs`, leaves them running.
//!   A rerun adopts jobs still queued or running (by job name, see [`jobs`]) and never
//!   submits a node twice; a cancelled node resumes from its checkpoint in its next job.
//! - **Locks**: the per-key lock is taken by the job, not the controller, with `flock`. On
//!   NFS, Linux maps `flock` to POSIX byte-range locks (NFSv4 or NLM), which are exclusive
//!   across clients; a lock held by a crashed client is released when its lease expires.
//!   Commits are a `rename` within the cache folder, atomic on NFS too. Two controllers of
//!   the same experiment at once can both submit a node: the second job waits for the lock
//!   and then finds the entry (correct, but a wasted allocation).

pub mod config;
mod executor;
pub mod jobs;
pub mod sys;

pub use config::{ExecutorConfig, ExecutorKind, StageResources};
pub use executor::{SlurmOptions, run};
pub use jobs::{Batch, JobRecord};

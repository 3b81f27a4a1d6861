//! Reports of whittle: Pareto fronts, Markdown tables, SVG plots, diffs. Reads metrics and
//! manifests (as [`model::Document`]), never models.

mod arch;
pub mod calibration;
mod channels;
pub mod diff;
mod distill;
mod formats;
mod fronts;
mod full;
mod ladder;
mod laws;
pub mod lineage;
pub mod model;
pub mod pareto;
pub mod render;
mod shipped;
pub mod svg;
pub mod table;
mod tasks;
pub mod warnings;

pub use diff::{Diff, diff};
pub use model::{Constraints, Document, Metric, ModelRow, NodeRecord, Provenance, ReportOptions};
pub use render::{Rendered, render};

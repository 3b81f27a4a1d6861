//! Reports of whittle: Pareto fronts, Markdown tables, SVG plots, diffs. Reads metrics and
//! manifests (as [`model::Document`]), never models.

pub mod calibration;
pub mod diff;
pub mod model;
pub mod pareto;
pub mod render;
pub mod svg;
pub mod table;

pub use diff::{Diff, diff};
pub use model::{Constraints, Document, ModelRow, NodeRecord, Provenance};
pub use render::{Rendered, render};

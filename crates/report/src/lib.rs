//! Reports of whittle: Pareto fronts, Markdown tables, SVG plots, diffs. Reads metrics and
//! manifests, never models.

pub mod pareto;
pub mod svg;
pub mod table;

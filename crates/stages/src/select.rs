//! The `select` stage kind (`004` §4, issue 19): per constraint cell, the top-k candidates of
//! a `space` input that satisfy every limit of the cell (params, MACs, stored weight bytes in
//! `format`, peak activation bytes, latency in ms: measured when timed, else predicted), by a
//! proxy: `workload` (the k largest MAC counts within budget, ties to more parameters, then
//! the lower id) or `spread` (k candidates spread evenly over the parameter range of the
//! feasible ones, smallest to largest).
//!
//! Output: `selected.json`, a JSON array of child configurations, each an object usable as the
//! `model` table of a `train` stage (a candidate chosen in several cells appears once), the
//! same array as `children.json` (what a stage with `for_each = "<this stage>"` fans out
//! over: one node per child, see `whittle_engine::plan`), and
//! `selection.json`: per cell its limits, feasible count and the chosen candidates with the
//! index of their child in `selected.json`; and per child its candidate id and values.

use crate::space::{CandidateRow, SpaceOutput};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_engine::{ParamError, RunContext, StageKind, from_params};
use whittle_nn::quant::Format;
use whittle_nn::space::Space;

/// One constraint cell: every limit given must hold (≤).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs: Option<u64>,
    /// Stored weight bytes in the stage's `format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_activation_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectParams {
    pub cells: Vec<Cell>,
    #[serde(default = "three")]
    pub k: usize,
    /// `workload` or `spread`.
    #[serde(default = "workload")]
    pub proxy: String,
    /// Format of the `weight_bytes` limits (one of the space stage's `formats`).
    #[serde(default = "fp32")]
    pub format: String,
}

fn three() -> usize {
    3
}
fn workload() -> String {
    "workload".into()
}
fn fp32() -> String {
    "fp32".into()
}

pub struct Select;

impl StageKind for Select {
    fn name(&self) -> &'static str {
        "select"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let mut p: SelectParams = from_params(params)?;
        if p.cells.is_empty() {
            return Err(ParamError::new(
                ["cells"],
                "`cells` needs at least one constraint cell, e.g. [{ weight_bytes = 20000 }]",
            ));
        }
        for (i, c) in p.cells.iter().enumerate() {
            if c == &Cell::default_empty() {
                return Err(ParamError::new(
                    ["cells".to_string(), i.to_string()],
                    "a cell needs at least one limit: params, macs, weight_bytes, peak_activation_bytes or latency_ms",
                ));
            }
            if c.latency_ms.is_some_and(|l| l.is_nan() || l <= 0.0) {
                return Err(ParamError::new(
                    ["cells".to_string(), i.to_string(), "latency_ms".to_string()],
                    "`latency_ms` must be > 0",
                ));
            }
        }
        if p.k == 0 {
            return Err(ParamError::new(["k"], "`k` must be ≥ 1"));
        }
        if p.proxy != "workload" && p.proxy != "spread" {
            return Err(ParamError::new(
                ["proxy"],
                format!(
                    "unknown proxy `{}`: expected \"workload\" or \"spread\"",
                    p.proxy
                ),
            ));
        }
        p.format = Format::parse(&p.format)
            .map_err(|e| ParamError::new(["format"], e))?
            .name();
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: SelectParams = serde_json::from_value(ctx.params.clone())?;
        let input = crate::common::input_of_kind(ctx, &["space"])?;
        let path = input.dir.join("space.json");
        let out: SpaceOutput = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        let space = Space::new(out.space.clone())?;
        if let Some(c) = out.candidates.first()
            && !c.weight_bytes.contains_key(&p.format)
        {
            let have: Vec<&String> = c.weight_bytes.keys().collect();
            bail!(
                "stage `{}`: format `{}` is not among the weight-byte formats of `{}` ({have:?}); add it to its `formats`",
                ctx.stage,
                p.format,
                input.stage
            );
        }
        let mut children: Vec<usize> = vec![];
        let mut cells = vec![];
        for cell in &p.cells {
            let feasible = feasible(&out.candidates, cell, &p.format)
                .with_context(|| format!("stage `{}`", ctx.stage))?;
            let chosen = pick(&feasible, p.k, &p.proxy);
            if chosen.is_empty() {
                tracing::warn!(stage = ctx.stage, ?cell, "no candidate fits the cell");
            }
            let rows: Vec<Value> = chosen
                .iter()
                .map(|c| {
                    let child = children.iter().position(|&x| x == c.id).unwrap_or_else(|| {
                        children.push(c.id);
                        children.len() - 1
                    });
                    json!({
                        "candidate": c.id,
                        "child": child,
                        "params": c.params,
                        "macs": c.macs,
                        "weight_bytes": c.weight_bytes[&p.format],
                        "peak_activation_bytes": c.peak_activation_bytes,
                        "latency_ms": c.latency_ms.or(c.predicted_latency_ms),
                    })
                })
                .collect();
            cells.push(json!({ "cell": cell, "feasible": feasible.len(), "selected": rows }));
        }
        let tables: Vec<Value> = children
            .iter()
            .map(|&id| space.model_table(&out.candidates[id].values))
            .collect();
        let child_rows: Vec<Value> = children
            .iter()
            .map(|&id| {
                let c = &out.candidates[id];
                json!({ "candidate": id, "law": c.law, "values": space.named(&c.values) })
            })
            .collect();
        let tables = serde_json::to_vec_pretty(&tables)?;
        std::fs::write(ctx.out_dir.join("selected.json"), &tables)?;
        std::fs::write(
            ctx.out_dir.join(whittle_engine::plan::CHILDREN_FILE),
            &tables,
        )?;
        std::fs::write(
            ctx.out_dir.join("selection.json"),
            serde_json::to_vec_pretty(&json!({ "cells": cells, "children": child_rows }))?,
        )?;
        Ok(json!({
            "children": children.len(),
            "cells": cells.iter().map(|c| json!({
                "cell": c["cell"],
                "feasible": c["feasible"],
                "candidates": c["selected"].as_array().map(|a| a.iter().map(|r| r["candidate"].clone()).collect::<Vec<_>>()),
            })).collect::<Vec<_>>(),
        }))
    }
}

impl Cell {
    fn default_empty() -> Cell {
        Cell {
            params: None,
            macs: None,
            weight_bytes: None,
            peak_activation_bytes: None,
            latency_ms: None,
        }
    }
}

/// The candidates within every limit of `cell`; an error when a latency limit is asked of
/// candidates without a measured or predicted latency.
pub fn feasible<'a>(
    cands: &'a [CandidateRow],
    cell: &Cell,
    format: &str,
) -> Result<Vec<&'a CandidateRow>> {
    let mut out = vec![];
    for c in cands {
        let lat = c.latency_ms.or(c.predicted_latency_ms);
        if cell.latency_ms.is_some() && lat.is_none() {
            bail!(
                "a cell limits `latency_ms`, but candidate {} has no measured or predicted latency (set `time` in the space stage)",
                c.id
            );
        }
        let ok = cell.params.is_none_or(|v| c.params <= v)
            && cell.macs.is_none_or(|v| c.macs <= v)
            && cell
                .weight_bytes
                .is_none_or(|v| c.weight_bytes.get(format).is_some_and(|&b| b <= v))
            && cell
                .peak_activation_bytes
                .is_none_or(|v| c.peak_activation_bytes <= v)
            && cell.latency_ms.is_none_or(|v| lat.is_some_and(|l| l <= v));
        if ok {
            out.push(c);
        }
    }
    Ok(out)
}

/// The top `k` of `feasible` by `proxy` (see the module doc).
pub fn pick<'a>(feasible: &[&'a CandidateRow], k: usize, proxy: &str) -> Vec<&'a CandidateRow> {
    let mut v = feasible.to_vec();
    if proxy == "spread" {
        v.sort_by_key(|c| (c.params, c.macs, c.id));
        if v.len() <= k {
            return v;
        }
        let m = v.len() - 1;
        let mut idx: Vec<usize> = if k == 1 {
            vec![m]
        } else {
            (0..k).map(|j| (j * m + (k - 1) / 2) / (k - 1)).collect()
        };
        idx.dedup();
        return idx.into_iter().map(|i| v[i]).collect();
    }
    v.sort_by(|a, b| {
        b.macs
            .cmp(&a.macs)
            .then(b.params.cmp(&a.params))
            .then(a.id.cmp(&b.id))
    });
    v.truncate(k);
    v
}

#[cfg(test)]
#[path = "space_tests.rs"]
mod tests;

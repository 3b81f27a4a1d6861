//! The `export` stage kind: for every input network (BN folded), writes ONNX float, ONNX int8
//! QDQ (activation ranges calibrated on training inputs), a C header + source with int8
//! weights, and safetensors + JSON architecture into `<out>/<network>/`; metrics list the
//! files with their sizes.

use crate::common::{NETWORK_KINDS, load_data, with_threads};
use crate::to_export::to_network;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use whittle_engine::{ParamError, RunContext, StageKind, from_params};
use whittle_export::{Batch, Int8Params, write_c, write_onnx_with, write_safetensors};
use whittle_nn::Model;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Training inputs used to calibrate the int8 activation ranges (min/max).
    #[serde(default = "fifty")]
    pub calibration_samples: usize,
    /// ONNX files with the batch axis fixed at 1 (for toolchains that need static shapes)
    /// instead of a symbolic `batch` dimension. The C export always runs one item per call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub static_batch: bool,
}

fn fifty() -> usize {
    50
}

pub struct Export;

/// A C identifier / file stem from a node name (`pit[lambda=1e-5]` → `pit_lambda_1e_5`).
pub fn file_stem(node: &str) -> String {
    let mut s: String = node
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    while s.contains("__") {
        s = s.replace("__", "_");
    }
    let s = s.trim_matches('_').to_string();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("net_{s}")
    } else {
        s
    }
}

impl StageKind for Export {
    fn name(&self) -> &'static str {
        "export"
    }

    fn version(&self) -> &'static str {
        // 2: ONNX files declare a symbolic batch axis
        "2"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let p: ExportParams = from_params(params)?;
        if p.calibration_samples == 0 {
            return Err(ParamError::new(["calibration_samples"], "must be ≥ 1"));
        }
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: ExportParams = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || {
            let mut nets = Vec::new();
            let mut stems: BTreeMap<String, &str> = BTreeMap::new();
            for input in ctx
                .inputs
                .iter()
                .filter(|i| NETWORK_KINDS.contains(&i.kind.as_str()))
            {
                let stem = file_stem(&input.node);
                if let Some(other) = stems.insert(stem.clone(), &input.node) {
                    bail!(
                        "stage `{}`: networks `{other}` and `{}` would both be exported to `{stem}/`",
                        ctx.stage,
                        input.node
                    );
                }
                let files = export_one(ctx, &p, &input.dir, &input.node)
                    .with_context(|| format!("exporting `{}`", input.node))?;
                nets.push(json!({ "parent": input.node, "files": files }));
            }
            ensure!(
                !nets.is_empty(),
                "stage `{}` needs at least one network input (kinds {})",
                ctx.stage,
                NETWORK_KINDS.join(", ")
            );
            Ok(json!({ "exports": nets }))
        })
    }
}

fn export_one(ctx: &RunContext, p: &ExportParams, dir: &Path, node: &str) -> Result<Vec<Value>> {
    let m = Model::load(dir)?;
    let model = if m.bn_folded() { m } else { m.fold_bn()? };
    let stem = file_stem(node);
    let net = to_network(&model, &stem)?;
    let out = ctx.out_dir.join(&stem);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let (data, _) = load_data(ctx, model.config())?;
    let n = p.calibration_samples.min(data.train.len());
    let per: usize = model.graph().input_shape.iter().product();
    let xs: Vec<f32> = data.train.x.narrow(0, 0, n)?.flatten_all()?.to_vec1()?;
    let calib: Vec<Vec<f32>> = xs.chunks(per).map(<[f32]>::to_vec).collect();
    let params = Int8Params::calibrate(&net, &calib)?;
    let float = out.join(format!("{stem}.onnx"));
    let batch = if p.static_batch {
        Batch::One
    } else {
        Batch::Dynamic
    };
    write_onnx_with(&net, None, batch, &float)?;
    let int8 = out.join(format!("{stem}_int8.onnx"));
    write_onnx_with(&net, Some(&params), batch, &int8)?;
    let (h, c) = write_c(&net, &params, &out, &stem)?;
    let (st, js) = write_safetensors(&net, &out, &stem)?;
    [
        ("onnx", float),
        ("onnx_int8_qdq", int8),
        ("c_header", h),
        ("c_source", c),
        ("safetensors", st),
        ("architecture_json", js),
    ]
    .into_iter()
    .map(|(kind, path)| {
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        let rel = path.strip_prefix(ctx.out_dir).unwrap_or(&path);
        Ok(json!({ "kind": kind, "path": rel, "bytes": bytes }))
    })
    .collect()
}

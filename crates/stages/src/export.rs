//! The `export` stage kind: for every input network (BN folded), writes ONNX float, ONNX int8
//! QDQ, a C header + source with int8 weights, and safetensors + JSON architecture into
//! `<out>/<network>/`. The int8 network is the one the `quantize` stage evaluates
//! (`crate::int8`: same seeded stratified calibration set, observer and int32 biases; a QAT
//! network's own `int8.json`). Then every file is run on the test split (`crate::shipped`) and
//! its metric recorded beside the in-process number, with the count of predictions that
//! differ; metrics list the files with their sizes.

use crate::common::{NETWORK_KINDS, with_threads};
use crate::shipped;
use crate::to_export::to_network;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use whittle_engine::InputArtifact;
use whittle_engine::{ParamError, RunContext, StageKind, from_params};
use whittle_export::{Batch, write_c, write_onnx_with, write_safetensors};
use whittle_nn::Model;
use whittle_nn::quant::{Format, QuantModel, QuantOptions};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Training inputs (a seeded stratified choice) that calibrate the int8 activation ranges;
    /// the defaults are the `quantize` stage's, so both hold the same int8 network.
    #[serde(default = "crate::int8::default_samples")]
    pub calibration_samples: usize,
    #[serde(default = "crate::int8::default_observer")]
    pub observer: String,
    #[serde(default = "crate::int8::default_percentile")]
    pub percentile: f64,
    /// Run every exported file on the test split and record its metric (default true).
    #[serde(default = "yes")]
    pub evaluate: bool,
    /// ONNX files with the batch axis fixed at 1 (for toolchains that need static shapes)
    /// instead of a symbolic `batch` dimension. The C export always runs one item per call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub static_batch: bool,
    /// Weight formats of extra C exports with packed weights and float activations (`w2`…`w7`,
    /// `float(w,t)`, `fp16`, `bf16`): `<network>_<format>.h/.c`. A network fine-tuned by a `qat`
    /// stage for `wK` gets its own format's file without being listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_formats: Vec<String>,
    /// As `quantize`: k-bit weight-only formats keep the first and last layer at 8 bits.
    #[serde(default = "yes")]
    pub keep_first_last_8bit: bool,
}

fn yes() -> bool {
    true
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
        // 3: the quantize stage's int8 network (calibration, int32 biases); files evaluated;
        //    packed-weight C exports
        "3"
    }

    /// Two threads for the shipped-file runs (two C processes, tract's batches); one is enough
    /// and gives the same numbers.
    fn threads(&self, _resolved: &Value) -> usize {
        2
    }

    fn min_threads(&self, _resolved: &Value) -> usize {
        1
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let p: ExportParams = from_params(params)?;
        crate::int8::check_calibration(p.calibration_samples, &p.observer, p.percentile)?;
        let mut p = p;
        for (i, f) in p.weight_formats.iter_mut().enumerate() {
            let at = || vec!["weight_formats".to_string(), i.to_string()];
            let fmt = Format::parse(f).map_err(|m| ParamError::new(at(), m))?;
            if matches!(fmt, Format::Int8) || fmt.weight_bits() > 16 {
                return Err(ParamError::new(
                    at(),
                    format!(
                        "`{}` has no packed C export: int8 is the main C export, and only weights of at most 16 bits are packed",
                        fmt.name()
                    ),
                ));
            }
            *f = fmt.name();
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
                let (files, shipped) = export_one(ctx, &p, input)
                    .with_context(|| format!("exporting `{}`", input.node))?;
                let mut e = json!({ "parent": input.node, "files": files });
                if let Some(s) = shipped {
                    e["shipped"] = s;
                }
                nets.push(e);
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

/// The weight formats to export `input` in as packed C: the stage's list, plus the format a
/// `qat` stage fine-tuned the network for when that is a weight-only one (`w4+qat` → `w4`).
fn packed_formats(p: &ExportParams, input: &InputArtifact) -> Result<Vec<Format>> {
    let mut out: Vec<Format> = p
        .weight_formats
        .iter()
        .map(|f| Format::parse(f).map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let qat = input
        .metrics
        .get("models")
        .and_then(|m| m.get(0))
        .and_then(|r| r.get("format"))
        .and_then(Value::as_str)
        .and_then(|f| f.strip_suffix("+qat"))
        .and_then(|f| Format::parse(f).ok());
    if input.kind == "qat"
        && let Some(f @ Format::WeightOnly(_)) = qat
        && !out.contains(&f)
    {
        out.push(f);
    }
    Ok(out)
}

fn export_one(
    ctx: &RunContext,
    p: &ExportParams,
    input: &InputArtifact,
) -> Result<(Vec<Value>, Option<Value>)> {
    let (dir, node) = (input.dir.as_path(), input.node.as_str());
    let m = Model::load(dir)?;
    let model = if m.bn_folded() { m } else { m.fold_bn()? };
    let stem = file_stem(node);
    let net = to_network(&model, &stem)?;
    let out = ctx.out_dir.join(&stem);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let (data, ds) = crate::task::load_data(ctx, model.config())?;
    let calib = crate::int8::calibration_inputs(&data.train, p.calibration_samples, ctx.seed)?;
    let opts = QuantOptions {
        observer: crate::int8::observer_kind(&p.observer, p.percentile),
        ..QuantOptions::default()
    };
    let q = crate::int8::int8_model(&model, Some(dir), &calib, &opts)?;
    let params = crate::int8::export_params(&q)?;
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
    let mut written: Vec<(String, Option<String>, std::path::PathBuf)> = [
        ("onnx", float.clone()),
        ("onnx_int8_qdq", int8.clone()),
        ("c_header", h),
        ("c_source", c),
        ("safetensors", st),
        ("architecture_json", js),
    ]
    .into_iter()
    .map(|(k, p)| (k.to_string(), None, p))
    .collect();
    let packed = packed_formats(p, input)?;
    let mut packed_stems = Vec::new();
    for &fmt in &packed {
        let pstem = file_stem(&format!("{stem}_{}", fmt.name()));
        for (kind, path) in
            crate::packed::write_packed(&model, fmt, p.keep_first_last_8bit, &out, &pstem)?
        {
            written.push((kind, Some(fmt.name()), path));
        }
        packed_stems.push((fmt, pstem));
    }
    let files = written
        .into_iter()
        .map(|(kind, format, path)| {
            let bytes = std::fs::metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            let rel = path.strip_prefix(ctx.out_dir).unwrap_or(&path);
            let mut f = json!({ "kind": kind, "path": rel, "bytes": bytes });
            if let Some(fmt) = format {
                f["format"] = json!(fmt);
            }
            Ok(f)
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(test) = data
        .test
        .as_ref()
        .or(data.val.as_ref())
        .filter(|_| p.evaluate)
    else {
        return Ok((files, None));
    };
    let _span = tracing::info_span!("shipped", network = node).entered();
    let item = model.graph().input_shape.clone();
    let b = if p.static_batch { 1 } else { 100 };
    let mut rows = Vec::new();
    let m =
        |a: &str, net: Result<Option<shipped::FileNet>>, r: &dyn whittle_nn::train::Trainable| {
            shipped::measure(a, net, r, &data, &ds, test)
        };
    rows.push(m(
        "onnx",
        shipped::onnx_net(&float, &item, b).map(Some),
        &model,
    ));
    rows.push(m(
        "onnx_int8_qdq",
        shipped::onnx_net(&int8, &item, b).map(Some),
        &q,
    ));
    let work = ctx.out_dir.join(format!(".eval_{stem}"));
    let int8_c = shipped::CRuntime::Int8(params.get(&net.output)?);
    rows.push(m(
        "c_int8",
        shipped::c_net(&out, &stem, &work, &item, int8_c, ctx.threads),
        &q,
    ));
    for (fmt, pstem) in &packed_stems {
        let qopts = QuantOptions {
            keep_first_last_8bit: p.keep_first_last_8bit,
            ..opts
        };
        let reference = QuantModel::prepare(&model, *fmt, None, &qopts)?;
        let c = shipped::c_net(
            &out,
            pstem,
            &work,
            &item,
            shipped::CRuntime::Float,
            ctx.threads,
        );
        let mut r = m("c_packed", c, &reference);
        r["format"] = json!(fmt.name());
        rows.push(r);
    }
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let metric = if ds.task == whittle_data::Task::AnomalyDetection {
        "auc"
    } else {
        "accuracy"
    };
    Ok((files, Some(json!({ "metric": metric, "files": rows }))))
}

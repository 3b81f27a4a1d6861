//! The `space` stage kind (`004`, issue 19): samples candidates of a narrow space from its
//! sampling laws, computes their analytic costs without training (params, MACs, FLOPs, weight
//! bytes per format, peak activation bytes at batch 1), optionally times a few of them
//! untrained at batch 1 on the host (warm-up, timed runs, passes in seeded shuffled order, the
//! median; as the `calibrate` stage does) and fits the latency predictor (log-latency on
//! log-FLOPs and on log-params, scored on held-out timed candidates), then predicts every
//! candidate's latency.
//!
//! Laws: `law = "full"` (default: each variable uniform over its bounds), one written law
//! `law = { c1 = [4, 32], k1 = [3, 5] }`, several `law = [{ … }, { … }]`, or `law = "ga"`:
//! `004`'s genetic design, one run per target band of `metric` sliding over [1, 2, 5] × 10^d
//! for d in `decades` = [from, to), keeping `ga.k` laws per band. `samples` candidates are
//! split evenly over the laws; a candidate drawn twice is kept once.
//!
//! The input shape and class count come from a `fetch` input when there is one (else from
//! the space table). Output: `space.json` (see [`SpaceOutput`]), read by the `select` stage.

use crate::common::with_threads;
use crate::latency::{shuffled, stats, time_runs};
use crate::model_spec::ModelSpec;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use whittle_engine::{ParamError, RunContext, StageKind, from_params};
use whittle_nn::Model;
use whittle_nn::quant::Format;
use whittle_nn::space::families::Space;
use whittle_nn::space::ga::{self, GaConfig};
use whittle_nn::space::predict::LatencyPredictor;
use whittle_nn::space::{Costs, Law, Metric, SpaceConfig, sample_many};

/// How the laws are given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LawSpec {
    /// `"full"` or `"ga"`.
    Word(String),
    One(BTreeMap<String, [u32; 2]>),
    Many(Vec<BTreeMap<String, [u32; 2]>>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceParams {
    pub space: SpaceConfig,
    #[serde(default = "full")]
    pub law: LawSpec,
    #[serde(default = "ten_thousand")]
    pub samples: usize,
    /// GA settings (`law = "ga"`).
    #[serde(default)]
    pub ga: GaConfig,
    /// GA metric: params, macs, flops, weight_bytes, peak_activation_bytes.
    #[serde(default = "params")]
    pub metric: String,
    /// Format of the `weight_bytes` / `peak_activation_bytes` metric.
    #[serde(default = "fp32")]
    pub metric_format: String,
    /// Decades [from, to) of the GA's target bands.
    #[serde(default = "decades")]
    pub decades: [i32; 2],
    /// Formats whose weight bytes every candidate lists.
    #[serde(default = "formats")]
    pub formats: Vec<String>,
    /// Candidates timed untrained at batch 1 (0: none, no predictor).
    #[serde(default)]
    pub time: usize,
    #[serde(default = "three")]
    pub warmup: usize,
    #[serde(default = "ten")]
    pub runs: usize,
    #[serde(default = "two")]
    pub passes: usize,
    /// Fraction of the timed candidates held out of the predictor fit.
    #[serde(default = "quarter")]
    pub holdout: f64,
    #[serde(default = "one")]
    pub threads: usize,
}

fn full() -> LawSpec {
    LawSpec::Word("full".into())
}
fn ten_thousand() -> usize {
    10_000
}
fn params() -> String {
    "params".into()
}
fn fp32() -> String {
    "fp32".into()
}
fn decades() -> [i32; 2] {
    [3, 6]
}
fn formats() -> Vec<String> {
    vec!["fp32".into(), "fp16".into(), "float(4,3)".into()]
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn ten() -> usize {
    10
}
fn quarter() -> f64 {
    0.25
}

fn perr(path: &[&str], m: impl Into<String>) -> ParamError {
    ParamError::new(path.iter().map(|s| s.to_string()), m)
}

impl SpaceParams {
    fn metric(&self) -> Result<Metric, ParamError> {
        let bits = Format::parse(&self.metric_format)
            .map_err(|e| perr(&["metric_format"], e))?
            .weight_bits();
        Ok(match self.metric.as_str() {
            "params" => Metric::Params,
            "macs" => Metric::Macs,
            "flops" => Metric::Flops,
            "weight_bytes" => Metric::WeightBytes(bits),
            "peak_activation_bytes" => Metric::PeakActivationBytes(bits),
            m => {
                return Err(perr(
                    &["metric"],
                    format!(
                        "unknown metric `{m}`: expected params, macs, flops, weight_bytes or peak_activation_bytes"
                    ),
                ));
            }
        })
    }
}

/// One sampled candidate in `space.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CandidateRow {
    pub id: usize,
    /// Index into `laws`.
    pub law: usize,
    /// One value per variable, in `variables` order.
    pub values: Vec<u32>,
    pub params: u64,
    pub macs: u64,
    pub flops: u64,
    /// Stored weight bytes per format name.
    pub weight_bytes: BTreeMap<String, u64>,
    /// fp32 peak activation bytes at batch 1.
    pub peak_activation_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_latency_ms: Option<f64>,
}

/// `space.json`: the space, its variables, the laws, the candidates and the predictor fit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpaceOutput {
    pub space: SpaceConfig,
    pub variables: Vec<String>,
    pub laws: Vec<Value>,
    pub candidates: Vec<CandidateRow>,
    pub predictor: Option<Value>,
}

pub struct SpaceStage;

impl StageKind for SpaceStage {
    fn name(&self) -> &'static str {
        "space"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let p: SpaceParams = from_params(params)?;
        let space = Space::new(p.space.clone()).map_err(|e| perr(&["space"], format!("{e:#}")))?;
        laws_of(&p, &space, None)?;
        p.metric()?;
        p.ga.check().map_err(|e| perr(&["ga"], e))?;
        for (i, f) in p.formats.iter().enumerate() {
            Format::parse(f)
                .map_err(|e| ParamError::new(["formats".to_string(), i.to_string()], e))?;
        }
        if p.samples == 0 {
            return Err(perr(&["samples"], "`samples` must be ≥ 1"));
        }
        if p.decades[0] >= p.decades[1] {
            return Err(perr(
                &["decades"],
                format!(
                    "`decades` = {:?} must be [from, to) with from < to",
                    p.decades
                ),
            ));
        }
        if p.time > 0 && (p.runs == 0 || p.passes == 0) {
            return Err(perr(
                &[],
                "`runs` and `passes` must be ≥ 1 to time candidates",
            ));
        }
        if !(p.holdout > 0.0 && p.holdout < 1.0) {
            return Err(perr(
                &["holdout"],
                format!("`holdout` must be in (0, 1), got {}", p.holdout),
            ));
        }
        serde_json::to_value(p).map_err(|e| perr(&[], e.to_string()))
    }

    fn threads(&self, resolved: &Value) -> usize {
        resolved.get("threads").and_then(Value::as_u64).unwrap_or(1) as usize
    }

    /// Timed candidates make the output depend on the machine (as `calibrate`).
    fn extra_key(&self, resolved: &Value, _dir: &std::path::Path) -> Result<Vec<u8>> {
        if resolved.get("time").and_then(Value::as_u64).unwrap_or(0) == 0 {
            return Ok(vec![]);
        }
        let (cpu, cores, version) = crate::latency::fingerprint();
        Ok(format!("{cpu}|{cores}|{version}").into_bytes())
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: SpaceParams = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || run(ctx, p))
    }
}

/// The laws with their `laws` rows (GA: band, µ, σ, cost).
fn laws_of(
    p: &SpaceParams,
    space: &Space,
    seed: Option<u64>,
) -> Result<Vec<(Law, Value)>, ParamError> {
    let vars = space.variables();
    let written = |i: Option<usize>, w: &BTreeMap<String, [u32; 2]>| {
        Law::from_values(vars, w).map_err(|e| {
            let mut path = vec!["law".to_string()];
            path.extend(i.map(|i| i.to_string()));
            ParamError::new(path, e)
        })
    };
    let row = |l: &Law| json!({ "limits": l.to_values(vars) });
    Ok(match &p.law {
        LawSpec::Word(w) if w == "full" => vec![(space.full_law(), row(&space.full_law()))],
        LawSpec::Word(w) if w == "ga" => {
            let Some(seed) = seed else {
                return Ok(vec![]); // resolve: designed at run time
            };
            let metric = p.metric()?;
            let cfg = GaConfig {
                seed: p.ga.seed ^ seed,
                ..p.ga.clone()
            };
            let bands = ga::bands(p.decades[0], p.decades[1]);
            let mut out = vec![];
            for b in ga::design(space, &metric, &bands, &cfg) {
                for s in b.laws {
                    let r = json!({
                        "limits": s.law.to_values(vars),
                        "band": [b.band.0, b.band.1],
                        "metric": metric.name(),
                        "mu": s.mu,
                        "sigma": s.sigma,
                        "cost": s.cost,
                    });
                    out.push((s.law, r));
                }
            }
            out
        }
        LawSpec::Word(w) => {
            return Err(perr(
                &["law"],
                format!(
                    "unknown law `{w}`: expected \"full\", \"ga\", a table {{ variable = [low, high] }} or a list of them"
                ),
            ));
        }
        LawSpec::One(w) => {
            let l = written(None, w)?;
            vec![(l.clone(), row(&l))]
        }
        LawSpec::Many(ws) => {
            if ws.is_empty() {
                return Err(perr(&["law"], "`law` is an empty list"));
            }
            let mut out = vec![];
            for (i, w) in ws.iter().enumerate() {
                let l = written(Some(i), w)?;
                out.push((l.clone(), row(&l)));
            }
            out
        }
    })
}

/// The space with the data's input shape and classes when there is a `fetch` input.
fn space_for(ctx: &RunContext, cfg: &SpaceConfig) -> Result<SpaceConfig> {
    let mut cfg = cfg.clone();
    if let Some((shape, classes)) = crate::memory::data_shape(ctx.inputs) {
        let input = match shape.as_slice() {
            [c, h, w] => [*c, *h, *w],
            [h, w] => [1, *h, *w],
            s => bail!(
                "stage `{}`: the narrow spaces need image items, the data has items of shape {s:?}",
                ctx.stage
            ),
        };
        match &mut cfg {
            SpaceConfig::PlainCnn(c) => (c.input, c.classes) = (input, classes),
            SpaceConfig::ResNet(c) => (c.input, c.classes) = (input, classes),
        }
    }
    Ok(cfg)
}

/// The nn configuration a `train` stage would build from a candidate's `model` table.
pub fn model_config(space: &Space, values: &[u32]) -> Result<whittle_nn::ModelConfig> {
    let spec: ModelSpec = serde_json::from_value(space.model_table(values))?;
    let (input, classes) = match &space.config {
        SpaceConfig::PlainCnn(c) => (c.input, c.classes),
        SpaceConfig::ResNet(c) => (c.input, c.classes),
    };
    spec.config(&input, classes)
}

fn run(ctx: &RunContext, p: SpaceParams) -> Result<Value> {
    let cfg = space_for(ctx, &p.space)?;
    let space = Space::new(cfg.clone()).with_context(|| format!("stage `{}`", ctx.stage))?;
    ctx.progress.set_message("designing laws");
    let laws = laws_of(&p, &space, Some(ctx.seed)).map_err(|e| anyhow::anyhow!("{e}"))?;
    if laws.is_empty() {
        bail!(
            "stage `{}`: the GA found no law yielding valid models",
            ctx.stage
        );
    }
    let formats: Vec<Format> = p
        .formats
        .iter()
        .map(|f| Format::parse(f).map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let mut seen = HashSet::new();
    let mut candidates = vec![];
    let mut duplicates = 0usize;
    ctx.progress.set_message("sampling");
    let law_list: Vec<Law> = laws.iter().map(|(l, _)| l.clone()).collect();
    let counts: Vec<usize> = (0..laws.len())
        .map(|i| p.samples / laws.len() + usize::from(i < p.samples % laws.len()))
        .collect();
    let drawn = sample_many(&space, &law_list, &counts, ctx.seed).map_err(anyhow::Error::msg)?;
    for (li, x) in drawn {
        if !seen.insert(x.clone()) {
            duplicates += 1;
            continue;
        }
        let c = Costs::of(&space.graph(&x)?);
        candidates.push(CandidateRow {
            id: candidates.len(),
            law: li,
            weight_bytes: formats
                .iter()
                .map(|f| (f.name(), c.weight_bytes(f.weight_bits())))
                .collect(),
            values: x,
            params: c.params,
            macs: c.macs,
            flops: c.flops(),
            peak_activation_bytes: c.peak_activation_bytes(32),
            latency_ms: None,
            predicted_latency_ms: None,
        });
    }
    let predictor = if p.time > 0 {
        Some(time_and_fit(ctx, &p, &space, &mut candidates)?)
    } else {
        None
    };
    let out = SpaceOutput {
        space: cfg,
        variables: space.variables().iter().map(|v| v.name.clone()).collect(),
        laws: laws.into_iter().map(|(_, r)| r).collect(),
        candidates,
        predictor,
    };
    std::fs::write(ctx.out_dir.join("space.json"), serde_json::to_vec(&out)?)?;
    let params: Vec<u64> = out.candidates.iter().map(|c| c.params).collect();
    let histograms = law_histograms(&out.candidates, &out.laws);
    Ok(json!({
        "histograms": histograms,
        "candidates": out.candidates.len(),
        "duplicates": duplicates,
        "laws": out.laws.len(),
        "params_min": params.iter().min(),
        "params_max": params.iter().max(),
        "timed": out.candidates.iter().filter(|c| c.latency_ms.is_some()).count(),
        "predictor": out.predictor,
    }))
}

/// Parameters per law as counts over quarter-decade bins of log10(params) shared by all laws
/// (`004`'s histograms of the laws' samples): `{ log10_from, log10_step, laws: [{ law, band,
/// counts }] }`, or null without candidates.
fn law_histograms(candidates: &[CandidateRow], laws: &[Value]) -> Value {
    const STEP: f64 = 0.25;
    let logs: Vec<f64> = candidates
        .iter()
        .map(|c| (c.params.max(1) as f64).log10())
        .collect();
    let (Some(lo), Some(hi)) = (
        logs.iter().copied().reduce(f64::min),
        logs.iter().copied().reduce(f64::max),
    ) else {
        return Value::Null;
    };
    let from = (lo / STEP).floor() * STEP;
    let bins = (((hi - from) / STEP).floor() as usize + 1).max(1);
    let mut counts = vec![vec![0u64; bins]; laws.len()];
    for (c, l) in candidates.iter().zip(&logs) {
        let b = (((l - from) / STEP).floor() as usize).min(bins - 1);
        if let Some(row) = counts.get_mut(c.law) {
            row[b] += 1;
        }
    }
    json!({
        "log10_from": from,
        "log10_step": STEP,
        "laws": counts.iter().enumerate().map(|(i, c)| json!({
            "law": i,
            "band": laws.get(i).and_then(|l| l.get("band")).cloned().unwrap_or(Value::Null),
            "counts": c,
        })).collect::<Vec<_>>(),
    })
}

/// Times `p.time` candidates (spread over the list in a seeded order) untrained at batch 1,
/// fits the predictor on them and predicts every candidate.
fn time_and_fit(
    ctx: &RunContext,
    p: &SpaceParams,
    space: &Space,
    cands: &mut [CandidateRow],
) -> Result<Value> {
    let order = shuffled(cands.len(), ctx.seed ^ 0x5ace);
    let chosen: Vec<usize> = order.into_iter().take(p.time.min(cands.len())).collect();
    let mut nets = vec![];
    for &i in &chosen {
        let m = Model::new(model_config(space, &cands[i].values)?, ctx.seed)?.fold_bn()?;
        let shape = m.graph().input_shape.clone();
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n)
            .map(|j| ((j * 7919) % 201) as f32 / 100.0 - 1.0)
            .collect();
        let mut dims = vec![1];
        dims.extend(shape);
        nets.push((m, Tensor::from_vec(x, dims, &Device::Cpu)?));
    }
    let mut times: Vec<Vec<f64>> = vec![vec![]; nets.len()];
    ctx.progress.set_length((p.passes * nets.len()) as u64);
    for pass in 0..p.passes {
        for (k, &j) in shuffled(nets.len(), ctx.seed ^ (pass as u64 + 1))
            .iter()
            .enumerate()
        {
            if ctx.cancel.is_cancelled() {
                bail!("cancelled");
            }
            ctx.progress.set_position((pass * nets.len() + k) as u64);
            let (m, x) = &nets[j];
            times[j].extend(time_runs(p.warmup, p.runs, &mut || {
                m.forward(x, false)?;
                Ok(())
            })?);
        }
    }
    for (k, &i) in chosen.iter().enumerate() {
        cands[i].latency_ms = Some(stats(&times[k]).median_ms);
    }
    let flops: Vec<f64> = chosen.iter().map(|&i| cands[i].flops as f64).collect();
    let params: Vec<f64> = chosen.iter().map(|&i| cands[i].params as f64).collect();
    let lat: Vec<f64> = chosen
        .iter()
        .map(|&i| cands[i].latency_ms.unwrap_or(0.0).max(1e-6))
        .collect();
    let Some(pr) = LatencyPredictor::fit(&flops, &params, &lat, p.holdout, ctx.seed) else {
        tracing::warn!(
            stage = ctx.stage,
            "too few timed candidates for a latency fit"
        );
        return Ok(json!({ "timed": chosen.len(), "fit": null }));
    };
    for c in cands.iter_mut() {
        c.predicted_latency_ms = Some(pr.by_flops.fit.predict(c.flops as f64));
    }
    Ok(
        json!({ "timed": chosen.len(), "unit": "ms", "by_flops": pr.by_flops, "by_params": pr.by_params }),
    )
}

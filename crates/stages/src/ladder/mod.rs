//! The `ladder` stage kind (issue 20, `003`'s dynamic inference): from any set of network
//! inputs, the deployable variants on the accuracy-vs-cost front, a switching policy replayed on
//! resource traces against every fixed variant, and (optionally) one C artifact holding the
//! int8 variants that fit a device together, with the policy as its dispatcher.
//!
//! Variants: every input network, plus its elastic-width slices (`widths`, see
//! [`whittle_nn::slice`]: channels ranked by L1 importance, sliced, batch-norm statistics
//! re-calibrated on `calibration_samples` training inputs), each in every format of `formats`
//! (`fp32`, `int8`: post-training, calibrated on the same inputs). Each has its test accuracy,
//! measured host latency (batch 1, BN folded, the `calibrate` stage's protocol: warm-up, timed
//! runs, passes in seeded shuffled order, median), weight bytes, peak activation bytes and the
//! device profile's latency estimate. The host has no int8 kernels, so an int8 variant's host
//! latency is its float network's; `latency_source = "mcu"` makes the front and the policy use
//! the device estimate instead.

pub mod front;
pub mod policy;
pub mod trace;

use crate::common::{NETWORK_KINDS, peak_activation_elems, with_threads};
use crate::latency::{fingerprint, shuffled, stats, time_runs};
use crate::mcu::{builtin, estimate};
use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor};
use front::{Cost, Variant};
use policy::{Policy, PolicySpec, outcome};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;
use trace::TraceSpec;
use whittle_engine::{InputArtifact, MemoryNeed, ParamError, RunContext, StageKind, from_params};
use whittle_nn::Model;
use whittle_nn::loss::LossKind;
use whittle_nn::quant::{Format, QuantModel, QuantOptions, weight_bytes};
use whittle_nn::train::evaluate;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderParams {
    /// Width fractions of the elastic-width slices of every input network (1 is the network).
    #[serde(default)]
    pub widths: Vec<f64>,
    #[serde(default = "default_formats")]
    pub formats: Vec<String>,
    /// Cost axes of the front.
    #[serde(default = "default_costs")]
    pub costs: Vec<Cost>,
    #[serde(default)]
    pub keep_dominated: bool,
    /// Variants below this test accuracy are left out of the ladder (e.g. slices near chance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_accuracy: Option<f64>,
    #[serde(default = "five_hundred")]
    pub calibration_samples: usize,
    #[serde(default = "five")]
    pub warmup: usize,
    #[serde(default = "twenty")]
    pub runs: usize,
    #[serde(default = "three")]
    pub passes: usize,
    /// `host` (measured) or `mcu` (the device profile's estimate).
    #[serde(default = "host")]
    pub latency_source: String,
    /// Built-in device profile for the estimates and the C artifact.
    #[serde(default = "stm32")]
    pub device: String,
    /// Write the C artifact of the int8 variants: together when they fit the flash, one at a
    /// time with a loader otherwise (see the `artifact` module).
    #[serde(default)]
    pub c_artifact: bool,
    /// Force the artifact's mode: `together` or `loader` (default: chosen by what fits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_mode: Option<String>,
    /// Where the loader's parameter slot lives: `ram` (default, counted against SRAM) or
    /// `flash` (a reserved flash region, counted against flash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_slot: Option<String>,
    /// Flash / SRAM budgets of the artifact in bytes, instead of the device profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_flash_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_sram_bytes: Option<u64>,
    #[serde(default)]
    pub policy: PolicySpec,
    #[serde(default = "default_traces")]
    pub traces: Vec<TraceSpec>,
    #[serde(default = "one")]
    pub threads: usize,
}

fn default_formats() -> Vec<String> {
    vec!["int8".into()]
}
fn default_costs() -> Vec<Cost> {
    vec![
        Cost::LatencyMs,
        Cost::WeightBytes,
        Cost::PeakActivationBytes,
    ]
}
fn five_hundred() -> usize {
    500
}
fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn five() -> usize {
    5
}
fn twenty() -> usize {
    20
}
fn host() -> String {
    "host".into()
}
fn stm32() -> String {
    "stm32f746".into()
}
fn synthetic(kind: &str) -> TraceSpec {
    TraceSpec {
        kind: kind.into(),
        name: None,
        steps: 200,
        period: 50,
        ram: None,
        cpu: None,
        noise: 0.05,
        dt: 0.1,
        path: None,
    }
}
fn default_traces() -> Vec<TraceSpec> {
    ["square", "sine", "random_walk"].map(synthetic).to_vec()
}

pub struct Ladder;

impl StageKind for Ladder {
    fn name(&self) -> &'static str {
        "ladder"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let mut p: LadderParams = from_params(params)?;
        for (i, w) in p.widths.iter().enumerate() {
            if !(*w > 0.0 && *w <= 1.0) {
                return Err(ParamError::new(
                    ["widths".to_string(), i.to_string()],
                    format!("a width fraction must be in (0, 1], got {w}"),
                ));
            }
        }
        p.widths.sort_by(|a, b| b.total_cmp(a));
        p.widths.dedup();
        p.widths.retain(|w| *w < 1.0);
        if p.formats.is_empty() {
            return Err(ParamError::new(["formats"], "needs at least one format"));
        }
        for (i, f) in p.formats.iter().enumerate() {
            if f != "fp32" && f != "int8" {
                return Err(ParamError::new(
                    ["formats".to_string(), i.to_string()],
                    format!("unknown ladder format `{f}` (known: fp32, int8)"),
                ));
            }
        }
        if let Some(a) = p.min_accuracy
            && !(0.0..=1.0).contains(&a)
        {
            return Err(ParamError::new(
                ["min_accuracy"],
                format!("an accuracy is a fraction in [0, 1], got {a}"),
            ));
        }
        if p.costs.is_empty() {
            return Err(ParamError::new(["costs"], "needs at least one cost axis"));
        }
        if p.latency_source != "host" && p.latency_source != "mcu" {
            return Err(ParamError::new(
                ["latency_source"],
                format!(
                    "unknown latency source `{}` (known: host, mcu)",
                    p.latency_source
                ),
            ));
        }
        if builtin(&p.device).is_none() {
            return Err(ParamError::new(
                ["device"],
                format!("unknown device profile `{}` (known: stm32f746)", p.device),
            ));
        }
        if p.c_artifact && !p.formats.iter().any(|f| f == "int8") {
            return Err(ParamError::new(
                ["c_artifact"],
                "the C artifact holds int8 variants: add \"int8\" to formats",
            ));
        }
        let c_set = [
            ("c_mode", p.c_mode.is_some()),
            ("c_slot", p.c_slot.is_some()),
            ("c_flash_bytes", p.c_flash_bytes.is_some()),
            ("c_sram_bytes", p.c_sram_bytes.is_some()),
        ];
        if let Some((k, _)) = c_set.iter().find(|(_, set)| *set && !p.c_artifact) {
            return Err(ParamError::new(
                [*k],
                "only used by the C artifact: set c_artifact = true",
            ));
        }
        if let Some(m) = &p.c_mode
            && m != "together"
            && m != "loader"
        {
            return Err(ParamError::new(
                ["c_mode"],
                format!("unknown C artifact mode `{m}` (known: together, loader)"),
            ));
        }
        if let Some(m) = &p.c_slot
            && m != "ram"
            && m != "flash"
        {
            return Err(ParamError::new(
                ["c_slot"],
                format!("unknown slot place `{m}` (known: ram, flash)"),
            ));
        }
        for (k, v) in [
            ("c_flash_bytes", p.c_flash_bytes),
            ("c_sram_bytes", p.c_sram_bytes),
        ] {
            if v == Some(0) {
                return Err(ParamError::new([k], "a memory budget must be > 0 bytes"));
            }
        }
        if p.calibration_samples < 2 || p.runs == 0 || p.passes == 0 {
            return Err(ParamError::new(
                Vec::<String>::new(),
                "calibration_samples must be ≥ 2, runs and passes ≥ 1",
            ));
        }
        p.policy.validate().map_err(|(mut path, m)| {
            path.insert(0, "policy".into());
            ParamError::new(path, m)
        })?;
        if p.traces.is_empty() {
            return Err(ParamError::new(["traces"], "needs at least one trace"));
        }
        for (i, t) in p.traces.iter().enumerate() {
            t.validate()
                .map_err(|(k, m)| ParamError::new(["traces".to_string(), i.to_string(), k], m))?;
        }
        p.threads = p.threads.max(1);
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn threads(&self, resolved: &Value) -> usize {
        resolved.get("threads").and_then(Value::as_u64).unwrap_or(1) as usize
    }

    fn memory(&self, _resolved: &Value, inputs: &[InputArtifact]) -> Option<MemoryNeed> {
        crate::memory::evaluation_need(inputs, 100)
    }

    /// The device fingerprint (host timings) and the content of every CSV trace join the key.
    fn extra_key(&self, resolved: &Value, dir: &Path) -> Result<Vec<u8>> {
        let p: LadderParams = serde_json::from_value(resolved.clone())?;
        let (cpu, cores, version) = fingerprint();
        let mut key = format!("{cpu}|{cores}|{version}").into_bytes();
        for t in &p.traces {
            if let Some(path) = &t.path {
                let f = dir.join(path);
                let bytes =
                    std::fs::read(&f).with_context(|| format!("reading trace {}", f.display()))?;
                key.extend_from_slice(blake3::hash(&bytes).as_bytes());
            }
        }
        Ok(key)
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: LadderParams = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || run(ctx, &p))
    }
}

/// A model variant before formats: its network, width and (unfolded) model.
struct Candidate {
    network: String,
    width: f64,
    model: Model,
    /// The same with batch norms folded (what is timed and exported).
    folded: Model,
    uncalibrated: Option<Model>,
}

fn input_for(shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 201) as f32 / 100.0 - 1.0)
        .collect();
    let mut dims = vec![1];
    dims.extend_from_slice(shape);
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

fn run(ctx: &RunContext, p: &LadderParams) -> Result<Value> {
    let nets: Vec<&InputArtifact> = ctx
        .inputs
        .iter()
        .filter(|i| NETWORK_KINDS.contains(&i.kind.as_str()))
        .collect();
    ensure!(
        !nets.is_empty(),
        "stage `{}` needs at least one network input (kinds {})",
        ctx.stage,
        NETWORK_KINDS.join(", ")
    );
    let profile = builtin(&p.device).context("device profile")?;
    // 1. Candidates: networks and their slices (BN re-calibrated).
    let mut cands: Vec<Candidate> = Vec::new();
    for input in &nets {
        let m = Model::load(&input.dir)
            .with_context(|| format!("loading network of `{}`", input.node))?;
        let (data, ds) = crate::common::load_data(ctx, m.config())?;
        // (the data is loaded again per candidate below: each network has its own layout)
        ensure!(
            ds.task == whittle_data::Task::Classification,
            "stage `{}`: a ladder ranks classifiers by accuracy; `{}` is not one",
            ctx.stage,
            input.node
        );
        let calib = data
            .train
            .x
            .narrow(0, 0, p.calibration_samples.min(data.train.len()))?;
        for &w in &p.widths {
            ensure!(
                !m.bn_folded(),
                "stage `{}`: `{}` has its batch norms folded, so it cannot be sliced (widths)",
                ctx.stage,
                input.node
            );
            ctx.progress
                .set_message(&format!("slicing {} at width {w}", input.node));
            let (s, _) = whittle_nn::slice::slice(&m, w)
                .with_context(|| format!("slicing `{}` at width {w}", input.node))?;
            let (u, _) = whittle_nn::slice::slice(&m, w)?;
            let batches = whittle_nn::slice::batches_of(&calib, calib.dim(0)?, 100)?;
            whittle_nn::slice::recalibrate_bn(&s, &batches)?;
            cands.push(Candidate {
                network: input.node.clone(),
                width: w,
                folded: s.fold_bn()?,
                model: s,
                uncalibrated: Some(u),
            });
        }
        let folded = if m.bn_folded() {
            Model::load(&input.dir)?
        } else {
            m.fold_bn()?
        };
        cands.push(Candidate {
            network: input.node.clone(),
            width: 1.0,
            model: m,
            folded,
            uncalibrated: None,
        });
    }
    // 2. Host latency of every candidate (BN folded), passes in shuffled order.
    let xs: Vec<Tensor> = cands
        .iter()
        .map(|c| input_for(&c.folded.graph().input_shape))
        .collect::<Result<_>>()?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cands.len()];
    ctx.progress.set_length((p.passes * cands.len()) as u64);
    for pass in 0..p.passes {
        for (k, &i) in shuffled(cands.len(), ctx.seed ^ (pass as u64 + 1))
            .iter()
            .enumerate()
        {
            if ctx.cancel.is_cancelled() {
                bail!("cancelled");
            }
            ctx.progress.set_position((pass * cands.len() + k) as u64);
            let (m, x) = (&cands[i].folded, &xs[i]);
            times[i].extend(time_runs(p.warmup, p.runs, &mut || {
                m.forward(x, false)?;
                Ok(())
            })?);
        }
    }
    // 3. Accuracy per format; sizes.
    let mut variants = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        ctx.progress
            .set_message(&format!("evaluating {} width {}", c.network, c.width));
        let (data, _) = crate::common::load_data(ctx, c.model.config())?;
        let test = data
            .test
            .as_ref()
            .or(data.val.as_ref())
            .context("the data set has neither a test nor a validation split")?;
        let calib = data
            .train
            .x
            .narrow(0, 0, p.calibration_samples.min(data.train.len()))?;
        let host_ms = stats(&times[i]).median_ms;
        let peak = peak_activation_elems(&c.model);
        for f in &p.formats {
            let fmt = Format::parse(f).map_err(anyhow::Error::msg)?;
            let acc = |m: &Model| -> Result<f64> {
                let a = if fmt == Format::Int8 {
                    let q = QuantModel::prepare(m, fmt, Some(&calib), &QuantOptions::default())?;
                    evaluate(&q, test, LossKind::CrossEntropy, 100)?.accuracy
                } else {
                    evaluate(m, test, LossKind::CrossEntropy, 100)?.accuracy
                };
                a.context("the test split has no class labels")
            };
            let bits = fmt.weight_bits();
            let wb = weight_bytes(c.model.graph(), fmt, true);
            let act = (peak * fmt.activation_bits() as u64).div_ceil(8);
            let e = estimate(&profile, &c.network, f, bits, c.model.macs(), wb, act);
            let mcu_ms = e["est_latency_ms"].as_f64();
            let suffix = if c.width < 1.0 {
                format!("@w{}", c.width)
            } else {
                String::new()
            };
            variants.push(Variant {
                name: format!("{}{suffix}/{f}", c.network),
                network: c.network.clone(),
                kind: if c.width < 1.0 { "slice" } else { "network" }.into(),
                width: c.width,
                format: f.clone(),
                accuracy: acc(&c.model)?,
                accuracy_uncalibrated: c.uncalibrated.as_ref().map(acc).transpose()?,
                latency_ms: if p.latency_source == "mcu" {
                    mcu_ms.unwrap_or(host_ms)
                } else {
                    host_ms
                },
                host_latency_ms: host_ms,
                mcu_latency_ms: mcu_ms,
                params: c.model.num_params(),
                macs: c.model.macs(),
                weight_bytes: wb,
                peak_activation_bytes: act,
                dominated_by: None,
            });
        }
    }
    let candidates = variants.len();
    let all = variants.clone();
    let below: Vec<String> = match p.min_accuracy {
        Some(a) => variants
            .iter()
            .filter(|v| v.accuracy < a)
            .map(|v| v.name.clone())
            .collect(),
        None => Vec::new(),
    };
    variants.retain(|v| !below.contains(&v.name));
    ensure!(
        !variants.is_empty(),
        "stage `{}`: no variant reaches min_accuracy = {:?}",
        ctx.stage,
        p.min_accuracy
    );
    let ladder = front::front(variants, &p.costs, p.keep_dominated);
    let on_front: Vec<&Variant> = ladder.iter().filter(|v| v.dominated_by.is_none()).collect();
    tracing::info!(
        "ladder `{}`: {} of {candidates} variants on the front",
        ctx.node,
        on_front.len()
    );
    // 4. Policy replay: the policy picks among the front's variants.
    let pool: Vec<Variant> = ladder
        .iter()
        .filter(|v| v.dominated_by.is_none())
        .cloned()
        .collect();
    let pol =
        Policy::new(&p.policy, &pool).map_err(|e| anyhow::anyhow!("stage `{}`: {e}", ctx.stage))?;
    let rams: Vec<u64> = pool.iter().map(|v| p.policy.ram_of(v)).collect();
    let lo = *rams.iter().min().unwrap_or(&0);
    let hi = *rams.iter().max().unwrap_or(&0);
    // From the cheapest rung's need (it always fits) to 10 % above the largest.
    let default_ram = [lo, (hi as f64 * 1.1).ceil() as u64];
    let mut traces = Vec::new();
    let mut replayed = Vec::new();
    for (i, t) in p.traces.iter().enumerate() {
        let seed = ctx.seed ^ (0x7ace_0000 + i as u64);
        let samples = t
            .samples(seed, default_ram, ctx.experiment_dir)
            .with_context(|| format!("stage `{}`: traces.{i}", ctx.stage))?;
        let chosen = pol.run(&samples);
        let adaptive = outcome(&p.policy, &pool, &chosen, &samples, None);
        let fixed: Vec<_> = (0..pool.len())
            .map(|k| {
                outcome(
                    &p.policy,
                    &pool,
                    &vec![k; samples.len()],
                    &samples,
                    Some(pool[k].name.clone()),
                )
            })
            .collect();
        traces.push(json!({
            "name": t.display_name(),
            "kind": t.kind,
            "steps": samples.len(),
            "time": samples.iter().map(|s| s.time).collect::<Vec<_>>(),
            "free_ram_bytes": samples.iter().map(|s| s.free_ram_bytes).collect::<Vec<_>>(),
            "cpu_budget": samples.iter().map(|s| s.cpu_budget).collect::<Vec<_>>(),
            "chosen": chosen,
            "policy": adaptive,
            "fixed": fixed,
        }));
        replayed.push((t.display_name(), samples));
    }
    // 5. The C artifact.
    let artifact = if p.c_artifact {
        Some(artifact::write(ctx, p, &pool, &cands, &profile, &replayed)?)
    } else {
        None
    };
    let (cpu, cores, version) = fingerprint();
    Ok(json!({
        "ladder": {
            "candidates": candidates,
            "all": all,
            "min_accuracy": p.min_accuracy,
            "below_min_accuracy": below,
            "costs": p.costs,
            "latency_source": p.latency_source,
            "variants": ladder,
            "ram_needs": rams,
            "policy": p.policy,
            "traces": traces,
            "artifact": artifact,
            "device": { "cpu": cpu, "cores": cores, "tool_version": version, "profile": profile.name },
            "protocol": { "warmup": p.warmup, "runs": p.runs, "passes": p.passes, "batch": 1 },
        }
    }))
}

mod artifact;

//! The `calibrate` stage kind (spec §7): batch-1 host latency of every input network with our
//! inference path (BN folded, eval forward), timed in several passes in seeded shuffled
//! order; a single-node latency look-up table and per-type fits latency ≈ a·work + b;
//! predicted network latency = Σ nodes, validated against measured; micro-controller
//! estimates; optionally an external `runner` command that prints a latency in ms.

use crate::common::{NETWORK_KINDS, peak_activation_elems, with_threads};
use crate::latency::{Line, correlation, fingerprint, fit_line, shuffled, stats, time_runs};
use crate::mcu::{McuProfile, builtin, estimate};
use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use whittle_engine::{ParamError, RunContext, StageKind, from_params};
use whittle_nn::Model;
use whittle_nn::graph::{Graph, Node, Op};
use whittle_nn::interp::eval_node;
use whittle_nn::quant::{Format, weight_bytes};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrateParams {
    #[serde(default = "host")]
    pub device: String,
    #[serde(default = "five")]
    pub warmup: usize,
    #[serde(default = "twenty")]
    pub runs: usize,
    #[serde(default = "three")]
    pub passes: usize,
    /// Timed runs per single node of the look-up table.
    #[serde(default = "twenty")]
    pub layer_runs: usize,
    #[serde(default = "one")]
    pub threads: usize,
    /// Built-in micro-controller profiles to estimate.
    #[serde(default = "default_mcu")]
    pub mcu: Vec<String>,
    /// Extra profiles written in the TOML.
    #[serde(default)]
    pub mcu_profiles: Vec<McuProfile>,
    /// External command: run as `sh -c '<runner> "$1"'` with the network's weights file; its
    /// last stdout line is the latency in ms.
    #[serde(default)]
    pub runner: Option<String>,
}

fn host() -> String {
    "host".into()
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
fn default_mcu() -> Vec<String> {
    vec!["stm32f746".into()]
}

pub struct Calibrate;

impl StageKind for Calibrate {
    fn name(&self) -> &'static str {
        "calibrate"
    }

    fn version(&self) -> &'static str {
        "2" // 2: medians; validation of the per-type fit
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let mut p: CalibrateParams = from_params(params)?;
        if p.device != "host" {
            return Err(ParamError::new(
                ["device"],
                format!("unknown device `{}`: only \"host\" is measured", p.device),
            ));
        }
        for (i, m) in p.mcu.iter().enumerate() {
            if builtin(m).is_none() {
                return Err(ParamError::new(
                    ["mcu".to_string(), i.to_string()],
                    format!(
                        "unknown built-in profile `{m}` (known: stm32f746); write others in mcu_profiles"
                    ),
                ));
            }
        }
        for (i, m) in p.mcu_profiles.iter().enumerate() {
            let c = &m.cycles_per_mac;
            if !(m.clock_mhz > 0.0 && c.int8 > 0.0 && c.fp16 > 0.0 && c.fp32 > 0.0) {
                return Err(ParamError::new(
                    ["mcu_profiles".to_string(), i.to_string()],
                    "clock_mhz and cycles_per_mac must be positive",
                ));
            }
        }
        if p.runs == 0 || p.passes == 0 || p.layer_runs == 0 {
            return Err(ParamError::new(
                Vec::<String>::new(),
                "runs, passes and layer_runs must be ≥ 1",
            ));
        }
        p.threads = p.threads.max(1);
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn threads(&self, resolved: &Value) -> usize {
        resolved.get("threads").and_then(Value::as_u64).unwrap_or(1) as usize
    }

    /// The device fingerprint joins the key: timings from another machine are not reused.
    fn extra_key(&self, _resolved: &Value, _dir: &Path) -> Result<Vec<u8>> {
        let (cpu, cores, version) = fingerprint();
        Ok(format!("{cpu}|{cores}|{version}").into_bytes())
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: CalibrateParams = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || run(ctx, &p))
    }
}

/// Layer type of a node, for the per-type fit.
fn node_type(node: &Node) -> &'static str {
    match &node.op {
        Op::Conv {
            kernel,
            groups,
            c_in,
            ..
        } => match (kernel.len(), *groups > 1 && groups == c_in) {
            (1, false) => "conv1d",
            (1, true) => "dwconv1d",
            (_, false) => "conv2d",
            (_, true) => "dwconv2d",
        },
        Op::Linear { .. } => "linear",
        Op::BatchNorm { .. } => "batch_norm",
        Op::Relu => "relu",
        Op::Add => "add",
        Op::GlobalAvgPool => "pool",
        op => op.kind_name(),
    }
}

/// Work of a node: MACs for conv/linear, elements touched otherwise.
fn node_work(g: &Graph, node: &Node) -> u64 {
    let out: u64 = node.out_shape.iter().product::<usize>() as u64;
    match &node.op {
        Op::Conv {
            c_in,
            groups,
            kernel,
            ..
        } => out * (c_in / groups * kernel.iter().product::<usize>()) as u64,
        Op::Linear { c_in, c_out, .. } => (c_in * c_out) as u64,
        Op::GlobalAvgPool => g.value_shape(node.inputs[0]).iter().product::<usize>() as u64,
        _ => out,
    }
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

struct Net {
    node: String,
    model: Model,
    dir: std::path::PathBuf,
}

fn run(ctx: &RunContext, p: &CalibrateParams) -> Result<Value> {
    let mut nets = Vec::new();
    for input in ctx
        .inputs
        .iter()
        .filter(|i| NETWORK_KINDS.contains(&i.kind.as_str()))
    {
        let m = Model::load(&input.dir)
            .with_context(|| format!("loading network of `{}`", input.node))?;
        let model = if m.bn_folded() { m } else { m.fold_bn()? };
        nets.push(Net {
            node: input.node.clone(),
            model,
            dir: input.dir.clone(),
        });
    }
    ensure!(
        !nets.is_empty(),
        "stage `{}` needs at least one network input (kinds {})",
        ctx.stage,
        NETWORK_KINDS.join(", ")
    );
    // 1. Whole networks, batch 1, passes in shuffled order.
    let xs: Vec<Tensor> = nets
        .iter()
        .map(|n| input_for(&n.model.graph().input_shape))
        .collect::<Result<_>>()?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); nets.len()];
    let total = (p.passes * nets.len()) as u64;
    ctx.progress.set_length(total);
    for pass in 0..p.passes {
        for (k, &i) in shuffled(nets.len(), ctx.seed ^ (pass as u64 + 1))
            .iter()
            .enumerate()
        {
            if ctx.cancel.is_cancelled() {
                bail!("cancelled");
            }
            ctx.progress.set_position((pass * nets.len() + k) as u64);
            ctx.progress
                .set_message(&format!("pass {} {}", pass + 1, nets[i].node));
            let (m, x) = (&nets[i].model, &xs[i]);
            let t = time_runs(p.warmup, p.runs, &mut || {
                m.forward(x, false)?;
                Ok(())
            })?;
            times[i].extend(t);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // 2. Single-node look-up table over every distinct node the networks use.
    let mut table: BTreeMap<String, (String, u64, f64)> = BTreeMap::new();
    for net in &nets {
        let g = net.model.graph();
        for node in &g.nodes {
            let shapes: Vec<&[usize]> = node.inputs.iter().map(|&v| g.value_shape(v)).collect();
            let sig = format!("{:?} {:?}", node.op, shapes);
            if table.contains_key(&sig) {
                continue;
            }
            let a = input_for(shapes[0])?;
            let b = shapes.get(1).map(|s| input_for(s)).transpose()?;
            let inputs: Vec<&Tensor> = std::iter::once(&a).chain(b.as_ref()).collect();
            let t = time_runs(2, p.layer_runs, &mut || {
                eval_node(node, &inputs, &net.model)?;
                Ok(())
            })?;
            table.insert(
                sig,
                (
                    node_type(node).to_string(),
                    node_work(g, node),
                    stats(&t).median_ms,
                ),
            );
        }
    }
    // 3. Per-type fits.
    let mut by_type: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (ty, work, ms) in table.values() {
        let e = by_type.entry(ty.as_str()).or_default();
        e.0.push(*work as f64);
        e.1.push(*ms);
    }
    let fits: BTreeMap<&str, Line> = by_type
        .iter()
        .map(|(ty, (x, y))| (*ty, fit_line(x, y)))
        .collect();
    // 4. Predicted vs measured.
    let mut rows = Vec::new();
    let mut hosts = Vec::new();
    // Medians, not means: one preempted run (another process on the same cores) moves a mean
    // of 60 sub-millisecond runs by far more than the differences between networks.
    let (mut measured, mut predicted, mut predicted_lut) = (Vec::new(), Vec::new(), Vec::new());
    for (i, net) in nets.iter().enumerate() {
        let g = net.model.graph();
        let (mut lut, mut fitted) = (0.0, 0.0);
        for node in &g.nodes {
            let shapes: Vec<&[usize]> = node.inputs.iter().map(|&v| g.value_shape(v)).collect();
            let (ty, work, ms) = &table[&format!("{:?} {:?}", node.op, shapes)];
            lut += ms;
            let f = fits[ty.as_str()];
            fitted += f.a * *work as f64 + f.b;
        }
        let s = stats(&times[i]);
        measured.push(s.median_ms);
        predicted.push(fitted);
        predicted_lut.push(lut);
        let latency = match &p.runner {
            Some(cmd) => run_external(cmd, &net.dir.join(whittle_nn::model::WEIGHTS_FILE))
                .with_context(|| format!("runner for `{}`", net.node))?,
            None => s.median_ms,
        };
        rows.push(json!({ "parent": net.node, "format": "fp32", "latency_ms": latency }));
        hosts.push(json!({
            "parent": net.node, "macs": net.model.macs(), "measured": s,
            "predicted_lut_ms": lut, "predicted_fit_ms": fitted,
        }));
    }
    let line = fit_line(&predicted, &measured);
    let validation = json!({
        "networks": nets.len(),
        "predictor": "sum over layers of the per-type fit a·work + b; measured = median",
        "correlation": correlation(&predicted, &measured),
        "correlation_lut": correlation(&predicted_lut, &measured),
        "slope": (nets.len() >= 2).then_some(line.a),
        "intercept_ms": (nets.len() >= 2).then_some(line.b),
    });
    // 5. Micro-controller estimates.
    let mut profiles: Vec<McuProfile> = p.mcu.iter().filter_map(|m| builtin(m)).collect();
    profiles.extend(p.mcu_profiles.iter().cloned());
    let mut mcu = Vec::new();
    for prof in &profiles {
        for net in &nets {
            let peak = peak_activation_elems(&net.model);
            for f in ["fp32", "int8"] {
                let fmt = Format::parse(f).map_err(anyhow::Error::msg)?;
                let bits = fmt.weight_bits();
                mcu.push(estimate(
                    prof,
                    &net.node,
                    f,
                    bits,
                    net.model.macs(),
                    weight_bytes(net.model.graph(), fmt, true),
                    (peak * fmt.activation_bits() as u64).div_ceil(8),
                ));
            }
        }
    }
    let (cpu, cores, version) = fingerprint();
    Ok(json!({
        "models": rows,
        "device": {
            "kind": p.device, "cpu": cpu, "cores": cores, "tool_version": version,
            "threads": ctx.threads, "runner": p.runner,
        },
        "protocol": { "warmup": p.warmup, "runs": p.runs, "passes": p.passes, "batch": 1 },
        "host": hosts,
        "layer_table": table.iter().map(|(sig, (ty, work, ms))| json!({
            "layer": sig, "type": ty, "work": work, "median_ms": ms })).collect::<Vec<_>>(),
        "fits": fits.iter().map(|(ty, l)| json!({
            "type": ty, "a_ms_per_work": l.a, "b_ms": l.b, "r2": l.r2,
            "points": by_type[ty].0.len() })).collect::<Vec<_>>(),
        "validation": validation,
        "mcu": mcu,
    }))
}

/// Runs the user's command with the file path; its last non-empty stdout line is the latency.
fn run_external(cmd: &str, file: &Path) -> Result<f64> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} \"$1\""))
        .arg("whittle-runner")
        .arg(file)
        .output()
        .with_context(|| format!("starting runner `{cmd}`"))?;
    if !out.status.success() {
        bail!(
            "runner `{cmd}` failed ({}) on {}: {}",
            out.status,
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let ms: f64 = last
        .trim()
        .trim_end_matches("ms")
        .trim()
        .parse()
        .with_context(|| {
            format!("runner `{cmd}` printed `{last}`, expected a latency in milliseconds")
        })?;
    ensure!(
        ms.is_finite() && ms >= 0.0,
        "runner `{cmd}` printed a negative latency {ms}"
    );
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_output_and_failure() {
        let f = Path::new("/tmp/some file.onnx");
        assert_eq!(
            run_external("echo warming; echo 3.25 ms #", f).unwrap(),
            3.25
        );
        let e = run_external("test -e", f).unwrap_err().to_string();
        assert!(e.contains("failed"), "{e}");
        let e = run_external("echo fast", f).unwrap_err().to_string();
        assert!(e.contains("expected a latency"), "{e}");
    }
}

//! Model-level throughput benchmark (`cargo bench -p whittle-nn`): DS-CNN, TCN-64 and ResNet-8
//! (and, as arguments, MobileNetV2 `mbv2` / `mbv2_se`)
//! at batch 100 with 2 threads, training (forward + cross-entropy + backward + AdamW step) and
//! inference samples/s, plus the batch-1 inference latency (µs per call, what the calibrate
//! stage measures), one `bench <model> train_samples_per_s=<x> infer_samples_per_s=<y>
//! infer1_us=<z>` line per model; then, when PyTorch is importable, runs
//! `../shared/bench/torch_ref.py` (batch 100) and `models/torch_b1.py` (batch 1, the same
//! models imported from torch_ref.py) on the same models and prints the ours/PyTorch ratios
//! (`infer1` is PyTorch's latency over ours: above 1 means ours is faster).
//! With PyTorch, each model runs `WHITTLE_BENCH_ROUNDS` (default 3) alternating rounds of ours
//! then PyTorch; the lines give medians and the ratio is the median of the per-round ratios.
//! Options: `WHITTLE_BENCH_STEPS` (timed steps, default 20 as in torch_ref.py),
//! `WHITTLE_BENCH_B1_RUNS` (timed batch-1 calls, default 1000, in 5 blocks: the latency is the
//! median of the blocks' means), `WHITTLE_BENCH_TORCH=0` (skip the
//! PyTorch reference, for A/B runs and profiles of our side only), `WHITTLE_BENCH_INFER_ONLY=1`
//! (inference only), models as arguments. `pit_tcn64` is the PIT search step of TCN-64 against
//! its plain training step and PLiNIO (see `models/pit.rs`).

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use whittle_nn::config::{DsCnnConfig, MobileNetV2Config, ModelConfig, ResNetConfig, TcnConfig};
use whittle_nn::optim::{Optimizer, OptimizerConfig};
use whittle_nn::{Model, loss};

/// The same allocator as the `whittle` binary (see crates/cli/src/main.rs).
// The allocator set-up of the `whittle` binary, so the bench measures what users run.
#[path = "../../cli/src/alloc.rs"]
mod alloc;
use alloc::keep_freed_memory;
#[path = "models/pit.rs"]
mod pit;

const BS: usize = 100;
const WARMUP: usize = 2;

fn model_config(name: &str) -> Result<(ModelConfig, usize)> {
    Ok(match name {
        "dscnn" => (ModelConfig::DsCnn(DsCnnConfig::reference()), 12),
        "resnet8" => (ModelConfig::ResNet(ResNetConfig::resnet8()), 10),
        "mbv2" => (
            ModelConfig::MobileNetV2(MobileNetV2Config::reference(false)),
            10,
        ),
        "mbv2_se" => (
            ModelConfig::MobileNetV2(MobileNetV2Config::reference(true)),
            10,
        ),
        n if n.starts_with("tcn") => {
            let ch: usize = n[3..]
                .parse()
                .with_context(|| format!("bad model name {n}"))?;
            (ModelConfig::Tcn(TcnConfig::bench(ch)), 12)
        }
        n => anyhow::bail!("unknown model {n} (dscnn, tcn64, resnet8, tcnN, mbv2, mbv2_se)"),
    })
}

fn randn(shape: &[usize], seed: u64) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.random::<f32>() * 2.0 - 1.0).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// (train samples/s, infer samples/s).
fn bench(name: &str, steps: usize) -> Result<(f64, f64)> {
    let (cfg, classes) = model_config(name)?;
    let model = Model::new(cfg.clone(), 0)?;
    let mut shape = vec![BS];
    shape.extend(cfg.input_shape());
    let x = randn(&shape, 1)?;
    let labels: Vec<u32> = (0..BS as u32)
        .map(|i| (i * 7 + 3) % classes as u32)
        .collect();
    let y = Tensor::from_vec(labels, BS, &Device::Cpu)?;
    let mut opt = Optimizer::new(OptimizerConfig::adamw(1e-2), model.params().to_vec())?;
    let mut step = || -> Result<()> {
        let l = loss::cross_entropy(&model.forward(&x, true)?, &y)?;
        opt.step(&l.backward()?, 1e-3)
    };
    // WHITTLE_BENCH_INFER_ONLY=1 skips training (for profiles of the inference path).
    let skip_train = std::env::var("WHITTLE_BENCH_INFER_ONLY").is_ok_and(|v| v == "1");
    for _ in 0..if skip_train { 0 } else { WARMUP } {
        step()?;
    }
    let t = Instant::now();
    for _ in 0..if skip_train { 0 } else { steps } {
        step()?;
    }
    let train = (steps * BS) as f64 / t.elapsed().as_secs_f64();
    for _ in 0..WARMUP {
        model.forward(&x, false)?;
    }
    let t = Instant::now();
    for _ in 0..steps {
        model.forward(&x, false)?;
    }
    let infer = (steps * BS) as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "  ({name}: {} params, {} MACs/sample)",
        model.num_params(),
        model.macs()
    );
    Ok((train, infer))
}

/// Batch-1 inference latency of `name` in µs per call: `runs` calls in [`B1_BLOCKS`] blocks
/// after a warm-up, the median of the blocks' mean latencies (as `models/torch_b1.py`).
fn latency1(name: &str, runs: usize) -> Result<f64> {
    let (cfg, _) = model_config(name)?;
    let model = Model::new(cfg.clone(), 0)?;
    let mut shape = vec![1];
    shape.extend(cfg.input_shape());
    let x = randn(&shape, 1)?;
    let per = (runs / B1_BLOCKS).max(1);
    for _ in 0..(per / 5).max(10) {
        model.forward(&x, false)?;
    }
    let mut means = vec![];
    for _ in 0..B1_BLOCKS {
        let t = Instant::now();
        for _ in 0..per {
            model.forward(&x, false)?;
        }
        means.push(t.elapsed().as_secs_f64() / per as f64 * 1e6);
    }
    Ok(median(&means))
}

const B1_BLOCKS: usize = 5;

/// Runs `models/torch_b1.py` on one model: PyTorch's batch-1 latency (µs), `None` on failure.
fn torch_b1(
    py: &std::path::Path,
    script: &std::path::Path,
    model: &str,
    runs: usize,
) -> Result<Option<f64>> {
    let wrapper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/models/torch_b1.py");
    let out = Command::new(py)
        .arg(&wrapper)
        .arg(script)
        .arg(runs.to_string())
        .arg(model)
        .output()
        .context("running torch_b1.py")?;
    if !out.status.success() {
        eprintln!(
            "torch_b1.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == "torch1" && it.next()? == model)
            .then(|| it.next()?.strip_prefix("infer1_us=")?.parse().ok())
            .flatten()
    }))
}

/// A Python with torch: `.venv-torch/bin/python` at the workspace root, else `python3`.
fn torch_python(root: &std::path::Path) -> Option<PathBuf> {
    let venv = root.join(".venv-torch/bin/python");
    let candidates = [venv, PathBuf::from("python3")];
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import torch"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

fn parse_line(line: &str) -> Option<(String, f64, f64)> {
    let mut it = line.split_whitespace();
    if it.next()? != "torch" {
        return None;
    }
    let name = it.next()?.to_string();
    let kv: HashMap<&str, f64> = it
        .filter_map(|t| t.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    Some((
        name,
        *kv.get("train_samples_per_s")?,
        *kv.get("infer_samples_per_s")?,
    ))
}

/// Runs torch_ref.py on one model; `None` when it fails (its stderr is shown).
fn torch_run(
    py: &std::path::Path,
    script: &std::path::Path,
    model: &str,
) -> Result<Option<(f64, f64)>> {
    let out = Command::new(py)
        .arg(script)
        .arg(model)
        .output()
        .context("running torch_ref.py")?;
    if !out.status.success() {
        eprintln!(
            "torch_ref.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_line)
        .find(|(n, _, _)| n == model)
        .map(|(_, a, b)| (a, b)))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    keep_freed_memory();
    whittle_nn::set_threads(2);
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let models: Vec<String> = if args.is_empty() {
        ["dscnn", "tcn64", "resnet8"].map(String::from).to_vec()
    } else {
        args
    };
    let steps = env_usize("WHITTLE_BENCH_STEPS", 20);
    let b1_runs = env_usize("WHITTLE_BENCH_B1_RUNS", 1000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = [
        root.join("../shared/bench/torch_ref.py"),
        PathBuf::from("/work/shared/bench/torch_ref.py"),
    ]
    .into_iter()
    .find(|p| p.exists());
    let torch = if std::env::var("WHITTLE_BENCH_TORCH").is_ok_and(|v| v == "0") {
        None
    } else {
        match (torch_python(&root), script) {
            (Some(py), Some(script)) => Some((py, script)),
            _ => {
                println!(
                    "torch reference skipped: PyTorch not importable (setup: `just torch`) or torch_ref.py missing"
                );
                None
            }
        }
    };
    // Rounds alternate ours and PyTorch on each model, so both see the same machine load; the
    // shared host drifts by ±15 % over minutes, which a single back-to-back pair would misread.
    let rounds = env_usize("WHITTLE_BENCH_ROUNDS", if torch.is_some() { 3 } else { 1 }).max(1);
    for m in &models {
        if m == "pit_tcn64" {
            pit_rounds(&root, torch.as_ref().map(|t| t.0.clone()), steps)?;
            continue;
        }
        let (mut ours, mut theirs, mut ratios) = (vec![], vec![], vec![]);
        let (mut ours1, mut theirs1, mut ratios1) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            let o = bench(m, steps)?;
            ours.push(o);
            if let Some((py, script)) = &torch
                && let Some(t) = torch_run(py, script, m)?
            {
                theirs.push(t);
                ratios.push((o.0 / t.0, o.1 / t.1));
            }
            let o1 = latency1(m, b1_runs)?;
            ours1.push(o1);
            if let Some((py, script)) = &torch
                && let Some(t1) = torch_b1(py, script, m, b1_runs)?
            {
                theirs1.push(t1);
                ratios1.push(t1 / o1);
            }
            eprintln!(
                "  ({m} round {}: ours infer {:.0}/s, batch-1 {o1:.1} µs; PyTorch infer {}, batch-1 {})",
                ours.len(),
                o.1,
                theirs
                    .last()
                    .filter(|_| theirs.len() == ours.len())
                    .map_or("-".into(), |t| format!("{:.0}/s", t.1)),
                theirs1
                    .last()
                    .filter(|_| theirs1.len() == ours1.len())
                    .map_or("-".into(), |t| format!("{t:.1} µs")),
            );
        }
        let unzip = |v: &[(f64, f64)]| -> (Vec<f64>, Vec<f64>) { v.iter().copied().unzip() };
        let (ours_train, ours_infer) = unzip(&ours);
        println!(
            "bench {m} train_samples_per_s={:.1} infer_samples_per_s={:.1} infer1_us={:.1}",
            median(&ours_train),
            median(&ours_infer),
            median(&ours1)
        );
        if theirs.is_empty() {
            continue;
        }
        let (torch_train, torch_infer) = unzip(&theirs);
        println!(
            "torch {m} train_samples_per_s={:.1} infer_samples_per_s={:.1} infer1_us={:.1}",
            median(&torch_train),
            median(&torch_infer),
            median(&theirs1)
        );
        let (rt, ri) = unzip(&ratios);
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{lo:.2}-{hi:.2}")
        };
        println!(
            "ratio {m} train={:.2} infer={:.2} infer1={:.2} (ours / PyTorch speed, median of {} alternating rounds; train {}, infer {}, infer1 {})",
            median(&rt),
            median(&ri),
            median(&ratios1),
            ratios.len(),
            range(&rt),
            range(&ri),
            range(&ratios1)
        );
    }
    Ok(())
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("{lo:.2}-{hi:.2}")
}

/// `pit_tcn64`: alternating rounds of our search step, our plain training step of the same
/// network (the mask overhead is their ratio) and PLiNIO's search step when it can run.
fn pit_rounds(root: &std::path::Path, py: Option<PathBuf>, steps: usize) -> Result<()> {
    let plinio = match pit::plinio(root, py) {
        Ok(p) => Some(p),
        Err(why) => {
            println!("{why}");
            None
        }
    };
    let rounds = env_usize("WHITTLE_BENCH_ROUNDS", 3).max(1);
    let (mut search, mut plain, mut theirs, mut overhead, mut vs) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let s = pit::search_step(steps, BS, WARMUP)?;
        let p = bench("tcn64", steps)?.0;
        search.push(s);
        plain.push(p);
        overhead.push(p / s);
        if let Some((py, script, src)) = &plinio
            && let Some(t) = pit::plinio_run(py, script, src)?
        {
            theirs.push(t);
            vs.push(s / t);
        }
    }
    println!(
        "bench pit_tcn64 search_samples_per_s={:.1} plain_train_samples_per_s={:.1} mask_overhead={:.2} (plain / search, median of {rounds} rounds; {})",
        median(&search),
        median(&plain),
        median(&overhead),
        range(&overhead)
    );
    if !theirs.is_empty() {
        println!(
            "plinio pit_tcn64 search_samples_per_s={:.1}",
            median(&theirs)
        );
        println!(
            "ratio pit_tcn64 vs_plinio={:.2} (ours / PLiNIO, median of {} alternating rounds; {})",
            median(&vs),
            vs.len(),
            range(&vs)
        );
    }
    Ok(())
}

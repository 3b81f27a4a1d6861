//! Model-level throughput benchmark (`cargo bench -p whittle-nn`): DS-CNN, TCN-64 and ResNet-8
//! at batch 100 with 2 threads, training (forward + cross-entropy + backward + AdamW step) and
//! inference samples/s, one `bench <model> train_samples_per_s=<x> infer_samples_per_s=<y>`
//! line per model; then, when PyTorch is importable, runs `../shared/bench/torch_ref.py` on the
//! same models and prints the candle/PyTorch ratios.
//! Options: `WHITTLE_BENCH_STEPS` (timed steps, default 10), `WHITTLE_BENCH_TORCH=0` (skip the
//! PyTorch reference, for A/B runs and profiles of our side only), `WHITTLE_BENCH_INFER_ONLY=1`
//! (inference only), models as arguments.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use whittle_nn::config::{DsCnnConfig, ModelConfig, ResNetConfig, TcnConfig};
use whittle_nn::optim::{Optimizer, OptimizerConfig};
use whittle_nn::{Model, loss};

/// The same allocator as the `whittle` binary (see crates/cli/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BS: usize = 100;
const WARMUP: usize = 2;

fn model_config(name: &str) -> Result<(ModelConfig, usize)> {
    Ok(match name {
        "dscnn" => (ModelConfig::DsCnn(DsCnnConfig::reference()), 12),
        "resnet8" => (ModelConfig::ResNet(ResNetConfig::resnet8()), 10),
        n if n.starts_with("tcn") => {
            let ch: usize = n[3..]
                .parse()
                .with_context(|| format!("bad model name {n}"))?;
            (ModelConfig::Tcn(TcnConfig::bench(ch)), 12)
        }
        n => anyhow::bail!("unknown model {n} (dscnn, tcn64, resnet8, tcnN)"),
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

fn main() -> Result<()> {
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
    let steps: usize = std::env::var("WHITTLE_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut ours = vec![];
    for m in &models {
        let (tr, inf) = bench(m, steps)?;
        println!("bench {m} train_samples_per_s={tr:.1} infer_samples_per_s={inf:.1}");
        ours.push((m.clone(), tr, inf));
    }
    if std::env::var("WHITTLE_BENCH_TORCH").is_ok_and(|v| v == "0") {
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = [
        root.join("../shared/bench/torch_ref.py"),
        PathBuf::from("/work/shared/bench/torch_ref.py"),
    ]
    .into_iter()
    .find(|p| p.exists());
    let (Some(py), Some(script)) = (torch_python(&root), script) else {
        println!(
            "torch reference skipped: PyTorch not importable (setup: see the header of torch_ref.py) or torch_ref.py missing"
        );
        return Ok(());
    };
    let out = Command::new(&py)
        .arg(&script)
        .args(&models)
        .output()
        .context("running torch_ref.py")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    if !out.status.success() {
        eprintln!(
            "torch_ref.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let torch: HashMap<String, (f64, f64)> = text
        .lines()
        .filter_map(parse_line)
        .map(|(n, a, b)| (n, (a, b)))
        .collect();
    for (m, tr, inf) in &ours {
        if let Some((ttr, tinf)) = torch.get(m) {
            println!(
                "ratio {m} train={:.2} infer={:.2} (candle / PyTorch)",
                tr / ttr,
                inf / tinf
            );
        }
    }
    Ok(())
}

//! The PIT search step of the plain TCN-64 (`just bench pit_tcn64`), against the same network's
//! plain training step and, when it can be run, PLiNIO's PIT on PyTorch
//! (`../shared/bench/plinio_pit.py`: PyTorch with the `tdigest` package, and a checkout of the
//! public repository eml-eda/plinio at `PLINIO_SRC` or `.plinio` in the workspace).
//!
//! The step is the search's: forward through the masked network (channel, receptive-field and
//! dilation masks), cross-entropy + λ·cost (size, λ = 1e-6 as in the PLiNIO script), backward,
//! then AdamW on the weights and Adam on the masks.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use whittle_nn::optim::{Optimizer, OptimizerConfig};
use whittle_nn::pit::{Cost, PitModel};
use whittle_nn::train::Trainable;
use whittle_nn::{Model, loss};

/// Search-step samples/s of the TCN-64 under PIT's masks.
pub fn search_step(steps: usize, bs: usize, warmup: usize) -> Result<f64> {
    let (cfg, classes) = super::model_config("tcn64")?;
    let model = Model::new(cfg.clone(), 0)?;
    let pit = PitModel::new(model, Cost::Size, 1e-6, true)?;
    let mut shape = vec![bs];
    shape.extend(cfg.input_shape());
    let x = super::randn(&shape, 1)?;
    let labels: Vec<u32> = (0..bs as u32)
        .map(|i| (i * 7 + 3) % classes as u32)
        .collect();
    let y = Tensor::from_vec(labels, bs, &Device::Cpu)?;
    let mut wopt = Optimizer::new(OptimizerConfig::adamw(1e-2), pit.weight_vars())?;
    let mut mopt = Optimizer::new(OptimizerConfig::adam(0.0), pit.mask_vars())?;
    let mut step = || -> Result<()> {
        let l = loss::cross_entropy(&pit.forward(&x, true)?, &y)?;
        let total = match pit.regularizer()? {
            Some(r) => (l + r)?,
            None => l,
        };
        let g = total.backward()?;
        wopt.step(&g, 1e-3)?;
        mopt.step(&g, 1e-3)
    };
    for _ in 0..warmup {
        step()?;
    }
    let t = Instant::now();
    for _ in 0..steps {
        step()?;
    }
    Ok((steps * bs) as f64 / t.elapsed().as_secs_f64())
}

/// Where PLiNIO's sources are: `PLINIO_SRC`, else `.plinio` at the workspace root.
fn plinio_src(root: &Path) -> Option<PathBuf> {
    std::env::var_os("PLINIO_SRC")
        .map(PathBuf::from)
        .or_else(|| Some(root.join(".plinio")))
        .filter(|p| p.join("plinio/methods").is_dir())
}

/// The PLiNIO runner (python, script, sources) or the one line saying why it is skipped.
pub fn plinio(
    root: &Path,
    py: Option<PathBuf>,
) -> std::result::Result<(PathBuf, PathBuf, PathBuf), String> {
    let script = [
        root.join("../shared/bench/plinio_pit.py"),
        PathBuf::from("/work/shared/bench/plinio_pit.py"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .ok_or("PLiNIO skipped: ../shared/bench/plinio_pit.py not found")?;
    let py = py.ok_or("PLiNIO skipped: PyTorch not importable (setup: `just torch`)")?;
    let src = plinio_src(root).ok_or(
        "PLiNIO skipped: no checkout of eml-eda/plinio (not on PyPI): clone it to .plinio or set PLINIO_SRC",
    )?;
    let ok = Command::new(&py)
        .args(["-c", "import tdigest"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return Err("PLiNIO skipped: its `tdigest` dependency is missing (`.venv-torch/bin/pip install tdigest`)".into());
    }
    Ok((py, script, src))
}

/// One PLiNIO run: its search-step samples/s, `None` when it fails (stderr shown).
pub fn plinio_run(py: &Path, script: &Path, src: &Path) -> Result<Option<f64>> {
    let out = Command::new(py)
        .arg(script)
        .env("PLINIO_SRC", src)
        .output()
        .context("running plinio_pit.py")?;
    if !out.status.success() {
        eprintln!(
            "plinio_pit.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("plinio_pit tcn64 "))
        .find_map(|l| {
            l.split_once("search_train_samples_per_s=")?
                .1
                .trim()
                .parse()
                .ok()
        }))
}

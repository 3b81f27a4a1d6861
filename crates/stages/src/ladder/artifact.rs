//! The ladder's C artifact: the int8 variants of the front that fit the device profile
//! together, written with [`whittle_export::c_ladder`] into `<out>/c/`, with the policy as the
//! dispatcher. What fits: each variant alone must fit (parameter bytes ≤ flash, peak int8
//! activations ≤ SRAM); the cheapest variant (the policy's fallback) goes in first, then the
//! others by accuracy while the parameter bytes together stay within flash. Variants run one
//! at a time, so SRAM holds the largest arena plus the int8 input and output buffers.

use super::front::Variant;
use super::policy::{Policy, PolicySpec};
use super::{Candidate, LadderParams};
use crate::export::file_stem;
use crate::mcu::McuProfile;
use crate::to_export::to_network;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use whittle_engine::RunContext;
use whittle_export::Int8Params;
use whittle_export::c_ladder::{CVariant, flash_bytes, write_c_ladder};

pub(super) fn write(
    ctx: &RunContext,
    p: &LadderParams,
    pool: &[Variant],
    cands: &[Candidate],
    profile: &McuProfile,
) -> Result<Value> {
    let mut nets = Vec::new();
    let mut excluded = Vec::new();
    for v in pool.iter().filter(|v| v.format == "int8") {
        let c = cands
            .iter()
            .find(|c| c.network == v.network && c.width == v.width)
            .context("a ladder variant without its network")?;
        let net = to_network(&c.folded, &file_stem(&v.name))?;
        let flash = flash_bytes(&net);
        if flash > profile.flash_bytes || v.peak_activation_bytes > profile.sram_bytes {
            excluded.push(json!({ "variant": v.name, "flash_bytes": flash,
                "reason": format!("does not fit alone ({} B parameters, {} B activations)",
                    flash, v.peak_activation_bytes) }));
            continue;
        }
        nets.push((v.clone(), c, net, flash));
    }
    anyhow::ensure!(
        !nets.is_empty(),
        "stage `{}`: no int8 variant of the ladder fits {} alone",
        ctx.stage,
        profile.name
    );
    // The cheapest first, then by accuracy while flash lasts.
    let cheapest = (0..nets.len())
        .min_by_key(|&i| (p.policy.ram_of(&nets[i].0), nets[i].3))
        .unwrap_or(0);
    let mut order: Vec<usize> = (0..nets.len()).filter(|&i| i != cheapest).collect();
    order.sort_by(|&a, &b| nets[b].0.accuracy.total_cmp(&nets[a].0.accuracy));
    let mut keep = vec![cheapest];
    let mut total = nets[cheapest].3;
    for i in order {
        if total + nets[i].3 <= profile.flash_bytes {
            total += nets[i].3;
            keep.push(i);
        } else {
            excluded.push(json!({ "variant": nets[i].0.name, "flash_bytes": nets[i].3,
                "reason": format!("does not fit with the others ({} B of {} B flash used)",
                    total, profile.flash_bytes) }));
        }
    }
    keep.sort_unstable(); // ladder order
    let chosen: Vec<&(Variant, &Candidate, whittle_export::Network, u64)> =
        keep.iter().map(|&i| &nets[i]).collect();
    // Activation ranges on the training inputs, as the export stage calibrates them.
    let mut params = Vec::new();
    for (v, c, net, _) in &chosen {
        let (data, _) = crate::common::load_data(ctx, c.model.config())?;
        let n = p.calibration_samples.min(data.train.len()).min(200);
        let per: usize = c.model.graph().input_shape.iter().product();
        let xs: Vec<f32> = data.train.x.narrow(0, 0, n)?.flatten_all()?.to_vec1()?;
        let calib: Vec<Vec<f32>> = xs.chunks(per).map(<[f32]>::to_vec).collect();
        params.push(
            Int8Params::calibrate(net, &calib)
                .with_context(|| format!("calibrating `{}`", v.name))?,
        );
    }
    let sub: Vec<Variant> = chosen.iter().map(|c| c.0.clone()).collect();
    let mut spec: PolicySpec = p.policy.clone();
    spec.rungs
        .retain(|r| sub.iter().any(|v| v.name == r.variant));
    if spec.kind == "thresholds" && spec.rungs.is_empty() {
        anyhow::bail!(
            "stage `{}`: none of the policy's rungs names a variant of the C artifact",
            ctx.stage
        );
    }
    let policy = Policy::new(&spec, &sub).map_err(anyhow::Error::msg)?;
    let cvars: Vec<CVariant> = chosen
        .iter()
        .zip(&params)
        .map(|((v, _, net, _), q)| CVariant {
            label: v.name.clone(),
            net,
            params: q,
            accuracy: v.accuracy,
            latency_ms: v.latency_ms,
        })
        .collect();
    let dir = ctx.out_dir.join("c");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = file_stem(ctx.stage);
    let files = write_c_ladder(&cvars, &policy.dispatch(), &dir, &name)?;
    let arena = files.arena_bytes.iter().copied().max().unwrap_or(0);
    let io: u64 = {
        let net = &chosen[0].2;
        let s = net.shapes()?;
        let i: usize = net.input.1.iter().product();
        let o: usize = s[&net.output][1..].iter().product();
        (i + o) as u64
    };
    let rel = |q: &std::path::Path| {
        q.strip_prefix(ctx.out_dir)
            .unwrap_or(q)
            .display()
            .to_string()
    };
    let mut paths = vec![rel(&files.header), rel(&files.source)];
    for (h, c) in &files.variant_files {
        paths.push(rel(h));
        paths.push(rel(c));
    }
    Ok(json!({
        "device": profile.name,
        "flash_budget_bytes": profile.flash_bytes,
        "sram_budget_bytes": profile.sram_bytes,
        "name": name,
        "variants": chosen.iter().zip(&files.flash_bytes).zip(&files.arena_bytes)
            .map(|((c, f), a)| json!({ "variant": c.0.name, "flash_bytes": f, "arena_bytes": a }))
            .collect::<Vec<_>>(),
        "excluded": excluded,
        "flash_bytes": files.flash_bytes.iter().sum::<u64>(),
        "sram_bytes": arena + io,
        "fits": files.flash_bytes.iter().sum::<u64>() <= profile.flash_bytes
            && arena + io <= profile.sram_bytes,
        "files": paths,
    }))
}

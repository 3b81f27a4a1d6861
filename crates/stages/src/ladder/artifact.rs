//! The ladder's C artifact, written with [`whittle_export::c_ladder`] into `<out>/c/` with the
//! policy as the dispatcher, in one of two modes (`c_mode`; by default `together` when the
//! int8 variants that fit alone also fit the flash together, `loader` otherwise).
//!
//! `together`: every variant's parameters in flash. Each variant alone must fit (parameter
//! bytes ≤ flash, peak int8 activations ≤ SRAM); the cheapest variant (the policy's fallback)
//! goes in first, then the others by accuracy while the parameter bytes together stay within
//! flash. Variants run one at a time, so SRAM holds the largest arena plus the int8 input and
//! output buffers.
//!
//! `loader`: one variant resident at a time. Each variant's parameters are a checked blob
//! `<name>_v<k>.bin` read on a switch into one slot sized for the largest; the slot is in SRAM
//! (`c_slot = "ram"`, the default) or in a reserved flash region (`"flash"`). Flash holds the C
//! tables of every variant (plus the slot if it lives there); SRAM the largest arena, the int8
//! input and output (plus the slot if it lives there). The same greedy order picks what fits.
//! The switch cost is replayed on every trace: the loads the dispatcher's `step` makes (the
//! first step's included) and the blob bytes they read.

use super::front::Variant;
use super::policy::{Policy, PolicySpec};
use super::trace::Sample;
use super::{Candidate, LadderParams};
use crate::export::file_stem;
use crate::mcu::McuProfile;
use crate::to_export::to_network;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use whittle_engine::RunContext;
use whittle_export::c_ladder::{
    CVariant, SlotPlace, flash_bytes, table_bytes, write_c_ladder, write_c_ladder_loader,
};
use whittle_export::{Int8Params, Network};

/// An int8 variant with its exported network and its sizes.
struct Item<'a> {
    v: Variant,
    c: &'a Candidate,
    net: Network,
    /// Parameter bytes.
    flash: u64,
    /// C table bytes.
    tables: u64,
}

/// Flash and SRAM of a set of variants in one mode (`io`: int8 input + output bytes).
fn need(set: &[&Item], loader: Option<SlotPlace>, io: u64) -> (u64, u64) {
    let act = set
        .iter()
        .map(|i| i.v.peak_activation_bytes)
        .max()
        .unwrap_or(0);
    match loader {
        None => (set.iter().map(|i| i.flash).sum(), act + io),
        Some(place) => {
            let slot = set.iter().map(|i| i.flash).max().unwrap_or(0);
            let tables: u64 = set.iter().map(|i| i.tables).sum();
            match place {
                SlotPlace::Ram => (tables, act + io + slot),
                SlotPlace::Flash => (tables + slot, act + io),
            }
        }
    }
}

pub(super) fn write(
    ctx: &RunContext,
    p: &LadderParams,
    pool: &[Variant],
    cands: &[Candidate],
    profile: &McuProfile,
    traces: &[(String, Vec<Sample>)],
) -> Result<Value> {
    let flash_budget = p.c_flash_bytes.unwrap_or(profile.flash_bytes);
    let sram_budget = p.c_sram_bytes.unwrap_or(profile.sram_bytes);
    let place = match p.c_slot.as_deref() {
        Some("flash") => SlotPlace::Flash,
        _ => SlotPlace::Ram,
    };
    let mut items = Vec::new();
    for v in pool.iter().filter(|v| v.format == "int8") {
        let c = cands
            .iter()
            .find(|c| c.network == v.network && c.width == v.width)
            .context("a ladder variant without its network")?;
        let net = to_network(&c.folded, &file_stem(&v.name))?;
        items.push(Item {
            v: v.clone(),
            c,
            flash: flash_bytes(&net),
            tables: table_bytes(&net),
            net,
        });
    }
    let io: u64 = match items.first() {
        Some(i) => {
            let s = i.net.shapes()?;
            let inp: usize = i.net.input.1.iter().product();
            let out: usize = s[&i.net.output][1..].iter().product();
            (inp + out) as u64
        }
        None => 0,
    };
    let fits = |(f, s): (u64, u64)| f <= flash_budget && s <= sram_budget;
    // Together when every variant that fits alone (the together rule) fits with the others.
    let alone: Vec<&Item> = items
        .iter()
        .filter(|i| i.flash <= flash_budget && i.v.peak_activation_bytes <= sram_budget)
        .collect();
    let loader = match p.c_mode.as_deref() {
        Some("together") => None,
        Some(_) => Some(place),
        None if !alone.is_empty() && need(&alone, None, 0).0 <= flash_budget => None,
        None => Some(place),
    };
    let mut excluded = Vec::new();
    let mut nets: Vec<&Item> = Vec::new();
    for i in &items {
        let ok = match loader {
            None => i.flash <= flash_budget && i.v.peak_activation_bytes <= sram_budget,
            Some(_) => fits(need(&[i], loader, io)),
        };
        if ok {
            nets.push(i);
        } else {
            let reason = match loader {
                None => format!(
                    "does not fit alone ({} B parameters, {} B activations)",
                    i.flash, i.v.peak_activation_bytes
                ),
                Some(_) => {
                    let (f, s) = need(&[i], loader, io);
                    format!(
                        "does not fit alone ({f} B of {flash_budget} B flash, {s} B of {sram_budget} B SRAM)"
                    )
                }
            };
            excluded.push(json!({ "variant": i.v.name, "flash_bytes": i.flash, "reason": reason }));
        }
    }
    anyhow::ensure!(
        !nets.is_empty(),
        "stage `{}`: no int8 variant of the ladder fits {} alone ({flash_budget} B flash, \
         {sram_budget} B SRAM)",
        ctx.stage,
        profile.name
    );
    // The cheapest first, then by accuracy while the budgets last.
    let cheapest = (0..nets.len())
        .min_by_key(|&i| (p.policy.ram_of(&nets[i].v), nets[i].flash))
        .unwrap_or(0);
    let mut order: Vec<usize> = (0..nets.len()).filter(|&i| i != cheapest).collect();
    order.sort_by(|&a, &b| nets[b].v.accuracy.total_cmp(&nets[a].v.accuracy));
    let mut keep = vec![cheapest];
    for i in order {
        let mut with: Vec<&Item> = keep.iter().map(|&k| nets[k]).collect();
        let (f0, s0) = need(&with, loader, io);
        with.push(nets[i]);
        let ok = match loader {
            None => need(&with, None, io).0 <= flash_budget,
            Some(_) => fits(need(&with, loader, io)),
        };
        if ok {
            keep.push(i);
        } else {
            let reason = match loader {
                None => {
                    format!("does not fit with the others ({f0} B of {flash_budget} B flash used)")
                }
                Some(_) => format!(
                    "does not fit with the others ({f0} B of {flash_budget} B flash, {s0} B of \
                     {sram_budget} B SRAM used)"
                ),
            };
            excluded.push(
                json!({ "variant": nets[i].v.name, "flash_bytes": nets[i].flash,
                "reason": reason }),
            );
        }
    }
    keep.sort_unstable(); // ladder order
    let chosen: Vec<&Item> = keep.iter().map(|&i| nets[i]).collect();
    // Activation ranges on the training inputs, as the export stage calibrates them.
    let mut params = Vec::new();
    for it in &chosen {
        let (data, _) = crate::common::load_data(ctx, it.c.model.config())?;
        let n = p.calibration_samples.min(data.train.len()).min(200);
        let per: usize = it.c.model.graph().input_shape.iter().product();
        let xs: Vec<f32> = data.train.x.narrow(0, 0, n)?.flatten_all()?.to_vec1()?;
        let calib: Vec<Vec<f32>> = xs.chunks(per).map(<[f32]>::to_vec).collect();
        params.push(
            Int8Params::calibrate(&it.net, &calib)
                .with_context(|| format!("calibrating `{}`", it.v.name))?,
        );
    }
    let sub: Vec<Variant> = chosen.iter().map(|c| c.v.clone()).collect();
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
        .map(|(it, q)| CVariant {
            label: it.v.name.clone(),
            net: &it.net,
            params: q,
            accuracy: it.v.accuracy,
            latency_ms: it.v.latency_ms,
        })
        .collect();
    let dir = ctx.out_dir.join("c");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = file_stem(ctx.stage);
    let rel = |q: &std::path::Path| {
        q.strip_prefix(ctx.out_dir)
            .unwrap_or(q)
            .display()
            .to_string()
    };
    let Some(place) = loader else {
        let files = write_c_ladder(&cvars, &policy.dispatch(), &dir, &name)?;
        let arena = files.arena_bytes.iter().copied().max().unwrap_or(0);
        let mut paths = vec![rel(&files.header), rel(&files.source)];
        for (h, c) in &files.variant_files {
            paths.push(rel(h));
            paths.push(rel(c));
        }
        return Ok(json!({
            "mode": "together",
            "device": profile.name,
            "flash_budget_bytes": flash_budget,
            "sram_budget_bytes": sram_budget,
            "name": name,
            "variants": chosen.iter().zip(&files.flash_bytes).zip(&files.arena_bytes)
                .map(|((c, f), a)| json!({ "variant": c.v.name, "flash_bytes": f, "arena_bytes": a }))
                .collect::<Vec<_>>(),
            "excluded": excluded,
            "flash_bytes": files.flash_bytes.iter().sum::<u64>(),
            "sram_bytes": arena + io,
            "fits": files.flash_bytes.iter().sum::<u64>() <= flash_budget
                && arena + io <= sram_budget,
            "files": paths,
        }));
    };
    let l = write_c_ladder_loader(&cvars, &policy.dispatch(), &dir, &name, place)?;
    let arena = l.files.arena_bytes.iter().copied().max().unwrap_or(0);
    let tables: u64 = l.table_bytes.iter().sum();
    let (flash, sram) = match place {
        SlotPlace::Ram => (tables, arena + io + l.slot_bytes),
        SlotPlace::Flash => (tables + l.slot_bytes, arena + io),
    };
    // Switch cost: `step` loads on the first step and on every change of variant.
    let switch_cost: Vec<Value> = traces
        .iter()
        .map(|(t, samples)| {
            let picks = policy.run(samples);
            let loads: Vec<usize> = picks
                .iter()
                .enumerate()
                .filter(|&(s, &k)| s == 0 || picks[s - 1] != k)
                .map(|(_, &k)| k)
                .collect();
            json!({ "trace": t, "steps": picks.len(), "loads": loads.len(),
                "bytes_read": loads.iter().map(|&k| l.blob_bytes[k]).sum::<u64>() })
        })
        .collect();
    let mut paths = vec![rel(&l.files.header), rel(&l.files.source)];
    for ((h, c), b) in l.files.variant_files.iter().zip(&l.blobs) {
        paths.push(rel(h));
        paths.push(rel(c));
        paths.push(rel(b));
    }
    Ok(json!({
        "mode": "loader",
        "slot": match place { SlotPlace::Ram => "ram", SlotPlace::Flash => "flash" },
        "device": profile.name,
        "flash_budget_bytes": flash_budget,
        "sram_budget_bytes": sram_budget,
        "name": name,
        "variants": chosen.iter().enumerate().map(|(k, c)| json!({
                "variant": c.v.name,
                "param_bytes": l.files.flash_bytes[k],
                "blob_bytes": l.blob_bytes[k],
                "table_bytes": l.table_bytes[k],
                "arena_bytes": l.files.arena_bytes[k],
                "crc32": format!("{:08x}", l.checksums[k]),
            }))
            .collect::<Vec<_>>(),
        "excluded": excluded,
        "slot_bytes": l.slot_bytes,
        "table_bytes": tables,
        "flash_bytes": flash,
        "sram_bytes": sram,
        "fits": flash <= flash_budget && sram <= sram_budget,
        "switch_cost": switch_cost,
        "files": paths,
    }))
}

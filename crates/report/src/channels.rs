//! Per-layer output channels of the searched / pruned networks: one grouped bar chart per
//! method and seed network (the seed's channels next to each of its plotted descendants), in a
//! collapsed section.

use crate::render::{Ctx, details, sanitize};
use crate::svg::{COLOURS, bars};
use serde_json::Value;

/// Networks per chart besides the seed (one colour each).
const PER_CHART: usize = COLOURS.len() - 1;

/// The root of a row's `parent` chain among fp32 rows (at most 32 steps).
fn root(ctx: &Ctx, i: usize) -> Option<usize> {
    let mut cur = i;
    for _ in 0..32 {
        let p = ctx.rows[cur].parent.as_deref()?;
        match ctx
            .rows
            .iter()
            .position(|r| r.node == p && r.format == "fp32" && r.stage_kind != "quantize")
        {
            Some(j) if ctx.rows[j].parent.is_some() => cur = j,
            Some(j) => return Some(j),
            None => return None,
        }
    }
    None
}

pub(crate) fn section(ctx: &Ctx, files: &mut Vec<(String, String)>) -> String {
    // (method, root) → members, in order of first appearance.
    let mut groups: Vec<((String, usize), Vec<usize>)> = Vec::new();
    for (i, m) in ctx.rows.iter().enumerate() {
        if !ctx.shown[i]
            || m.parent.is_none()
            || m.extra.get("layers").and_then(Value::as_array).is_none()
        {
            continue;
        }
        let Some(r) = root(ctx, i) else { continue };
        if !ctx.rows[r].extra.contains_key("layers") {
            continue;
        }
        let key = (ctx.methods[i].clone(), r);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let mut md = String::new();
    for ((method, r), members) in groups {
        let seed = &ctx.rows[r];
        let seed_layers = seed.extra.get("layers").and_then(Value::as_array);
        let Some(seed_layers) = seed_layers else {
            continue;
        };
        let name_of = |l: &Value| {
            l.get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        let names: Vec<String> = seed_layers.iter().map(name_of).collect();
        let ch = |ls: &[Value], name: &str| {
            ls.iter()
                .find(|l| l.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|l| l.get("c_out"))
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        let chunks: Vec<&[usize]> = members.chunks(PER_CHART).collect();
        for (c, chunk) in chunks.iter().enumerate() {
            let mut nets = vec![(
                seed.node.clone(),
                names
                    .iter()
                    .map(|n| ch(seed_layers, n))
                    .collect::<Vec<f64>>(),
            )];
            for &i in chunk.iter() {
                let m = &ctx.rows[i];
                let ls = m
                    .extra
                    .get("layers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                nets.push((m.node.clone(), names.iter().map(|n| ch(&ls, n)).collect()));
            }
            let suffix = if chunks.len() > 1 {
                format!("_{}", c + 1)
            } else {
                String::new()
            };
            let file = format!(
                "channels_{}_{}{suffix}.svg",
                sanitize(&method),
                sanitize(&seed.node)
            );
            let svg = bars(
                &format!("{method}: output channels per layer vs {}", seed.node),
                "output channels",
                &names,
                &nets,
            );
            md.push_str(&format!(
                "![{method}: channels per layer vs {}]({}/{file})\n\n",
                seed.node, ctx.folder
            ));
            files.push((file, svg));
        }
    }
    if md.is_empty() {
        return md;
    }
    details(
        "Per-layer output channels of the searched and pruned networks",
        &md,
    )
}

//! Expansion of an experiment into a DAG of nodes (sweeps fan out, `gather` fans in) and the
//! node keys: blake3 over kind, version, canonical parameters, input keys, seed and extra bytes.

use std::collections::HashMap;

use anyhow::Result;

use crate::canon::{canonical_json, display_value};
use crate::experiment::{Experiment, ExperimentError, set_path};
use crate::registry::Registry;

/// One swept coordinate of a node: stage `stage` swept `key` to `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Coord {
    pub stage: String,
    pub key: String,
    pub value: toml::Value,
}

/// One node of the DAG: a stage with one combination of sweep values.
#[derive(Debug, Clone)]
pub struct Node {
    /// Readable name, e.g. `pit[lambda=1e-5]`.
    pub name: String,
    pub stage: String,
    pub kind: String,
    pub version: String,
    /// Node key, 64 hex digits.
    pub key: String,
    /// Resolved parameters (what the kind's `resolve` returned).
    pub params: serde_json::Value,
    /// Indices (into [`Plan::nodes`]) of its inputs, in the stage's `inputs` order.
    pub inputs: Vec<usize>,
    /// Threads it asks for.
    pub threads: usize,
    /// Sweep coordinates that identify it (own and inherited).
    pub coords: Vec<Coord>,
    /// blake3 (hex) of the kind's extra key bytes (e.g. hashed `deps`), empty if none.
    pub extra: String,
}

/// An experiment expanded into nodes, in topological order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub experiment: Experiment,
    pub nodes: Vec<Node>,
}

impl Plan {
    /// Expand `experiment`; kind parameter errors are located in the file.
    pub fn build(experiment: Experiment, registry: &Registry) -> Result<Plan, ExperimentError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut by_stage: HashMap<String, Vec<usize>> = HashMap::new();
        for def in experiment.stages.values() {
            let kind = registry.get(&def.kind).expect("validated kind").clone();
            // natural join over the inputs that fan out
            let mut combos: Vec<(Vec<Coord>, Vec<usize>)> = vec![(Vec::new(), Vec::new())];
            for input in def.inputs.iter().filter(|i| !def.gather.contains(i)) {
                let mut next = Vec::new();
                for (coords, picks) in &combos {
                    for &n in &by_stage[input] {
                        if consistent(coords, &nodes[n].coords) {
                            let mut c = coords.clone();
                            for x in &nodes[n].coords {
                                if !c.contains(x) {
                                    c.push(x.clone());
                                }
                            }
                            let mut p = picks.clone();
                            p.push(n);
                            next.push((c, p));
                        }
                    }
                }
                combos = next;
            }
            // own sweep: cartesian product
            for (key, values) in &def.sweep {
                let mut next = Vec::new();
                for (coords, picks) in &combos {
                    for v in values {
                        let mut c = coords.clone();
                        c.push(Coord {
                            stage: def.name.clone(),
                            key: key.clone(),
                            value: v.clone(),
                        });
                        next.push((c, picks.clone()));
                    }
                }
                combos = next;
            }
            let mut mine = Vec::new();
            for (coords, picks) in combos {
                // inputs in `inputs` order; a gathered input contributes every consistent node
                let mut inputs = Vec::new();
                let mut pick = picks.iter();
                for input in &def.inputs {
                    if def.gather.contains(input) {
                        let all: Vec<usize> = by_stage[input]
                            .iter()
                            .copied()
                            .filter(|&n| consistent(&coords, &nodes[n].coords))
                            .collect();
                        inputs.extend(all);
                    } else {
                        inputs.push(*pick.next().expect("one pick per fanned-out input"));
                    }
                }
                let mut params = def.params.clone();
                for c in coords.iter().filter(|c| c.stage == def.name) {
                    let path: Vec<&str> = c.key.split('.').collect();
                    if let Err(e) = set_path(&mut params, &path, c.value.clone()) {
                        return Err(experiment.error_at(
                            &[
                                "stages".into(),
                                def.origin.clone(),
                                "sweep".into(),
                                c.key.clone(),
                            ],
                            format!("cannot sweep `{}`: {e}", c.key),
                        ));
                    }
                }
                let resolved = kind.resolve(&params).map_err(|e| {
                    let sweep_key = def.sweep.iter().map(|(k, _)| k).find(|k| {
                        let kp: Vec<&str> = k.split('.').collect();
                        e.path.len() >= kp.len() && e.path.iter().zip(&kp).all(|(a, b)| a == b)
                    });
                    let mut at = vec!["stages".to_string(), def.origin.clone()];
                    match sweep_key {
                        Some(k) => {
                            at.push("sweep".into());
                            at.push(k.clone());
                        }
                        None => at.extend(e.path.iter().cloned()),
                    }
                    let what = if e.path.is_empty() {
                        String::new()
                    } else {
                        format!("`{}`: ", e.path.join("."))
                    };
                    let msg: Vec<&str> = e
                        .message
                        .lines()
                        .filter(|l| !l.trim().is_empty() && !l.starts_with("in `"))
                        .collect();
                    experiment.error_at(
                        &at,
                        format!(
                            "{what}{} (stage `{}`, kind `{}`)",
                            msg.join(" ").trim(),
                            def.name,
                            def.kind
                        ),
                    )
                })?;
                let extra = kind.extra_key(&resolved, &experiment.dir).map_err(|e| {
                    experiment.error_at(
                        &["stages".into(), def.origin.clone()],
                        format!("stage `{}`: {e:#}", def.name),
                    )
                })?;
                let threads = kind.threads(&resolved).max(1);
                let input_keys: Vec<&str> = inputs.iter().map(|&i| nodes[i].key.as_str()).collect();
                let key = node_key(
                    kind.name(),
                    kind.version(),
                    &resolved,
                    &input_keys,
                    experiment.seed,
                    &extra,
                );
                let name = node_name(&def.name, &coords);
                mine.push(nodes.len());
                nodes.push(Node {
                    name,
                    stage: def.name.clone(),
                    kind: def.kind.clone(),
                    version: kind.version().to_string(),
                    key,
                    params: resolved,
                    inputs,
                    threads,
                    coords,
                    extra: if extra.is_empty() {
                        String::new()
                    } else {
                        blake3::hash(&extra).to_hex().to_string()
                    },
                });
            }
            by_stage.insert(def.name.clone(), mine);
        }
        Ok(Plan { experiment, nodes })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Indices of every node downstream of node `i`.
    pub fn children(&self) -> Vec<Vec<usize>> {
        let mut ch = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &j in &n.inputs {
                if !ch[j].contains(&i) {
                    ch[j].push(i);
                }
            }
        }
        ch
    }
}

fn consistent(a: &[Coord], b: &[Coord]) -> bool {
    b.iter().all(|y| {
        a.iter()
            .all(|x| x.stage != y.stage || x.key != y.key || x.value == y.value)
    })
}

/// `stage` or `stage[k=v,...]`: coordinates sorted by key, a key qualified by its stage when
/// two coordinates share it.
pub fn node_name(stage: &str, coords: &[Coord]) -> String {
    if coords.is_empty() {
        return stage.to_string();
    }
    let short = |c: &Coord| c.key.rsplit('.').next().unwrap_or(&c.key).to_string();
    let mut parts: Vec<(String, String, String)> = coords
        .iter()
        .map(|c| {
            let dup = coords.iter().filter(|d| short(d) == short(c)).count() > 1;
            let k = if dup {
                format!("{}.{}", c.stage, short(c))
            } else {
                short(c)
            };
            (k, c.stage.clone(), display_value(&c.value))
        })
        .collect();
    parts.sort();
    let inner: Vec<String> = parts
        .into_iter()
        .map(|(k, _, v)| format!("{k}={v}"))
        .collect();
    format!("{stage}[{}]", inner.join(","))
}

/// The node key (64 hex digits).
pub fn node_key(
    kind: &str,
    version: &str,
    params: &serde_json::Value,
    input_keys: &[&str],
    seed: u64,
    extra: &[u8],
) -> String {
    let mut h = blake3::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(b"whittle-node-key-v1");
    field(kind.as_bytes());
    field(version.as_bytes());
    field(canonical_json(params).as_bytes());
    field(&(input_keys.len() as u64).to_le_bytes());
    for k in input_keys {
        field(k.as_bytes());
    }
    field(&seed.to_le_bytes());
    field(extra);
    h.finalize().to_hex().to_string()
}

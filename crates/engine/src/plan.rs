//! Expansion of an experiment into a DAG of nodes (sweeps fan out, `gather` fans in) and the
//! node keys: blake3 over kind, version, canonical parameters, input keys, seed and extra bytes.
//!
//! Dynamic fan-out: a node may list child configurations in `children.json` (a JSON array of
//! objects) in its output folder. A stage with `for_each = "SOURCE"` is *deferred* until every
//! node of SOURCE is committed in the cache; then it expands into one node per child (the
//! child placed at `for_each_key` in its parameters), named `STAGE[child=i]` (plus the
//! source's own coordinates), keyed by its content only — not by the source node — so the
//! same child listed by another run or law is a cache hit. Stages downstream of a deferred
//! stage are deferred too. [`Plan::build_cached`] expands what the cache allows; the run loop
//! ([`crate::scheduler::run_rounds`]) rebuilds after each round until nothing new expands.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;

use crate::cache::Cache;
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

/// The file a node writes to list its children for `for_each` stages.
pub const CHILDREN_FILE: &str = "children.json";

/// The coordinate key of a fan-out child (its index in the source node's list).
pub const CHILD_COORD: &str = "child";

/// A stage whose nodes are not known yet: it fans out over `source`, whose nodes are not all
/// committed (directly, or through its input `via`, itself deferred).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Deferred {
    pub stage: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// What a node listed in `children.json`: `None` while the node is not committed.
pub type ChildLookup<'a> = dyn Fn(&Node) -> Option<Result<Vec<serde_json::Value>, String>> + 'a;

/// An experiment expanded into nodes, in topological order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub experiment: Experiment,
    pub nodes: Vec<Node>,
    /// Stages waiting for a fan-out source, in stage order.
    pub deferred: Vec<Deferred>,
    /// Keys an earlier round of the same run already settled (`true`: committed, `false`:
    /// failed or skipped): the scheduler neither reruns nor counts them again.
    pub settled: BTreeMap<String, bool>,
}

/// The children a node wrote to `path`: a JSON array of objects.
pub fn read_children(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "it wrote no {CHILDREN_FILE} (expected a JSON array of objects in its output folder)"
            ));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{CHILDREN_FILE} is not valid JSON: {e}"))?;
    let serde_json::Value::Array(items) = v else {
        return Err(format!(
            "{CHILDREN_FILE} must be a JSON array of objects, found {}",
            json_type(&v)
        ));
    };
    for (i, x) in items.iter().enumerate() {
        if !x.is_object() {
            return Err(format!(
                "{CHILDREN_FILE}: child {i} must be a JSON object, found {}",
                json_type(x)
            ));
        }
    }
    Ok(items)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Plan {
    /// Expand `experiment`; kind parameter errors are located in the file. Every `for_each`
    /// stage (and what is downstream of it) is deferred.
    pub fn build(experiment: Experiment, registry: &Registry) -> Result<Plan, ExperimentError> {
        Self::build_with(experiment, registry, &|_| None)
    }

    /// Expand `experiment`, fanning out over the children of the source nodes committed in
    /// `cache`.
    pub fn build_cached(
        experiment: Experiment,
        registry: &Registry,
        cache: &Cache,
    ) -> Result<Plan, ExperimentError> {
        Self::build_with(experiment, registry, &|n: &Node| {
            cache
                .is_done(&n.key)
                .then(|| read_children(&cache.out_dir(&n.key).join(CHILDREN_FILE)))
        })
    }

    /// Expand `experiment`; `children` says what a source node of a `for_each` stage listed.
    pub fn build_with(
        experiment: Experiment,
        registry: &Registry,
        children: &ChildLookup,
    ) -> Result<Plan, ExperimentError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut by_stage: HashMap<String, Vec<usize>> = HashMap::new();
        let mut deferred: Vec<Deferred> = Vec::new();
        'stages: for def in experiment.stages.values() {
            let kind = registry.get(&def.kind).expect("validated kind").clone();
            if let Some(d) = def
                .deps()
                .find_map(|i| deferred.iter().find(|d| d.stage == *i))
            {
                deferred.push(Deferred {
                    stage: def.name.clone(),
                    source: d.source.clone(),
                    via: Some(d.stage.clone()),
                });
                continue;
            }
            // the children of a `for_each` source: (coordinates, source node, child)
            let mut kids: Vec<(Vec<Coord>, usize, serde_json::Value)> = Vec::new();
            if let Some(src) = &def.for_each {
                for &n in &by_stage[src] {
                    match children(&nodes[n]) {
                        None => {
                            deferred.push(Deferred {
                                stage: def.name.clone(),
                                source: src.clone(),
                                via: None,
                            });
                            continue 'stages;
                        }
                        Some(Err(e)) => {
                            return Err(experiment.error_at(
                                &["stages".into(), def.origin.clone(), "for_each".into()],
                                format!(
                                    "stage `{}` fans out over node `{}` (key {}), but {e}",
                                    def.name,
                                    nodes[n].name,
                                    &nodes[n].key[..12]
                                ),
                            ));
                        }
                        Some(Ok(list)) => {
                            for (i, child) in list.into_iter().enumerate() {
                                let mut c = nodes[n].coords.clone();
                                c.push(Coord {
                                    stage: src.clone(),
                                    key: CHILD_COORD.into(),
                                    value: toml::Value::Integer(i as i64),
                                });
                                kids.push((c, n, child));
                            }
                        }
                    }
                }
            }
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
            // fan-out: join with the children consistent with the inputs picked
            let mut combos: Vec<(Vec<Coord>, Vec<usize>, Option<usize>)> =
                combos.into_iter().map(|(c, p)| (c, p, None)).collect();
            if def.for_each.is_some() {
                let mut next = Vec::new();
                for (coords, picks, _) in &combos {
                    for (k, (kc, _, _)) in kids.iter().enumerate() {
                        if consistent(coords, kc) {
                            let mut c = coords.clone();
                            for x in kc {
                                if !c.contains(x) {
                                    c.push(x.clone());
                                }
                            }
                            next.push((c, picks.clone(), Some(k)));
                        }
                    }
                }
                combos = next;
            }
            // own sweep: cartesian product
            for (key, values) in &def.sweep {
                let mut next = Vec::new();
                for (coords, picks, kid) in &combos {
                    for v in values {
                        let mut c = coords.clone();
                        c.push(Coord {
                            stage: def.name.clone(),
                            key: key.clone(),
                            value: v.clone(),
                        });
                        next.push((c, picks.clone(), *kid));
                    }
                }
                combos = next;
            }
            let mut mine = Vec::new();
            for (coords, picks, kid) in combos {
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
                // where a child's own problems are reported: at `for_each`, naming the child
                let child_of = kid.map(|k| {
                    let (kc, n, _) = &kids[k];
                    let i = kc
                        .last()
                        .map(|c| display_value(&c.value))
                        .unwrap_or_default();
                    format!("child {i} of node `{}`", nodes[*n].name)
                });
                if let Some(k) = kid {
                    let path: Vec<&str> = def.for_each_key.split('.').collect();
                    let value = toml::Value::try_from(&kids[k].2).map_err(|e| {
                        experiment.error_at(
                            &["stages".into(), def.origin.clone(), "for_each".into()],
                            format!(
                                "{}: cannot be a parameter table: {e}",
                                child_of.clone().unwrap_or_default()
                            ),
                        )
                    })?;
                    if let Err(e) = set_path(&mut params, &path, value) {
                        return Err(experiment.error_at(
                            &["stages".into(), def.origin.clone(), "for_each_key".into()],
                            format!("cannot place the children at `{}`: {e}", def.for_each_key),
                        ));
                    }
                }
                let resolved = kind.resolve(&params).map_err(|e| {
                    let in_child = child_of.as_ref().filter(|_| {
                        let kp: Vec<&str> = def.for_each_key.split('.').collect();
                        e.path.len() >= kp.len() && e.path.iter().zip(&kp).all(|(a, b)| a == b)
                    });
                    let sweep_key = def.sweep.iter().map(|(k, _)| k).find(|k| {
                        let kp: Vec<&str> = k.split('.').collect();
                        e.path.len() >= kp.len() && e.path.iter().zip(&kp).all(|(a, b)| a == b)
                    });
                    let mut at = vec!["stages".to_string(), def.origin.clone()];
                    match (sweep_key, in_child) {
                        (Some(k), _) => {
                            at.push("sweep".into());
                            at.push(k.clone());
                        }
                        (None, Some(_)) => at.push("for_each".into()),
                        (None, None) => at.extend(e.path.iter().cloned()),
                    }
                    let what = match (e.path.is_empty(), in_child) {
                        (true, _) => String::new(),
                        (false, Some(c)) => format!("{c}: `{}`: ", e.path.join(".")),
                        (false, None) => format!("`{}`: ", e.path.join(".")),
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
        Ok(Plan {
            experiment,
            nodes,
            deferred,
            settled: BTreeMap::new(),
        })
    }

    /// The deferred entry of stage `stage`, if it waits for a fan-out.
    pub fn deferred(&self, stage: &str) -> Option<&Deferred> {
        self.deferred.iter().find(|d| d.stage == stage)
    }

    /// Stages that fan out over `stage` (their `for_each`).
    pub fn fans_out(&self, stage: &str) -> Vec<&str> {
        self.experiment
            .stages
            .values()
            .filter(|d| d.for_each.as_deref() == Some(stage))
            .map(|d| d.name.as_str())
            .collect()
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

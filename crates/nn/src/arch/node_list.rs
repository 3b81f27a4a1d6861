//! A network written node by node (`arch = "graph"` in an experiment file). Each node has a
//! `name`, an `op`, the names of its `inputs` (default: the node before it, or `input` for the
//! first node) and the op's own keys; `c_in` is always inferred from the input's shape. The
//! last node is the output and must give one score per class: a final `linear` may leave
//! `c_out` out, and any `c_out` may be `"classes"`, for the class count of the data. An entry `{ repeat = n, nodes = [...] }` stands for its nodes n times, with `{i}` in
//! names and inputs replaced by 0, 1, …, n − 1 and `{in}` by the node before that repetition.
//!
//! [`parse_nodes`] checks everything that needs no data (ops, keys and their values, names,
//! references: a node may only read `input` or nodes listed before it, and a reference to a
//! later node that leads back is reported as a cycle; input counts); [`NodeListConfig::build`]
//! then checks channels and shapes against the data's input shape. Errors carry the path of
//! the offending entry under `nodes` (e.g. `["3", "inputs"]`) and name the node.

use crate::graph::{Graph, GraphBuilder, Op};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// The op of a written node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Conv,
    BatchNorm,
    Relu,
    Relu6,
    Sigmoid,
    HardSigmoid,
    HardSwish,
    Add,
    ChannelMul,
    Concat,
    Narrow,
    ChannelShuffle,
    MaxPool,
    AvgPool,
    GlobalAvgPool,
    Dropout,
    Flatten,
    Linear,
}

/// Every op: its name, and its own keys (besides `name`, `op`, `inputs`), required ones first.
const OPS: [(&str, OpKind, &[&str], usize); 18] = [
    (
        "conv",
        OpKind::Conv,
        &[
            "kernel", "c_out", "stride", "padding", "dilation", "groups", "bias",
        ],
        1,
    ),
    ("batch_norm", OpKind::BatchNorm, &["eps", "momentum"], 0),
    ("relu", OpKind::Relu, &[], 0),
    ("relu6", OpKind::Relu6, &[], 0),
    ("sigmoid", OpKind::Sigmoid, &[], 0),
    ("hard_sigmoid", OpKind::HardSigmoid, &[], 0),
    ("hard_swish", OpKind::HardSwish, &[], 0),
    ("add", OpKind::Add, &[], 0),
    ("channel_mul", OpKind::ChannelMul, &[], 0),
    ("concat", OpKind::Concat, &[], 0),
    ("narrow", OpKind::Narrow, &["len", "start"], 1),
    ("channel_shuffle", OpKind::ChannelShuffle, &["groups"], 1),
    (
        "max_pool",
        OpKind::MaxPool,
        &["kernel", "stride", "padding"],
        1,
    ),
    (
        "avg_pool",
        OpKind::AvgPool,
        &["kernel", "stride", "padding"],
        1,
    ),
    ("global_avg_pool", OpKind::GlobalAvgPool, &[], 0),
    ("dropout", OpKind::Dropout, &["p"], 1),
    ("flatten", OpKind::Flatten, &[], 0),
    ("linear", OpKind::Linear, &["c_out", "bias"], 0),
];

fn op_entry(k: OpKind) -> &'static (&'static str, OpKind, &'static [&'static str], usize) {
    OPS.iter().find(|o| o.1 == k).expect("every op is listed")
}

/// A channel or group count: a number, or a word (`"classes"` for `c_out`, `"depthwise"` for
/// a conv's `groups`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Count {
    N(usize),
    Word(String),
}

/// Padding of a conv or pool: `"same"` (d·(k − 1) split low/high, the presets' rule), `"valid"`
/// (none), one number for every dimension, one per dimension (symmetric), or a `[low, high]`
/// pair per dimension (`[[0, 1], [0, 1]]`: TensorFlow's 'SAME' at stride 2, a causal pad).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Padding {
    One(usize),
    Each(Vec<usize>),
    Pairs(Vec<[usize; 2]>),
    Word(String),
}

/// One written node; unset keys take the op's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    pub op: OpKind,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_out: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<Padding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dilation: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// Where the node was written, under `nodes` (not part of the configuration).
    #[serde(skip)]
    pub origin: Origin,
}

impl NodeConfig {
    /// A node of `op` named `name` reading `inputs`, every other key unset (the op's defaults).
    pub fn new(name: impl Into<String>, op: OpKind, inputs: Vec<String>) -> Self {
        NodeConfig {
            name: name.into(),
            op,
            inputs,
            c_out: None,
            kernel: None,
            stride: None,
            padding: None,
            dilation: None,
            groups: None,
            bias: None,
            p: None,
            start: None,
            len: None,
            eps: None,
            momentum: None,
            origin: Origin::default(),
        }
    }
}

/// The path under `nodes` a node was written at; equal to every other (it only places
/// messages, so two configurations differing in it alone are the same network).
#[derive(Clone, Debug, Default)]
pub struct Origin(pub Vec<String>);

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A node-list error: the path under `nodes` of what is wrong (`["3", "inputs"]`; empty for
/// the list as a whole) and a message naming the node and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeError {
    pub at: Vec<String>,
    pub message: String,
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

fn err(at: &[String], key: Option<&str>, message: String) -> NodeError {
    let mut at = at.to_vec();
    at.extend(key.map(str::to_string));
    NodeError { at, message }
}

/// A written network with the data's input shape and class count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeListConfig {
    pub input: Vec<usize>,
    pub classes: usize,
    pub nodes: Vec<NodeConfig>,
}

/// Expands `repeat` entries, parses every node and checks the list's structure. The result has
/// every node's `inputs` written out.
pub fn parse_nodes(raw: &[Value]) -> Result<Vec<NodeConfig>, NodeError> {
    let mut nodes = vec![];
    for (at, v) in expand(raw)? {
        nodes.push(parse_node(&at, &v)?);
    }
    check_structure(&mut nodes)?;
    Ok(nodes)
}

fn expand(raw: &[Value]) -> Result<Vec<(Vec<String>, Value)>, NodeError> {
    let mut out: Vec<(Vec<String>, Value)> = vec![];
    for (i, v) in raw.iter().enumerate() {
        let at = vec![i.to_string()];
        let Some(block) = v.as_object().filter(|o| o.contains_key("repeat")) else {
            out.push((at, v.clone()));
            continue;
        };
        for k in block.keys() {
            if k != "repeat" && k != "nodes" {
                return Err(err(
                    &at,
                    Some(k),
                    format!("unknown key `{k}` in a repeat block; expected `repeat` and `nodes`"),
                ));
            }
        }
        let n = block["repeat"]
            .as_u64()
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                err(
                    &at,
                    Some("repeat"),
                    "`repeat` must be a positive integer".into(),
                )
            })?;
        let inner = block
            .get("nodes")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                err(
                    &at,
                    Some("nodes"),
                    "a repeat block needs a non-empty list `nodes`".into(),
                )
            })?;
        for r in 0..n {
            let before = out
                .last()
                .and_then(|(_, v)| v.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("input")
                .to_string();
            for (j, node) in inner.iter().enumerate() {
                let at = vec![i.to_string(), "nodes".into(), j.to_string()];
                if node.get("repeat").is_some() {
                    return Err(err(
                        &at,
                        Some("repeat"),
                        "repeat blocks cannot be nested".into(),
                    ));
                }
                let sub = |s: &str| s.replace("{i}", &r.to_string()).replace("{in}", &before);
                let mut node = node.clone();
                if let Some(o) = node.as_object_mut() {
                    if let Some(Value::String(s)) = o.get_mut("name") {
                        *s = sub(s);
                    }
                    if let Some(Value::Array(a)) = o.get_mut("inputs") {
                        for x in a {
                            if let Value::String(s) = x {
                                *s = sub(s);
                            }
                        }
                    }
                }
                out.push((at, node));
            }
        }
    }
    Ok(out)
}

fn parse_node(at: &[String], v: &Value) -> Result<NodeConfig, NodeError> {
    let obj = v.as_object().ok_or_else(|| {
        err(
            at,
            None,
            format!(
                "node #{} must be a table like {{ name = \"c1\", op = \"conv\", … }}",
                at[0]
            ),
        )
    })?;
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(err(
                at,
                Some("name"),
                "`name` must be a non-empty string".into(),
            ));
        }
        None => return Err(err(at, None, format!("node #{} has no `name`", at[0]))),
    };
    let op_name = match obj.get("op") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(err(
                at,
                Some("op"),
                format!("node `{name}`: `op` must be a string"),
            ));
        }
        None => return Err(err(at, None, format!("node `{name}` has no `op`"))),
    };
    let Some(&(_, kind, keys, required)) = OPS.iter().find(|o| o.0 == op_name) else {
        let all: Vec<&str> = OPS.iter().map(|o| o.0).collect();
        return Err(err(
            at,
            Some("op"),
            format!(
                "node `{name}`: unknown op `{op_name}`; expected one of: {}",
                all.join(", ")
            ),
        ));
    };
    for k in obj.keys() {
        let own = ["name", "op", "inputs"].contains(&k.as_str()) || keys.contains(&k.as_str());
        if !own {
            let mut expected = vec!["inputs"];
            expected.extend(keys);
            return Err(err(
                at,
                Some(k),
                format!(
                    "node `{name}`: unknown key `{k}` for a {op_name} node; expected one of: {}",
                    expected.join(", ")
                ),
            ));
        }
    }
    for k in &keys[..required] {
        if !obj.contains_key(*k) {
            return Err(err(
                at,
                None,
                format!("node `{name}`: a {op_name} node needs `{k}`"),
            ));
        }
    }
    // Each key on its own, so a bad value is reported at its key.
    let base = |extra: Option<(&String, &Value)>| {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), Value::String(name.clone()));
        m.insert("op".into(), Value::String(op_name.into()));
        if let Some((k, v)) = extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    };
    for (k, val) in obj {
        if k == "name" || k == "op" {
            continue;
        }
        if let Err(e) = serde_json::from_value::<NodeConfig>(base(Some((k, val)))) {
            let want = match k.as_str() {
                "inputs" => "a list of node names".to_string(),
                "c_out" => "a positive integer or \"classes\"".into(),
                "groups" if kind == OpKind::Conv => "a positive integer or \"depthwise\"".into(),
                "padding" => "\"same\", \"valid\", an integer, one integer per dimension or one [low, high] pair per dimension".into(),
                _ => e.to_string(),
            };
            return Err(err(
                at,
                Some(k),
                format!("node `{name}`: `{k}` must be {want}"),
            ));
        }
    }
    let mut node: NodeConfig = serde_json::from_value(v.clone())
        .map_err(|e| err(at, None, format!("node `{name}`: {e}")))?;
    node.origin = Origin(at.to_vec());
    check_values(&node)?;
    Ok(node)
}

/// Value checks of one node that need no shapes.
fn check_values(n: &NodeConfig) -> Result<(), NodeError> {
    let name = &n.name;
    let bad =
        |key: &str, m: String| Err(err(&n.origin.0, Some(key), format!("node `{name}`: {m}")));
    let nd = n.kernel.as_ref().map(Vec::len);
    if let Some(k) = &n.kernel
        && (!(1..=2).contains(&k.len()) || k.contains(&0))
    {
        return bad(
            "kernel",
            format!("`kernel` must be 1 or 2 sizes ≥ 1 (1-d or 2-d), got {k:?}"),
        );
    }
    for (key, v) in [("stride", &n.stride), ("dilation", &n.dilation)] {
        if let Some(v) = v
            && (Some(v.len()) != nd || v.contains(&0))
        {
            return bad(
                key,
                format!(
                    "`{key}` must have one entry ≥ 1 per kernel dimension ({}), got {v:?}",
                    nd.unwrap_or(0)
                ),
            );
        }
    }
    match &n.padding {
        Some(Padding::Each(v)) if Some(v.len()) != nd => {
            return bad(
                "padding",
                format!(
                    "`padding` must have one entry per kernel dimension ({}), got {v:?}",
                    nd.unwrap_or(0)
                ),
            );
        }
        Some(Padding::Pairs(v)) if Some(v.len()) != nd => {
            return bad(
                "padding",
                format!(
                    "`padding` must have one [low, high] pair per kernel dimension ({}), got {v:?}",
                    nd.unwrap_or(0)
                ),
            );
        }
        Some(Padding::Word(w)) if w != "same" && w != "valid" => {
            return bad(
                "padding",
                format!("`padding` must be \"same\", \"valid\" or numbers, got \"{w}\""),
            );
        }
        _ => {}
    }
    match &n.c_out {
        Some(Count::N(0)) => return bad("c_out", "`c_out` must be ≥ 1".into()),
        Some(Count::Word(w)) if w != "classes" => {
            return bad(
                "c_out",
                format!("`c_out` must be a number or \"classes\", got \"{w}\""),
            );
        }
        _ => {}
    }
    match &n.groups {
        Some(Count::N(0)) => return bad("groups", "`groups` must be ≥ 1".into()),
        Some(Count::Word(w)) if w != "depthwise" || n.op != OpKind::Conv => {
            return bad(
                "groups",
                format!("`groups` must be a number (or \"depthwise\" for a conv), got \"{w}\""),
            );
        }
        _ => {}
    }
    if let Some(p) = n.p
        && !(0.0..1.0).contains(&p)
    {
        return bad("p", format!("`p` must be in [0, 1), got {p}"));
    }
    if n.len == Some(0) {
        return bad("len", "`len` must be ≥ 1".into());
    }
    if let Some(e) = n.eps
        && !(e > 0.0 && e.is_finite())
    {
        return bad("eps", format!("`eps` must be > 0, got {e}"));
    }
    if let Some(m) = n.momentum
        && !(0.0..=1.0).contains(&m)
    {
        return bad("momentum", format!("`momentum` must be in [0, 1], got {m}"));
    }
    Ok(())
}

/// Names, references, cycles and input counts; fills in default inputs.
fn check_structure(nodes: &mut [NodeConfig]) -> Result<(), NodeError> {
    if nodes.is_empty() {
        return Err(err(
            &[],
            None,
            "the graph has no nodes; write at least the output, e.g. { name = \"fc\", op = \"linear\" }".into(),
        ));
    }
    let mut first: HashMap<String, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.name == "input" {
            return Err(err(
                &n.origin.0,
                Some("name"),
                "`input` names the network input; a node cannot be called so".into(),
            ));
        }
        if let Some(&j) = first.get(&n.name) {
            return Err(err(
                &n.origin.0,
                Some("name"),
                format!(
                    "duplicate node name `{}` (also node #{j} of the expanded list)",
                    n.name
                ),
            ));
        }
        first.insert(n.name.clone(), i);
    }
    let last = nodes.len() - 1;
    for i in 0..nodes.len() {
        if nodes[i].inputs.is_empty() {
            nodes[i].inputs = vec![if i == 0 {
                "input".into()
            } else {
                nodes[i - 1].name.clone()
            }];
        }
        let n = &nodes[i];
        let at = |m: String| {
            err(
                &n.origin.0,
                Some("inputs"),
                format!("node `{}`: {m}", n.name),
            )
        };
        for x in &n.inputs {
            if x == "input" {
                continue;
            }
            match first.get(x) {
                Some(&j) if j < i => {}
                Some(&j) if j == i => return Err(at("cycle: the node reads itself".into())),
                Some(&j) => {
                    return Err(match path_back(nodes, &first, j, i) {
                        Some(p) => at(format!(
                            "cycle: {} -> {} (a node may only read `input` or nodes listed before it)",
                            n.name,
                            p.join(" -> ")
                        )),
                        None => at(format!(
                            "input `{x}` is listed later (node #{j}); a node may only read `input` or nodes listed before it"
                        )),
                    });
                }
                None => {
                    let before: Vec<&str> = nodes[i.saturating_sub(12)..i]
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect();
                    return Err(at(format!(
                        "unknown input `{x}`; expected `input` or an earlier node{}{}{}",
                        if before.is_empty() { "" } else { ": " },
                        if i > 12 { "…, " } else { "" },
                        before.join(", ")
                    )));
                }
            }
        }
        let k = n.inputs.len();
        let (ok, want) = match n.op {
            OpKind::Add | OpKind::ChannelMul => (k == 2, "two inputs"),
            OpKind::Concat => (k >= 2, "at least two inputs"),
            _ => (k == 1, "one input"),
        };
        if !ok {
            return Err(at(format!("`{}` takes {want}, got {k}", op_entry(n.op).0)));
        }
        let needs_c_out = n.c_out.is_none()
            && match n.op {
                OpKind::Conv => n.groups != Some(Count::Word("depthwise".into())),
                OpKind::Linear => i != last,
                _ => false,
            };
        if needs_c_out {
            return Err(err(
                &n.origin.0,
                None,
                format!(
                    "node `{}`: a {} node needs `c_out` (only a final linear may leave it out for the class count)",
                    n.name,
                    op_entry(n.op).0
                ),
            ));
        }
    }
    let out = &nodes[last];
    if matches!(
        out.op,
        OpKind::Conv | OpKind::MaxPool | OpKind::AvgPool | OpKind::ChannelMul
    ) {
        return Err(err(
            &out.origin.0,
            Some("op"),
            format!(
                "node `{}` is the output, but a {} gives a (C, …) map, not a vector of class scores; end with a global_avg_pool or flatten and a linear",
                out.name,
                op_entry(out.op).0
            ),
        ));
    }
    Ok(())
}

/// Names along a path of reads from node `from` back to node `to`, ending with `to`.
fn path_back(
    nodes: &[NodeConfig],
    first: &HashMap<String, usize>,
    from: usize,
    to: usize,
) -> Option<Vec<String>> {
    let mut seen = vec![false; nodes.len()];
    fn go(
        nodes: &[NodeConfig],
        first: &HashMap<String, usize>,
        at: usize,
        to: usize,
        seen: &mut [bool],
    ) -> Option<Vec<String>> {
        if at == to {
            return Some(vec![nodes[at].name.clone()]);
        }
        if seen[at] {
            return None;
        }
        seen[at] = true;
        let ins: Vec<usize> = if nodes[at].inputs.is_empty() {
            (at > 0).then(|| at - 1).into_iter().collect()
        } else {
            nodes[at]
                .inputs
                .iter()
                .filter_map(|x| first.get(x).copied())
                .collect()
        };
        for j in ins {
            if let Some(mut p) = go(nodes, first, j, to, seen) {
                p.insert(0, nodes[at].name.clone());
                return Some(p);
            }
        }
        None
    }
    go(nodes, first, from, to, &mut seen)
}

fn same_pad(k: usize, d: usize) -> (usize, usize) {
    let total = d * (k - 1);
    (total / 2, total - total / 2)
}

impl NodeListConfig {
    /// Lower to a shape-checked graph (the nodes are checked again, so a configuration read
    /// from a file is held to the same rules).
    pub fn build(&self) -> Result<Graph, NodeError> {
        let mut nodes = self.nodes.clone();
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.origin.0.is_empty() {
                n.origin = Origin(vec![i.to_string()]);
            }
            check_values(n)?;
        }
        check_structure(&mut nodes)?;
        if self.classes == 0 || self.input.is_empty() || self.input.contains(&0) {
            return Err(err(
                &[],
                None,
                format!(
                    "the data gives input shape {:?} and {} classes; both must be non-empty",
                    self.input, self.classes
                ),
            ));
        }
        let mut b = GraphBuilder::new(self.input.clone());
        let mut ids: HashMap<&str, usize> = HashMap::from([("input", 0)]);
        let last = nodes.len() - 1;
        for (i, n) in nodes.iter().enumerate() {
            let ins: Vec<usize> = n.inputs.iter().map(|x| ids[x.as_str()]).collect();
            let op = self.lower(n, &b, &ins, i == last)?;
            let v = b
                .push(&n.name, op, ins)
                .map_err(|e| err(&n.origin.0, None, format!("node `{}`: {e:#}", n.name)))?;
            ids.insert(&n.name, v);
        }
        let g = b.finish();
        let out = &g.nodes[last];
        if out.out_shape != [self.classes] {
            return Err(err(
                &nodes[last].origin.0,
                None,
                format!(
                    "node `{}` is the output and gives shape {:?}; it must give a vector of the {} classes (end with a `linear` whose `c_out` is left out or \"classes\")",
                    out.name, out.out_shape, self.classes
                ),
            ));
        }
        Ok(g)
    }

    fn lower(
        &self,
        n: &NodeConfig,
        b: &GraphBuilder,
        ins: &[usize],
        last: bool,
    ) -> Result<Op, NodeError> {
        let name = &n.name;
        let fail =
            |key: &str, m: String| err(&n.origin.0, Some(key), format!("node `{name}`: {m}"));
        let x = b.shape(ins[0]).to_vec();
        let src = &n.inputs[0];
        let count = |c: &Option<Count>, default: Option<usize>| -> Result<usize, NodeError> {
            match c {
                Some(Count::N(k)) => Ok(*k),
                Some(Count::Word(_)) => Ok(self.classes),
                None => default.ok_or_else(|| fail("c_out", "needs `c_out`".into())),
            }
        };
        let window = |kernel: &[usize], what: &str| -> Result<Vec<(usize, usize)>, NodeError> {
            let nd = kernel.len();
            if x.len() != nd + 1 {
                return Err(fail(
                    "kernel",
                    format!(
                        "a {nd}-d {what} needs a (C, {}) input; `{src}` gives shape {x:?}",
                        if nd == 1 { "L" } else { "H, W" }
                    ),
                ));
            }
            let dil = n.dilation.clone().unwrap_or(vec![1; nd]);
            let pad: Vec<(usize, usize)> = match &n.padding {
                None => vec![(0, 0); nd],
                Some(Padding::Word(w)) if w == "valid" => vec![(0, 0); nd],
                Some(Padding::Word(_)) => (0..nd).map(|i| same_pad(kernel[i], dil[i])).collect(),
                Some(Padding::One(p)) => vec![(*p, *p); nd],
                Some(Padding::Each(v)) => v.iter().map(|&p| (p, p)).collect(),
                Some(Padding::Pairs(v)) => v.iter().map(|p| (p[0], p[1])).collect(),
            };
            for i in 0..nd {
                let span = dil[i] * (kernel[i] - 1) + 1;
                if span > x[i + 1] + pad[i].0 + pad[i].1 {
                    return Err(fail(
                        "kernel",
                        format!(
                            "kernel {kernel:?} (dilation {dil:?}, padding {pad:?}) is larger than its input {:?} (`{src}`)",
                            &x[1..]
                        ),
                    ));
                }
            }
            Ok(pad)
        };
        Ok(match n.op {
            OpKind::Conv => {
                let kernel = n.kernel.clone().expect("checked: conv has a kernel");
                let nd = kernel.len();
                let padding = window(&kernel, "conv")?;
                let c_in = x[0];
                let depthwise = n.groups == Some(Count::Word("depthwise".into()));
                let groups = match &n.groups {
                    Some(Count::N(g)) => *g,
                    Some(Count::Word(_)) => c_in,
                    None => 1,
                };
                let default = depthwise.then_some(c_in);
                let c_out = count(&n.c_out, default)?;
                if !c_in.is_multiple_of(groups) || !c_out.is_multiple_of(groups) {
                    return Err(fail(
                        "groups",
                        format!(
                            "{groups} groups do not divide the channels ({c_in} in from `{src}`, {c_out} out)"
                        ),
                    ));
                }
                Op::Conv {
                    c_in,
                    c_out,
                    stride: n.stride.clone().unwrap_or(vec![1; nd]),
                    dilation: n.dilation.clone().unwrap_or(vec![1; nd]),
                    kernel,
                    padding,
                    groups,
                    bias: n.bias.unwrap_or(true),
                }
            }
            OpKind::Linear => {
                if x.len() != 1 {
                    return Err(fail(
                        "inputs",
                        format!(
                            "a linear node needs a vector input; `{src}` gives shape {x:?} (put a global_avg_pool or flatten before it)"
                        ),
                    ));
                }
                Op::Linear {
                    c_in: x[0],
                    c_out: count(&n.c_out, last.then_some(self.classes))?,
                    bias: n.bias.unwrap_or(true),
                }
            }
            OpKind::BatchNorm => Op::BatchNorm {
                channels: x[0],
                eps: n.eps.unwrap_or(1e-5),
                momentum: n.momentum.unwrap_or(0.1),
            },
            OpKind::Relu => Op::Relu,
            OpKind::Relu6 => Op::Relu6,
            OpKind::Sigmoid => Op::Sigmoid,
            OpKind::HardSigmoid => Op::HardSigmoid,
            OpKind::HardSwish => Op::HardSwish,
            OpKind::Dropout => Op::Dropout {
                p: n.p.expect("checked: dropout has p"),
            },
            OpKind::Flatten => Op::Flatten,
            OpKind::Add => {
                let y = b.shape(ins[1]);
                if x != y {
                    return Err(fail(
                        "inputs",
                        format!(
                            "add of `{src}` {x:?} and `{}` {y:?}: the shapes differ",
                            n.inputs[1]
                        ),
                    ));
                }
                Op::Add
            }
            OpKind::ChannelMul => {
                let s = b.shape(ins[1]);
                if x.len() < 2 || s != [x[0]] {
                    return Err(fail(
                        "inputs",
                        format!(
                            "channel_mul scales `{src}` {x:?} by `{}` {s:?}; it needs a (C, …) input and a [C] vector",
                            n.inputs[1]
                        ),
                    ));
                }
                Op::ChannelMul
            }
            OpKind::Concat => {
                for (k, &v) in ins.iter().enumerate().skip(1) {
                    let s = b.shape(v);
                    if s.len() != x.len() || s[1..] != x[1..] {
                        return Err(fail(
                            "inputs",
                            format!(
                                "concat of `{src}` {x:?} and `{}` {s:?}: only the channels may differ",
                                n.inputs[k]
                            ),
                        ));
                    }
                }
                Op::Concat
            }
            OpKind::Narrow => {
                let (start, len) = (n.start.unwrap_or(0), n.len.expect("checked"));
                if start + len > x[0] {
                    return Err(fail(
                        "len",
                        format!(
                            "channels {start}..{} of `{src}`, which has {} channels",
                            start + len,
                            x[0]
                        ),
                    ));
                }
                Op::Narrow { start, len }
            }
            OpKind::ChannelShuffle => {
                let g = match n.groups {
                    Some(Count::N(g)) => g,
                    _ => 1,
                };
                if !x[0].is_multiple_of(g) {
                    return Err(fail(
                        "groups",
                        format!("{g} groups do not divide the {} channels of `{src}`", x[0]),
                    ));
                }
                Op::ChannelShuffle { groups: g }
            }
            OpKind::MaxPool | OpKind::AvgPool => {
                let kernel = n.kernel.clone().expect("checked: pool has a kernel");
                let padding = window(&kernel, "pool")?;
                if n.op == OpKind::MaxPool
                    && padding
                        .iter()
                        .zip(&kernel)
                        .any(|(p, &k)| p.0 >= k || p.1 >= k)
                {
                    return Err(fail(
                        "padding",
                        format!(
                            "max pool padding {padding:?} must be smaller than the kernel {kernel:?}"
                        ),
                    ));
                }
                let stride = n.stride.clone().unwrap_or(kernel.clone());
                if n.op == OpKind::MaxPool {
                    Op::MaxPool {
                        kernel,
                        stride,
                        padding,
                    }
                } else {
                    Op::AvgPool {
                        kernel,
                        stride,
                        padding,
                    }
                }
            }
            OpKind::GlobalAvgPool => {
                if x.len() < 2 {
                    return Err(fail(
                        "inputs",
                        format!("global_avg_pool needs a (C, …) input; `{src}` gives shape {x:?}"),
                    ));
                }
                Op::GlobalAvgPool
            }
        })
    }
}

//! Networks written node by node: a residual block with squeeze-and-excitation counted by hand
//! and trained for one epoch, the `repeat` shorthand, and shape errors that name node and key.

use super::archs::{images, one_epoch};
use crate::arch::node_list::{NodeListConfig, parse_nodes};
use crate::config::ModelConfig;
use crate::data::DataSet;
use crate::graph::Op;
use crate::model::Model;
use crate::train::*;
use serde_json::{Value, json};

/// conv → BN → ReLU, then depthwise → BN → 1×1 → BN, SE (hard-sigmoid gate), residual add.
fn residual_se() -> Value {
    json!([
        { "name": "c1", "op": "conv", "c_out": 8, "kernel": [3, 3], "padding": "same", "bias": false },
        { "name": "b1", "op": "batch_norm" },
        { "name": "r1", "op": "relu" },
        { "name": "dw", "op": "conv", "kernel": [3, 3], "padding": "same", "groups": "depthwise", "bias": false },
        { "name": "b2", "op": "batch_norm" },
        { "name": "pw", "op": "conv", "c_out": 8, "kernel": [1, 1], "bias": false },
        { "name": "b3", "op": "batch_norm" },
        { "name": "se.pool", "op": "global_avg_pool" },
        { "name": "se.f1", "op": "linear", "c_out": 4 },
        { "name": "se.relu", "op": "relu" },
        { "name": "se.f2", "op": "linear", "c_out": 8 },
        { "name": "se.gate", "op": "hard_sigmoid" },
        { "name": "se.mul", "op": "channel_mul", "inputs": ["b3", "se.gate"] },
        { "name": "add", "op": "add", "inputs": ["se.mul", "r1"] },
        { "name": "r2", "op": "relu6" },
        { "name": "pool", "op": "global_avg_pool" },
        { "name": "drop", "op": "dropout", "p": 0.1 },
        { "name": "fc", "op": "linear" }
    ])
}

fn config(nodes: &Value, classes: usize) -> ModelConfig {
    ModelConfig::Graph(NodeListConfig {
        input: vec![3, 8, 8],
        classes,
        nodes: parse_nodes(nodes.as_array().unwrap()).unwrap(),
    })
}

#[test]
fn residual_se_graph_counts_by_hand_and_trains_one_epoch() {
    let cfg = config(&residual_se(), 3);
    let g = cfg.build().unwrap();
    // Params: c1 8·3·3·3 = 216, dw 8·1·3·3 = 72, pw 8·8 = 64 (no biases); three BNs 3·16 = 48;
    // se.f1 8·4 + 4 = 36, se.f2 4·8 + 8 = 40; fc 8·3 + 3 = 27. Σ = 503.
    assert_eq!(g.params(), 216 + 72 + 64 + 48 + 36 + 40 + 27);
    // MACs on 8×8 ('same' padding keeps 64 positions): c1 64·8·27 = 13,824, dw 64·8·9 = 4,608,
    // pw 64·8·8 = 4,096; se 32 + 32; fc 24. Σ = 22,616.
    assert_eq!(g.macs(), 13_824 + 4_608 + 4_096 + 32 + 32 + 24);
    let node = |n: &str| g.nodes.iter().find(|x| x.name == n).unwrap();
    assert_eq!(node("dw").out_shape, [8, 8, 8]);
    assert!(matches!(
        node("dw").op,
        Op::Conv {
            groups: 8,
            c_in: 8,
            c_out: 8,
            ..
        }
    ));
    assert_eq!(node("fc").out_shape, [3]);
    assert!(matches!(
        node("fc").op,
        Op::Linear {
            c_in: 8,
            c_out: 3,
            bias: true
        }
    ));
    // Inputs default to the previous node; `add` reads the two it names.
    assert_eq!(node("b1").inputs, [1]);
    assert_eq!(node("add").inputs, [13, 3]);

    let d = DataSet {
        train: images(30, 1),
        val: Some(images(12, 2)),
        test: None,
    };
    let tc = one_epoch();
    let run = || {
        let m = Model::new(cfg.clone(), 0).unwrap();
        let before: Vec<u32> = weights(&m);
        let r = train(&m, &d, &tc, Hooks::default()).unwrap();
        (r, before, weights(&m))
    };
    let (r1, before, w1) = run();
    let (_, _, w2) = run();
    assert_ne!(before, w1, "training changed no weight");
    assert_eq!(w1, w2, "same seed, different weights");
    assert_eq!(r1.history.len(), 1);
    assert!(r1.history[0].train.loss.is_finite());
    // The configuration survives a save/load round trip as JSON.
    let text = serde_json::to_string(&cfg).unwrap();
    let back: ModelConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back.build().unwrap().params(), 503);
}

fn weights(m: &Model) -> Vec<u32> {
    m.params()
        .iter()
        .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn repeat_blocks_expand_like_the_written_out_list() {
    let block = json!([
        { "name": "s", "op": "conv", "c_out": 4, "kernel": [3, 3], "padding": 1 },
        { "repeat": 2, "nodes": [
            { "name": "b{i}.c", "op": "conv", "c_out": 4, "kernel": [3, 3], "padding": "same" },
            { "name": "b{i}.r", "op": "relu" },
            { "name": "b{i}.add", "op": "add", "inputs": ["b{i}.r", "{in}"] }
        ]},
        { "name": "pool", "op": "global_avg_pool" },
        { "name": "fc", "op": "linear", "c_out": "classes" }
    ]);
    let written = json!([
        { "name": "s", "op": "conv", "c_out": 4, "kernel": [3, 3], "padding": [1, 1] },
        { "name": "b0.c", "op": "conv", "c_out": 4, "kernel": [3, 3], "padding": "same" },
        { "name": "b0.r", "op": "relu" },
        { "name": "b0.add", "op": "add", "inputs": ["b0.r", "s"] },
        { "name": "b1.c", "op": "conv", "c_out": 4, "kernel": [3, 3], "padding": "same" },
        { "name": "b1.r", "op": "relu" },
        { "name": "b1.add", "op": "add", "inputs": ["b1.r", "b0.add"] },
        { "name": "pool", "op": "global_avg_pool" },
        { "name": "fc", "op": "linear" }
    ]);
    let a = config(&block, 5).build().unwrap();
    let b = config(&written, 5).build().unwrap();
    assert_eq!(a.nodes, b.nodes);
    // s 4·27 + 4 = 112, two convs 2·(4·36 + 4) = 296, fc 4·5 + 5 = 25.
    assert_eq!(a.params(), 112 + 296 + 25);
    // Errors inside a block point into it.
    let bad = json!([{ "repeat": 2, "nodes": [{ "name": "x{i}", "op": "reluu" }] }]);
    let e = parse_nodes(bad.as_array().unwrap()).unwrap_err();
    assert_eq!(e.at, ["0", "nodes", "0", "op"]);
    assert!(e.message.contains("unknown op `reluu`"), "{}", e.message);
}

#[test]
fn shape_errors_name_the_node_and_key() {
    let cases: Vec<(Value, &[&str], &str)> = vec![
        (
            json!([
                { "name": "a", "op": "conv", "c_out": 4, "kernel": [3, 3] },
                { "name": "b", "op": "conv", "c_out": 4, "kernel": [1, 1], "inputs": ["input"] },
                { "name": "sum", "op": "add", "inputs": ["a", "b"] }
            ]),
            &["2", "inputs"],
            "node `sum`: add of `a` [4, 6, 6] and `b` [4, 8, 8]: the shapes differ",
        ),
        (
            json!([{ "name": "g", "op": "conv", "c_out": 4, "kernel": [1, 1], "groups": 2 }, { "name": "pool", "op": "global_avg_pool" }, { "name": "fc", "op": "linear" }]),
            &["0", "groups"],
            "node `g`: 2 groups do not divide the channels (3 in from `input`, 4 out)",
        ),
        (
            json!([{ "name": "k", "op": "conv", "c_out": 3, "kernel": [9, 9] }, { "name": "pool", "op": "global_avg_pool" }, { "name": "fc", "op": "linear" }]),
            &["0", "kernel"],
            "is larger than its input [8, 8]",
        ),
        (
            json!([{ "name": "k1", "op": "conv", "c_out": 3, "kernel": [3] }, { "name": "pool", "op": "global_avg_pool" }, { "name": "fc", "op": "linear" }]),
            &["0", "kernel"],
            "a 1-d conv needs a (C, L) input; `input` gives shape [3, 8, 8]",
        ),
        (
            json!([{ "name": "fc", "op": "linear" }]),
            &["0", "inputs"],
            "put a global_avg_pool or flatten before it",
        ),
        (
            json!([
                { "name": "p", "op": "global_avg_pool" },
                { "name": "m", "op": "channel_mul", "inputs": ["input", "input"] },
                { "name": "pool2", "op": "global_avg_pool" },
                { "name": "fc", "op": "linear" }
            ]),
            &["1", "inputs"],
            "it needs a (C, …) input and a [C] vector",
        ),
        (
            json!([{ "name": "n", "op": "narrow", "start": 2, "len": 2 }]),
            &["0", "len"],
            "channels 2..4 of `input`, which has 3 channels",
        ),
        (
            json!([
                { "name": "c", "op": "conv", "c_out": 4, "kernel": [1, 1] },
                { "name": "pool", "op": "global_avg_pool" }
            ]),
            &["1"],
            "node `pool` is the output and gives shape [4]; it must give a vector of the 3 classes",
        ),
        (
            json!([
                { "name": "pool", "op": "global_avg_pool" },
                { "name": "fc", "op": "linear", "c_out": 5 }
            ]),
            &["1"],
            "node `fc` is the output and gives shape [5]",
        ),
        (
            json!([{ "name": "mp", "op": "max_pool", "kernel": [2, 2], "padding": 2 }, { "name": "pool", "op": "global_avg_pool" }, { "name": "fc", "op": "linear" }]),
            &["0", "padding"],
            "must be smaller than the kernel",
        ),
    ];
    // An output that can never be a vector is refused before any shape is known.
    let e = parse_nodes(&[json!({ "name": "c", "op": "conv", "c_out": 3, "kernel": [1, 1] })])
        .unwrap_err();
    assert_eq!(e.at, ["0", "op"]);
    assert!(
        e.message
            .contains("is the output, but a conv gives a (C, …) map")
    );
    for (nodes, at, msg) in cases {
        let c = NodeListConfig {
            input: vec![3, 8, 8],
            classes: 3,
            nodes: parse_nodes(nodes.as_array().unwrap()).unwrap(),
        };
        let e = c.build().unwrap_err();
        assert_eq!(e.at, at, "{nodes}: {}", e.message);
        assert!(
            e.message.contains(msg),
            "{nodes}: {:?} lacks {msg:?}",
            e.message
        );
        // Through `ModelConfig::build` the error stays a `NodeError` (stages downcast it).
        let any = ModelConfig::Graph(c).build().unwrap_err();
        assert!(
            any.downcast_ref::<crate::arch::node_list::NodeError>()
                .is_some()
        );
    }
}

/// `[low, high]` pairs (TensorFlow's 'SAME' at stride 2 on an even size, as imported from ONNX):
/// 8 + 0 + 1 = 9 positions, (9 − 3) / 2 + 1 = 4 outputs; a max pool pads (0, 1) on the 4×4 map
/// too; a pair count that differs from the kernel's dimensions is an error at the key.
#[test]
fn asymmetric_padding_pairs() {
    let cfg = config(
        &json!([
            { "name": "c", "op": "conv", "c_out": 4, "kernel": [3, 3], "stride": [2, 2], "padding": [[0, 1], [0, 1]] },
            { "name": "m", "op": "max_pool", "kernel": [3, 3], "stride": [2, 2], "padding": [[0, 1], [1, 1]] },
            { "name": "pool", "op": "global_avg_pool" },
            { "name": "fc", "op": "linear" }
        ]),
        3,
    );
    let g = cfg.build().unwrap();
    let node = |n: &str| g.nodes.iter().find(|x| x.name == n).unwrap();
    assert_eq!(node("c").out_shape, [4, 4, 4]);
    assert!(matches!(&node("c").op, Op::Conv { padding, .. } if padding == &[(0, 1), (0, 1)]));
    // (4 + 1 − 3) / 2 + 1 = 2 rows, (4 + 2 − 3) / 2 + 1 = 2 columns
    assert_eq!(node("m").out_shape, [4, 2, 2]);
    // serialises back to the same pairs
    let ModelConfig::Graph(nl) = &cfg else {
        unreachable!()
    };
    assert_eq!(
        serde_json::to_value(&nl.nodes[0].padding).unwrap(),
        json!([[0, 1], [0, 1]])
    );
    let e = parse_nodes(
        json!([{ "name": "c", "op": "conv", "c_out": 4, "kernel": [3, 3], "padding": [[0, 1]] }])
            .as_array()
            .unwrap(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("`padding` must have one [low, high] pair per kernel dimension (2)"),
        "{e}"
    );
}

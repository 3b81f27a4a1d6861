//! Asymmetric (causal) padding in the export IR: a causal conv by hand, causality of the
//! float and int8 reference evaluators on causal TCNs, and the JSON architecture form of
//! padding (numbers when symmetric — the old form, still read — `[begin, end]` otherwise).

mod common;

use whittle_export::{
    Int8Params, Layer, Network, Tensor32, fold_batchnorm, read_safetensors, reference,
    write_safetensors,
};

#[test]
fn causal_conv_by_hand() {
    // k = 2, d = 2, pads (2, 0): y[t] = w0·x[t−2] + w1·x[t] + b.
    let net = Network {
        name: "c".into(),
        input: ("x".into(), vec![1, 1, 4]),
        output: "y".into(),
        layers: vec![Layer::Conv {
            input: "x".into(),
            output: "y".into(),
            weight: Tensor32::new(vec![1, 1, 2], vec![1.0, 10.0]).unwrap(),
            bias: Some(vec![0.5]),
            stride: vec![1],
            padding: vec![(2, 0)],
            dilation: vec![2],
            groups: 1,
        }],
    };
    let y = reference::run(&net, &[1.0, 2.0, 4.0, 8.0], None).unwrap();
    assert_eq!(y, vec![10.5, 20.5, 41.5, 82.5]);
    // The mirror image (0, 2) looks ahead: y[t] = w0·x[t] + w1·x[t+2] + b.
    let mut ahead = net.clone();
    if let Layer::Conv { padding, .. } = &mut ahead.layers[0] {
        padding[0] = (0, 2);
    }
    let y = reference::run(&ahead, &[1.0, 2.0, 4.0, 8.0], None).unwrap();
    assert_eq!(y, vec![41.5, 82.5, 4.5, 8.5]);
}

/// Time steps of every per-step tensor of `net` (3-D, 16 steps; not the pooled ones) that
/// differ between inputs `a` and `b`.
fn changed_steps(net: &Network, a: &[f32], b: &[f32], q: Option<&Int8Params>) -> Vec<usize> {
    let ra = reference::run_all(net, a, q).unwrap();
    let rb = reference::run_all(net, b, q).unwrap();
    let shapes = net.shapes().unwrap();
    let mut steps = Vec::new();
    for (name, va) in &ra {
        let s = &shapes[name];
        if s.len() != 3 || s[2] != 16 {
            continue;
        }
        for (i, (x, y)) in va.iter().zip(&rb[name]).enumerate() {
            if x != y {
                steps.push(i % s[2]);
            }
        }
    }
    steps
}

#[test]
fn causal_tcn_outputs_never_see_the_future() {
    for residual in [false, true] {
        let net = common::causal_tcn(21, residual);
        let folded = fold_batchnorm(&net).unwrap();
        let calib: Vec<Vec<f32>> = (0..8).map(|s| common::input(&net, 300 + s)).collect();
        let params = Int8Params::calibrate(&folded, &calib).unwrap();
        let x = common::input(&net, 5);
        // Change the input from step 10 on (every channel).
        let t0 = 10;
        let mut x2 = x.clone();
        for (i, v) in x2.iter_mut().enumerate() {
            if i % 16 >= t0 {
                *v = -*v + 0.3;
            }
        }
        for (label, n, q) in [("float", &net, None), ("int8", &folded, Some(&params))] {
            let steps = changed_steps(n, &x, &x2, q);
            assert!(
                steps.iter().all(|&t| t >= t0),
                "{} {label}: steps {steps:?} changed before {t0}",
                net.name
            );
            assert!(
                steps.contains(&t0) && steps.contains(&15),
                "{} {label}: the change must propagate ({steps:?})",
                net.name
            );
        }
        // The logits (after pooling over all steps) do change.
        assert_ne!(
            reference::run(&net, &x, None).unwrap(),
            reference::run(&net, &x2, None).unwrap()
        );
    }
}

#[test]
fn json_padding_is_a_number_when_symmetric_and_a_pair_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let net = common::causal_tcn(4, true);
    let (_, js) = write_safetensors(&net, dir.path(), "n").unwrap();
    let arch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
    let pads: Vec<String> = arch["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["op"] == "conv")
        .map(|l| l["padding"].to_string())
        .collect();
    // c0 (k3 d1), c1 (k3 d2), c2 (k3 d4), c3 (k2 d1), 1×1 projection.
    assert_eq!(pads, ["[[2,0]]", "[[4,0]]", "[[8,0]]", "[[1,0]]", "[0]"]);
    assert_eq!(read_safetensors(dir.path(), "n").unwrap(), net);

    // A file in the old symmetric form (`"padding": [1]`) still loads as (1, 1).
    let old = common::tcn(2);
    let (_, js) = write_safetensors(&old, dir.path(), "old").unwrap();
    let text = std::fs::read_to_string(&js).unwrap();
    assert!(
        text.contains("\"padding\": [\n        1\n      ]"),
        "{text}"
    );
    let back = read_safetensors(dir.path(), "old").unwrap();
    let Layer::Conv { padding, .. } = &back.layers[0] else {
        panic!("layer 0 is not a conv")
    };
    assert_eq!(padding, &vec![(1, 1)]);

    // A malformed pair is an error naming the file.
    std::fs::write(
        &js,
        text.replacen("[\n        1\n      ]", "[[1, 2, 3]]", 1),
    )
    .unwrap();
    let e = format!("{:#}", read_safetensors(dir.path(), "old").unwrap_err());
    assert!(e.contains("old.json"), "{e}");
}

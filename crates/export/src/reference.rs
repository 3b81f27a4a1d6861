//! Naive reference evaluator of a [`Network`] (direct loops): the definition of the layer
//! semantics, in float or with int8 fake quantization (the numbers the exported files must
//! reproduce). In int8 mode every layer reads the dequantized values of its inputs, computes
//! in float and quantizes its output with the output's own parameters (ReLU6 is thus a clamp
//! of the int8 grid, sigmoid / hard swish a dequantize → f32 → requantize, concat and the
//! data-movement ops a requantization to the output's scale); only the weighted layers
//! quantize their weights and biases.

use crate::network::{Layer, Network, PoolKind};
use crate::quant::{Int8Params, quantize_bias, quantize_weights};
use anyhow::{Context, Result, ensure};
use std::collections::BTreeMap;

/// Runs the network on one input (row-major, shape `net.input.1`) and returns the output.
/// With `q`, weights, biases and every tensor are fake-quantized as the int8 exports do.
pub fn run(net: &Network, input: &[f32], q: Option<&Int8Params>) -> Result<Vec<f32>> {
    let mut all = run_all(net, input, q)?;
    all.remove(&net.output)
        .with_context(|| format!("output `{}` missing", net.output))
}

/// Like [`run`] but returns every tensor by name.
pub fn run_all(
    net: &Network,
    input: &[f32],
    q: Option<&Int8Params>,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let shapes = net.shapes()?;
    if q.is_some() {
        crate::network::require_folded(net)?;
    }
    let (in_name, in_shape) = &net.input;
    let n: usize = in_shape.iter().product();
    ensure!(
        input.len() == n,
        "input has {} values, shape {in_shape:?} needs {n}",
        input.len()
    );
    let mut vals: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let fake = |name: &str, mut v: Vec<f32>| -> Result<Vec<f32>> {
        if let Some(p) = q {
            let a = p.get(name)?;
            v.iter_mut().for_each(|x| *x = a.fake(*x));
        }
        Ok(v)
    };
    vals.insert(in_name.clone(), fake(in_name, input.to_vec())?);
    for layer in &net.layers {
        let x = &vals[layer.inputs()[0]];
        let xs = &shapes[layer.inputs()[0]];
        let y = match layer {
            Layer::Conv {
                input,
                weight,
                bias,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                let (w, b) = params(weight.shape[0], &weight.data, bias, input, q)?;
                let sp = weight.shape.len() - 2;
                // 1-D is 2-D with height 1.
                let (h, wd) = if sp == 1 { (1, xs[2]) } else { (xs[2], xs[3]) };
                let k = if sp == 1 {
                    [1, weight.shape[2]]
                } else {
                    [weight.shape[2], weight.shape[3]]
                };
                let two = |v: &Vec<usize>, d| if sp == 1 { [d, v[0]] } else { [v[0], v[1]] };
                let pads = if sp == 1 {
                    [(0, 0), padding[0]]
                } else {
                    [padding[0], padding[1]]
                };
                conv2d(
                    x,
                    [xs[1], h, wd],
                    &w,
                    &b,
                    weight.shape[0],
                    k,
                    two(stride, 1),
                    pads,
                    two(dilation, 1),
                    *groups,
                )
            }
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
                ..
            } => {
                let per: usize = xs[2..].iter().product();
                x.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let c = i / per;
                        gamma[c] * (v - mean[c]) / (var[c] + eps).sqrt() + beta[c]
                    })
                    .collect()
            }
            Layer::Relu { .. } => x.iter().map(|v| v.max(0.0)).collect(),
            Layer::Add { b, .. } => x
                .iter()
                .zip(&vals[b.as_str()])
                .map(|(a, b)| a + b)
                .collect(),
            Layer::GlobalAvgPool { .. } => {
                let per: usize = xs[2..].iter().product();
                x.chunks(per)
                    .map(|c| c.iter().sum::<f32>() / per as f32)
                    .collect()
            }
            Layer::Flatten { .. } => x.clone(),
            Layer::Linear {
                input,
                weight,
                bias,
                ..
            } => {
                let (o, i) = (weight.shape[0], weight.shape[1]);
                let (w, b) = params(o, &weight.data, bias, input, q)?;
                (0..o)
                    .map(|r| b[r] + (0..i).map(|c| w[r * i + c] * x[c]).sum::<f32>())
                    .collect()
            }
            Layer::Activation { act, .. } => x.iter().map(|&v| act.f(v)).collect(),
            Layer::ChannelMul { s, .. } => {
                let sv = &vals[s.as_str()];
                let per: usize = xs[2..].iter().product();
                x.iter().enumerate().map(|(i, v)| v * sv[i / per]).collect()
            }
            Layer::Concat { inputs, .. } => {
                // Batch 1: the channel blocks are contiguous, one input after the other.
                inputs
                    .iter()
                    .flat_map(|n| vals[n.as_str()].iter().copied())
                    .collect()
            }
            Layer::Narrow { start, len, .. } => {
                let per: usize = xs[2..].iter().product();
                x[start * per..(start + len) * per].to_vec()
            }
            Layer::ChannelShuffle { groups, .. } => {
                let per: usize = xs[2..].iter().product();
                let cg = xs[1] / groups;
                let mut y = vec![0f32; x.len()];
                for g in 0..*groups {
                    for j in 0..cg {
                        let (src, dst) = ((g * cg + j) * per, (j * groups + g) * per);
                        y[dst..dst + per].copy_from_slice(&x[src..src + per]);
                    }
                }
                y
            }
            Layer::Pool {
                kind,
                kernel,
                stride,
                padding,
                ..
            } => {
                let two = |v: &[usize], d| {
                    if v.len() == 1 {
                        [d, v[0]]
                    } else {
                        [v[0], v[1]]
                    }
                };
                let (h, w) = if kernel.len() == 1 {
                    (1, xs[2])
                } else {
                    (xs[2], xs[3])
                };
                let pads = if padding.len() == 1 {
                    [(0, 0), padding[0]]
                } else {
                    [padding[0], padding[1]]
                };
                pool2d(
                    x,
                    [xs[1], h, w],
                    *kind,
                    two(kernel, 1),
                    two(stride, 1),
                    pads,
                )
            }
        };
        let name = layer.output();
        vals.insert(name.to_string(), fake(name, y)?);
    }
    Ok(vals)
}

/// Weights and bias as used in arithmetic: as given, or fake-quantized when `q` is set.
fn params(
    cout: usize,
    w: &[f32],
    bias: &Option<Vec<f32>>,
    input: &str,
    q: Option<&Int8Params>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let b = bias.clone().unwrap_or_else(|| vec![0.0; cout]);
    let Some(p) = q else {
        return Ok((w.to_vec(), b));
    };
    let (wq, ws) = quantize_weights(w, cout);
    let per = w.len() / cout;
    let wf = wq
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f32 * ws[i / per])
        .collect();
    let (bq, bs) = quantize_bias(&b, p.get(input)?.scale, &ws);
    let bf = bq.iter().zip(&bs).map(|(&v, s)| v as f32 * s).collect();
    Ok((wf, bf))
}

#[allow(clippy::too_many_arguments)]
fn conv2d(
    x: &[f32],
    [cin, h, w]: [usize; 3],
    wt: &[f32],
    b: &[f32],
    cout: usize,
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [(ph, ph_end), (pw, pw_end)]: [(usize, usize); 2],
    [dh, dw]: [usize; 2],
    groups: usize,
) -> Vec<f32> {
    // `ph`/`pw` zeros come before the first row/column, `*_end` after the last one.
    let oh = (h + ph + ph_end - dh * (kh - 1) - 1) / sh + 1;
    let ow = (w + pw + pw_end - dw * (kw - 1) - 1) / sw + 1;
    let (cig, cog) = (cin / groups, cout / groups);
    let mut y = vec![0f32; cout * oh * ow];
    for oc in 0..cout {
        let g = oc / cog;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = b[oc];
                for ic in 0..cig {
                    let c = g * cig + ic;
                    for ky in 0..kh {
                        let iy = (oy * sh + ky * dh) as isize - ph as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * sw + kx * dw) as isize - pw as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            acc += x[(c * h + iy as usize) * w + ix as usize]
                                * wt[((oc * cig + ic) * kh + ky) * kw + kx];
                        }
                    }
                }
                y[(oc * oh + oy) * ow + ox] = acc;
            }
        }
    }
    y
}

/// Max or average pooling of (C, H, W); windows start `pads[a].0` before the input, padded
/// positions count as zeros in the average and never win the max.
fn pool2d(
    x: &[f32],
    [c, h, w]: [usize; 3],
    kind: PoolKind,
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [(ph, ph_end), (pw, pw_end)]: [(usize, usize); 2],
) -> Vec<f32> {
    let oh = (h + ph + ph_end - kh) / sh + 1;
    let ow = (w + pw + pw_end - kw) / sw + 1;
    let mut y = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut sum, mut max) = (0f32, f32::NEG_INFINITY);
                for ky in 0..kh {
                    let iy = (oy * sh + ky) as isize - ph as isize;
                    for kx in 0..kw {
                        let ix = (ox * sw + kx) as isize - pw as isize;
                        if iy < 0 || iy >= h as isize || ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let v = x[(ch * h + iy as usize) * w + ix as usize];
                        sum += v;
                        max = max.max(v);
                    }
                }
                y.push(match kind {
                    PoolKind::Max => max,
                    PoolKind::Avg => sum / (kh * kw) as f32,
                });
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Activation;

    fn l(input: &str, output: &str) -> (String, String) {
        (input.into(), output.into())
    }

    /// x (1, 4, 2, 2) holds −6, −5, …, 9: channel c is [4c − 6, 4c − 5; 4c − 4, 4c − 3].
    #[test]
    fn new_ops_by_hand() {
        let pool = |kind, (input, output): (String, String)| Layer::Pool {
            kind,
            input,
            output,
            kernel: vec![2, 2],
            stride: vec![1, 1],
            padding: vec![(1, 0), (0, 0)],
        };
        let act = |act, (input, output): (String, String)| Layer::Activation { act, input, output };
        let net = Network {
            name: "ops".into(),
            input: ("x".into(), vec![1, 4, 2, 2]),
            output: "cm".into(),
            layers: vec![
                Layer::ChannelShuffle {
                    input: "x".into(),
                    output: "sh".into(),
                    groups: 2,
                },
                Layer::Narrow {
                    input: "x".into(),
                    output: "nr".into(),
                    start: 1,
                    len: 2,
                },
                Layer::Concat {
                    inputs: vec!["nr".into(), "x".into()],
                    output: "cat".into(),
                },
                pool(PoolKind::Avg, l("x", "ap")),
                pool(PoolKind::Max, l("x", "mp")),
                act(Activation::Relu6, l("x", "r6")),
                Layer::GlobalAvgPool {
                    input: "x".into(),
                    output: "gap".into(),
                },
                Layer::Flatten {
                    input: "gap".into(),
                    output: "fl".into(),
                },
                act(Activation::HardSigmoid, l("fl", "hsig")),
                act(Activation::HardSwish, l("fl", "hsw")),
                act(Activation::Sigmoid, l("fl", "sig")),
                Layer::ChannelMul {
                    x: "x".into(),
                    s: "hsig".into(),
                    output: "cm".into(),
                },
            ],
        };
        let x: Vec<f32> = (0..16).map(|i| i as f32 - 6.0).collect();
        let shapes = net.shapes().unwrap();
        assert_eq!(shapes["cat"], [1, 6, 2, 2]);
        assert_eq!(shapes["ap"], [1, 4, 2, 1]);
        let v = run_all(&net, &x, None).unwrap();
        let ch = |c: usize| x[4 * c..4 * c + 4].to_vec();
        assert_eq!(v["sh"], [ch(0), ch(2), ch(1), ch(3)].concat());
        assert_eq!(v["nr"], x[4..12]);
        assert_eq!(v["cat"], [&x[4..12], &x[..]].concat());
        // Window rows (pad, row 0) then (row 0, row 1): padded zeros count in the average,
        // never win the max (channel 0 is negative).
        assert_eq!(
            &v["ap"][..2],
            [(-6.0 - 5.0) / 4.0, (-6.0 - 5.0 - 4.0 - 3.0) / 4.0]
        );
        assert_eq!(&v["mp"][..4], [-5.0, -3.0, -1.0, 1.0]);
        assert_eq!(v["r6"][..4], [0.0; 4]);
        assert_eq!(v["r6"][12..], [6.0; 4]);
        // Channel means −4.5, −0.5, 3.5, 7.5; hard sigmoid clamp((m + 3) / 6, 0, 1).
        assert_eq!(v["fl"], [-4.5, -0.5, 3.5, 7.5]);
        assert_eq!(v["hsig"], [0.0, 2.5 / 6.0, 1.0, 1.0]);
        assert_eq!(v["hsw"], [0.0, -0.5 * 2.5 / 6.0, 3.5, 7.5]);
        assert!((v["sig"][1] - 1.0 / (1.0 + 0.5f32.exp())).abs() < 1e-7);
        let want: Vec<f32> = (0..16).map(|i| x[i] * v["hsig"][i / 4]).collect();
        assert_eq!(v["cm"], want);
        assert_eq!(v["cm"][..4], [0.0; 4]);
        // Max pooling with padding ≥ the kernel is refused, naming the layer.
        let mut bad = net.clone();
        bad.layers[4] = Layer::Pool {
            kind: PoolKind::Max,
            input: "x".into(),
            output: "mp".into(),
            kernel: vec![2, 2],
            stride: vec![1, 1],
            padding: vec![(2, 0), (0, 0)],
        };
        let e = format!("{:#}", bad.shapes().unwrap_err());
        assert!(
            e.contains("layer 4 (max_pool)") && e.contains("smaller than the kernel"),
            "{e}"
        );
    }
}

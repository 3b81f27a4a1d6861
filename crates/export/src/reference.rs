//! Naive reference evaluator of a [`Network`] (direct loops): the definition of the layer
//! semantics, in float or with int8 fake quantization (the numbers the exported files must
//! reproduce).

use crate::network::{Layer, Network};
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

//! C export: `<name>.h` + `<name>.c` with int8 weights (per-channel scales), int32 biases,
//! activation scales/zero points, a tensor and a layer table, and a portable C99 reference
//! int8 inference function (`<name>_run`) for micro-controller projects.

use crate::network::{Activation, Layer, Network, PoolKind, require_folded};
use crate::quant::{Int8Params, quantize_bias, quantize_weights};
use anyhow::{Context, Result, ensure};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Layer op codes in the generated layer table (`<NAME>_OP_*`).
const OPS: [&str; 16] = [
    "CONV",
    "RELU",
    "ADD",
    "GAP",
    "FLATTEN",
    "LINEAR",
    "RELU6",
    "SIGMOID",
    "HARD_SIGMOID",
    "HARD_SWISH",
    "CHANNEL_MUL",
    "CONCAT",
    "NARROW",
    "SHUFFLE",
    "MAX_POOL",
    "AVG_POOL",
];

struct CTensor {
    c: usize,
    h: usize,
    w: usize,
    scale: f32,
    zp: i8,
    offset: usize,
}

/// Writes `<dir>/<name>.h` and `<dir>/<name>.c`; `name` must be a C identifier and becomes
/// the prefix of every symbol. Batch norm must be folded first; `params` needs the input and
/// every layer output. Returns the two paths.
pub fn write_c(
    net: &Network,
    params: &Int8Params,
    dir: &Path,
    name: &str,
) -> Result<(PathBuf, PathBuf)> {
    write_c_in(net, params, dir, name, ParamStore::Inline)
}

/// Where [`write_c_in`] puts the parameter arrays.
pub(crate) enum ParamStore<'a> {
    /// `static const` arrays in the `.c` (what [`write_c`] writes).
    Inline,
    /// Appended to `blob`, each array little-endian and starting at a multiple of 4 bytes
    /// (int8 weights, int32 biases, f32 weight scales per weighted layer, in layer order); the
    /// layer table points into `extern uint32_t <symbol>[]` at the same offsets.
    Slot {
        symbol: &'a str,
        blob: &'a mut Vec<u8>,
    },
}

/// Appends `bytes` to `blob` at the next multiple of 4 bytes; returns the offset in words.
fn push_words(blob: &mut Vec<u8>, bytes: impl IntoIterator<Item = u8>) -> usize {
    blob.resize(blob.len().next_multiple_of(4), 0);
    let at = blob.len() / 4;
    blob.extend(bytes);
    at
}

pub(crate) fn write_c_in(
    net: &Network,
    params: &Int8Params,
    dir: &Path,
    name: &str,
    mut store: ParamStore,
) -> Result<(PathBuf, PathBuf)> {
    ensure!(
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit()),
        "C export name `{name}` is not a C identifier"
    );
    require_folded(net)?;
    let shapes = net.shapes()?;
    let up = name.to_ascii_uppercase();

    // Tensor table: the input, then every layer output.
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tensors: Vec<CTensor> = Vec::new();
    let names = std::iter::once(net.input.0.as_str()).chain(net.layers.iter().map(|l| l.output()));
    for t in names {
        let s = &shapes[t];
        let (c, h, w) = match s.len() {
            2 => (s[1], 1, 1),
            3 => (s[1], 1, s[2]),
            4 => (s[1], s[2], s[3]),
            _ => anyhow::bail!("C export: tensor `{t}` has unsupported shape {s:?}"),
        };
        let a = params.get(t)?;
        index.insert(t, tensors.len());
        tensors.push(CTensor {
            c,
            h,
            w,
            scale: a.scale,
            zp: a.zero_point,
            offset: 0,
        });
    }
    let arena = plan_arena(net, &index, &mut tensors);

    let mut data = String::new();
    let mut rows = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        let ins = layer.inputs();
        let in0 = index[ins[0]];
        let in1 = ins.get(1).map_or(-1, |n| index[n] as i64);
        let out = index[layer.output()];
        let (ti, to) = (&tensors[in0], &tensors[out]);
        // k_h, k_w, stride_h, stride_w, pad_h, pad_w, pad_h_end, pad_w_end, dil_h, dil_w
        let none = ([0; 10], 1);
        let (op, geo, wts) = match layer {
            Layer::Conv {
                weight,
                bias,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                let g = geometry(&weight.shape[2..], stride, padding, dilation);
                ("CONV", (g, *groups), Some((weight, bias)))
            }
            Layer::Linear { weight, bias, .. } => (
                "LINEAR",
                ([1, 1, 1, 1, 0, 0, 0, 0, 1, 1], 1),
                Some((weight, bias)),
            ),
            Layer::Relu { .. } => ("RELU", none, None),
            Layer::Add { .. } => ("ADD", none, None),
            Layer::GlobalAvgPool { .. } => ("GAP", none, None),
            Layer::Flatten { .. } => ("FLATTEN", none, None),
            Layer::Activation { act, .. } => (
                match act {
                    Activation::Relu6 => "RELU6",
                    Activation::Sigmoid => "SIGMOID",
                    Activation::HardSigmoid => "HARD_SIGMOID",
                    Activation::HardSwish => "HARD_SWISH",
                },
                none,
                None,
            ),
            Layer::ChannelMul { .. } => ("CHANNEL_MUL", none, None),
            Layer::Concat { .. } => ("CONCAT", none, None),
            Layer::Narrow { .. } => ("NARROW", none, None),
            Layer::ChannelShuffle { groups, .. } => ("SHUFFLE", ([0; 10], *groups), None),
            Layer::Pool {
                kind,
                kernel,
                stride,
                padding,
                ..
            } => {
                let g = geometry(kernel, stride, padding, &[1, 1]);
                let op = match kind {
                    PoolKind::Max => "MAX_POOL",
                    PoolKind::Avg => "AVG_POOL",
                };
                (op, (g, 1), None)
            }
            Layer::BatchNorm { .. } => unreachable!("checked by require_folded"),
        };
        let start = match layer {
            Layer::Narrow { start, .. } => *start,
            _ => 0,
        };
        let list = if let Layer::Concat { inputs, .. } = layer {
            let idx: Vec<usize> = inputs.iter().map(|n| index[n.as_str()]).collect();
            array(&mut data, "int", &format!("{name}_in{i}"), &idx, |v| {
                v.to_string()
            });
            format!("{}, {name}_in{i}", idx.len())
        } else {
            "0, 0".to_string()
        };
        let ptrs = if let Some((weight, bias)) = wts {
            let cout = weight.shape[0];
            let (wq, ws) = quantize_weights(&weight.data, cout);
            let b = bias.clone().unwrap_or_else(|| vec![0.0; cout]);
            let (bq, _) = quantize_bias(&b, ti.scale, &ws);
            if let ParamStore::Slot { symbol, blob } = &mut store {
                let w = push_words(blob, wq.iter().map(|&v| v as u8));
                let b = push_words(blob, bq.iter().flat_map(|v| v.to_le_bytes()));
                let s = push_words(blob, ws.iter().flat_map(|v| v.to_le_bytes()));
                blob.resize(blob.len().next_multiple_of(4), 0);
                format!(
                    "(const int8_t *)({symbol} + {w}), (const int32_t *)({symbol} + {b}), (const float *)({symbol} + {s})"
                )
            } else {
                array(&mut data, "int8_t", &format!("{name}_w{i}"), &wq, |v| {
                    v.to_string()
                });
                array(&mut data, "int32_t", &format!("{name}_b{i}"), &bq, |v| {
                    v.to_string()
                });
                array(&mut data, "float", &format!("{name}_ws{i}"), &ws, |v| {
                    cfloat(*v)
                });
                format!("{name}_w{i}, {name}_b{i}, {name}_ws{i}")
            }
        } else {
            "0, 0, 0".to_string()
        };
        let (g, groups) = geo;
        rows.push(format!(
            "    {{ {up}_OP_{op}, {in0}, {in1}, {out}, {}, {}, {}, {}, {}, {}, {}, {groups}, {ptrs}, {start}, {list} }}, /* {} -> {} */",
            ti.c, ti.h, ti.w, to.c, to.h, to.w,
            g.map(|v| v.to_string()).join(", "),
            comment(&ins.join(" + ")), comment(layer.output())
        ));
    }
    let t_in = &tensors[0];
    let t_out = &tensors[index[net.output.as_str()]];
    let out_idx = index[net.output.as_str()];

    let mut h = String::new();
    let guard = format!("{up}_H");
    writeln!(
        h,
        "/* {name}.h: int8 network `{}` exported by whittle (per-channel symmetric weights,",
        net.name
    )?;
    writeln!(
        h,
        " * int32 biases, per-tensor affine activations: x = (q - zero_point) * scale). */"
    )?;
    writeln!(
        h,
        "#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n"
    )?;
    writeln!(h, "#ifdef __cplusplus\nextern \"C\" {{\n#endif\n")?;
    writeln!(h, "#define {up}_INPUT_SIZE {}", t_in.c * t_in.h * t_in.w)?;
    writeln!(
        h,
        "#define {up}_OUTPUT_SIZE {}",
        t_out.c * t_out.h * t_out.w
    )?;
    writeln!(
        h,
        "#define {up}_ARENA_SIZE {arena} /* bytes of int8 scratch for {name}_run */"
    )?;
    writeln!(h, "#define {up}_NUM_TENSORS {}", tensors.len())?;
    writeln!(h, "#define {up}_NUM_LAYERS {}", net.layers.len())?;
    writeln!(h, "#define {up}_OUTPUT_TENSOR {out_idx}\n")?;
    for (k, op) in OPS.iter().enumerate() {
        writeln!(h, "#define {up}_OP_{op} {k}")?;
    }
    writeln!(
        h,
        "\n/* Activation tensor (batch 1, layout C x H x W; 1-D is H = 1, vectors are C x 1 x 1). */"
    )?;
    writeln!(
        h,
        "typedef struct {{ int c, h, w; float scale; int zero_point; int offset; }} {name}_tensor_t;\n"
    )?;
    writeln!(
        h,
        "/* One layer: op, tensor indices (in1 = -1 if unused), shapes, convolution geometry"
    )?;
    writeln!(
        h,
        " * (CONV and LINEAR; LINEAR is a 1x1 CONV on a C x 1 x 1 vector; pad_h / pad_w are the"
    )?;
    writeln!(
        h,
        " * zero rows / columns before the input, pad_h_end / pad_w_end after it: a causal 1-D"
    )?;
    writeln!(
        h,
        " * conv has pad_w = (k_w - 1) * dil_w and pad_w_end = 0) and parameters:"
    )?;
    writeln!(
        h,
        " * weight (Cout, Cin/groups, k_h, k_w) int8, bias int32 with scale in_scale * w_scale[c]."
    )?;
    writeln!(
        h,
        " * MAX_POOL / AVG_POOL use the same geometry (dilation 1; the average divides by k_h * k_w,"
    )?;
    writeln!(
        h,
        " * padded zeros included); CHANNEL_MUL multiplies channel c of in0 by element c of in1;"
    )?;
    writeln!(
        h,
        " * SHUFFLE uses `groups`; NARROW copies channels start .. start + out_c; CONCAT joins the"
    )?;
    writeln!(
        h,
        " * n_in tensors of in_list along the channels. Every other op requantizes element-wise. */"
    )?;
    writeln!(
        h,
        "typedef struct {{\n    int op, in0, in1, out;\n    int in_c, in_h, in_w, out_c, out_h, out_w;"
    )?;
    writeln!(
        h,
        "    int k_h, k_w, stride_h, stride_w, pad_h, pad_w, pad_h_end, pad_w_end, dil_h, dil_w, groups;"
    )?;
    writeln!(
        h,
        "    const int8_t *weight;\n    const int32_t *bias;\n    const float *w_scale;\n    int start, n_in;\n    const int *in_list;\n}} {name}_layer_t;\n"
    )?;
    writeln!(
        h,
        "extern const {name}_tensor_t {name}_tensors[{up}_NUM_TENSORS];"
    )?;
    writeln!(
        h,
        "extern const {name}_layer_t {name}_layers[{up}_NUM_LAYERS];\n"
    )?;
    writeln!(
        h,
        "/* float input -> int8 input with the input tensor's scale and zero point. */"
    )?;
    writeln!(h, "void {name}_quantize_input(const float *x, int8_t *q);")?;
    writeln!(h, "/* int8 output -> float. */")?;
    writeln!(
        h,
        "void {name}_dequantize_output(const int8_t *q, float *y);"
    )?;
    writeln!(
        h,
        "/* Reference int8 inference: input and output are quantized; arena has {up}_ARENA_SIZE bytes. */"
    )?;
    writeln!(
        h,
        "void {name}_run(const int8_t *input, int8_t *output, int8_t *arena);\n"
    )?;
    writeln!(h, "#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {guard} */")?;

    let mut c = String::new();
    writeln!(
        c,
        "/* {name}.c: parameters and reference int8 inference of `{}` (generated by whittle). */",
        net.name
    )?;
    writeln!(
        c,
        "#include \"{name}.h\"\n#include <math.h>\n#include <string.h>\n"
    )?;
    c.push_str(&data);
    if let ParamStore::Slot { symbol, .. } = &store {
        writeln!(
            c,
            "/* The parameters live in the ladder's slot (filled by its loader); offsets in words. */\nextern uint32_t {symbol}[];"
        )?;
    }
    writeln!(
        c,
        "\nconst {name}_tensor_t {name}_tensors[{up}_NUM_TENSORS] = {{"
    )?;
    for (t, n) in tensors.iter().zip(index_names(&index)) {
        writeln!(
            c,
            "    {{ {}, {}, {}, {}, {}, {} }}, /* {n} */",
            t.c,
            t.h,
            t.w,
            cfloat(t.scale),
            t.zp,
            t.offset,
            n = comment(n)
        )?;
    }
    writeln!(
        c,
        "}};\n\nconst {name}_layer_t {name}_layers[{up}_NUM_LAYERS] = {{"
    )?;
    for r in rows {
        writeln!(c, "{r}")?;
    }
    writeln!(c, "}};\n")?;
    c.push_str(&RUNTIME.replace("@N@", name).replace("@U@", &up));

    let hp = dir.join(format!("{name}.h"));
    let cp = dir.join(format!("{name}.c"));
    std::fs::write(&hp, h).with_context(|| format!("writing {}", hp.display()))?;
    std::fs::write(&cp, c).with_context(|| format!("writing {}", cp.display()))?;
    Ok((hp, cp))
}

/// Places tensors in one arena: tensor t lives from the layer producing it (the input from
/// before the first layer) to its last reader (the output to the end); tensors whose lives
/// overlap get disjoint bytes (a layer's output never aliases its inputs). First fit in
/// creation order. Returns the arena size.
/// The geometry row of a conv or pool (see the column comment in [`write_c`]): one entry per
/// spatial axis in `kernel`, `stride`, `padding` and `dilation`; a 1-D layer has height 1.
fn geometry(
    kernel: &[usize],
    stride: &[usize],
    padding: &[(usize, usize)],
    dilation: &[usize],
) -> [usize; 10] {
    if kernel.len() == 1 {
        [
            1,
            kernel[0],
            1,
            stride[0],
            0,
            padding[0].0,
            0,
            padding[0].1,
            1,
            dilation[0],
        ]
    } else {
        [
            kernel[0],
            kernel[1],
            stride[0],
            stride[1],
            padding[0].0,
            padding[1].0,
            padding[0].1,
            padding[1].1,
            dilation[0],
            dilation[1],
        ]
    }
}

fn plan_arena(net: &Network, index: &BTreeMap<&str, usize>, tensors: &mut [CTensor]) -> usize {
    let n = net.layers.len();
    let mut life: Vec<(usize, usize)> = (0..tensors.len()).map(|i| (i, i)).collect();
    for (l, layer) in net.layers.iter().enumerate() {
        for t in layer.inputs() {
            life[index[t]].1 = life[index[t]].1.max(l + 1);
        }
    }
    life[index[net.output.as_str()]].1 = n + 1;
    let mut size = 0;
    for i in 0..tensors.len() {
        let len = tensors[i].c * tensors[i].h * tensors[i].w;
        let mut busy: Vec<(usize, usize)> = (0..i)
            .filter(|&j| life[j].0 <= life[i].1 && life[i].0 <= life[j].1)
            .map(|j| {
                (
                    tensors[j].offset,
                    tensors[j].offset + tensors[j].c * tensors[j].h * tensors[j].w,
                )
            })
            .collect();
        busy.sort();
        let mut off = 0;
        for (a, b) in busy {
            if off + len <= a {
                break;
            }
            off = off.max(b);
        }
        tensors[i].offset = off;
        size = size.max(off + len);
    }
    size
}

fn index_names<'a>(index: &BTreeMap<&'a str, usize>) -> Vec<&'a str> {
    let mut v: Vec<(&str, usize)> = index.iter().map(|(k, i)| (*k, *i)).collect();
    v.sort_by_key(|e| e.1);
    v.into_iter().map(|e| e.0).collect()
}

/// Text safe inside a C block comment.
fn comment(s: &str) -> String {
    s.replace("*/", "* /")
}

/// A float literal that reads back to the same f32.
fn cfloat(v: f32) -> String {
    format!("{v:e}f")
}

fn array<T>(out: &mut String, ty: &str, name: &str, v: &[T], f: impl Fn(&T) -> String) {
    let _ = write!(out, "static const {ty} {name}[{}] = {{", v.len());
    for (i, x) in v.iter().enumerate() {
        if i % 16 == 0 {
            out.push_str("\n   ");
        }
        let _ = write!(out, " {},", f(x));
    }
    out.push_str("\n};\n");
}

/// The inference code appended to every generated `.c` (@N@ / @U@ become the name / upper-case name).
const RUNTIME: &str = r#"static int8_t @N@_requant(double v, const @N@_tensor_t *t) {
    long r = lrint(v / t->scale) + t->zero_point; /* round half to even */
    return (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
}

void @N@_quantize_input(const float *x, int8_t *q) {
    const @N@_tensor_t *t = &@N@_tensors[0];
    int i;
    for (i = 0; i < @U@_INPUT_SIZE; ++i) q[i] = @N@_requant(x[i], t);
}

void @N@_dequantize_output(const int8_t *q, float *y) {
    const @N@_tensor_t *t = &@N@_tensors[@U@_OUTPUT_TENSOR];
    int i;
    for (i = 0; i < @U@_OUTPUT_SIZE; ++i) y[i] = (float)(q[i] - t->zero_point) * t->scale;
}

static void @N@_conv(const @N@_layer_t *L, const int8_t *x, const @N@_tensor_t *tx, int8_t *y,
                      const @N@_tensor_t *ty) {
    int cig = L->in_c / L->groups, cog = L->out_c / L->groups;
    int oc, oy, ox, ic, ky, kx;
    for (oc = 0; oc < L->out_c; ++oc) {
        int g = oc / cog;
        double s = (double)tx->scale * L->w_scale[oc];
        for (oy = 0; oy < L->out_h; ++oy) {
            for (ox = 0; ox < L->out_w; ++ox) {
                int32_t acc = L->bias[oc];
                for (ic = 0; ic < cig; ++ic) {
                    int c = g * cig + ic;
                    for (ky = 0; ky < L->k_h; ++ky) {
                        int iy = oy * L->stride_h + ky * L->dil_h - L->pad_h;
                        if (iy < 0 || iy >= L->in_h) continue;
                        for (kx = 0; kx < L->k_w; ++kx) {
                            int ix = ox * L->stride_w + kx * L->dil_w - L->pad_w;
                            if (ix < 0 || ix >= L->in_w) continue;
                            acc += (int32_t)(x[(c * L->in_h + iy) * L->in_w + ix] - tx->zero_point) *
                                   L->weight[((oc * cig + ic) * L->k_h + ky) * L->k_w + kx];
                        }
                    }
                }
                y[(oc * L->out_h + oy) * L->out_w + ox] = @N@_requant(acc * s, ty);
            }
        }
    }
}

static double @N@_dq(int8_t q, const @N@_tensor_t *t) {
    return (double)(q - t->zero_point) * t->scale;
}

/* ReLU6, sigmoid, hard sigmoid relu6(v + 3) / 6 and hard swish v * relu6(v + 3) / 6. */
static double @N@_act(int op, double v) {
    double r;
    switch (op) {
    case @U@_OP_RELU6:
        return v < 0 ? 0 : (v > 6 ? 6 : v);
    case @U@_OP_SIGMOID:
        return 1.0 / (1.0 + exp(-v));
    default:
        r = v + 3;
        r = (r < 0 ? 0 : (r > 6 ? 6 : r)) / 6;
        return op == @U@_OP_HARD_SWISH ? v * r : r;
    }
}

static void @N@_pool(const @N@_layer_t *L, const int8_t *x, const @N@_tensor_t *tx, int8_t *y,
                      const @N@_tensor_t *ty) {
    int c, oy, ox, ky, kx;
    for (c = 0; c < L->out_c; ++c) {
        for (oy = 0; oy < L->out_h; ++oy) {
            for (ox = 0; ox < L->out_w; ++ox) {
                int32_t sum = 0;
                int best = -129;
                for (ky = 0; ky < L->k_h; ++ky) {
                    int iy = oy * L->stride_h + ky - L->pad_h;
                    if (iy < 0 || iy >= L->in_h) continue;
                    for (kx = 0; kx < L->k_w; ++kx) {
                        int ix = ox * L->stride_w + kx - L->pad_w;
                        int8_t q;
                        if (ix < 0 || ix >= L->in_w) continue;
                        q = x[(c * L->in_h + iy) * L->in_w + ix];
                        sum += q - tx->zero_point;
                        if (q > best) best = q;
                    }
                }
                y[(c * L->out_h + oy) * L->out_w + ox] =
                    L->op == @U@_OP_MAX_POOL
                        ? @N@_requant(@N@_dq((int8_t)best, tx), ty)
                        : @N@_requant((double)sum * tx->scale / (L->k_h * L->k_w), ty);
            }
        }
    }
}

void @N@_run(const int8_t *input, int8_t *output, int8_t *arena) {
    int l, i;
    memcpy(arena + @N@_tensors[0].offset, input, @U@_INPUT_SIZE);
    for (l = 0; l < @U@_NUM_LAYERS; ++l) {
        const @N@_layer_t *L = &@N@_layers[l];
        const @N@_tensor_t *tx = &@N@_tensors[L->in0], *ty = &@N@_tensors[L->out];
        const int8_t *x = arena + tx->offset;
        int8_t *y = arena + ty->offset;
        int n = ty->c * ty->h * ty->w;
        switch (L->op) {
        case @U@_OP_CONV:
        case @U@_OP_LINEAR:
            @N@_conv(L, x, tx, y, ty);
            break;
        case @U@_OP_RELU:
            for (i = 0; i < n; ++i) {
                double v = (double)(x[i] - tx->zero_point) * tx->scale;
                y[i] = @N@_requant(v > 0 ? v : 0, ty);
            }
            break;
        case @U@_OP_ADD: {
            const @N@_tensor_t *tb = &@N@_tensors[L->in1];
            const int8_t *b = arena + tb->offset;
            for (i = 0; i < n; ++i)
                y[i] = @N@_requant((double)(x[i] - tx->zero_point) * tx->scale +
                                        (double)(b[i] - tb->zero_point) * tb->scale, ty);
            break;
        }
        case @U@_OP_GAP: {
            int c, hw = tx->h * tx->w;
            for (c = 0; c < tx->c; ++c) {
                int32_t sum = 0;
                for (i = 0; i < hw; ++i) sum += x[c * hw + i] - tx->zero_point;
                y[c] = @N@_requant((double)sum * tx->scale / hw, ty);
            }
            break;
        }
        case @U@_OP_FLATTEN:
            for (i = 0; i < n; ++i) y[i] = @N@_requant((double)(x[i] - tx->zero_point) * tx->scale, ty);
            break;
        case @U@_OP_RELU6:
        case @U@_OP_SIGMOID:
        case @U@_OP_HARD_SIGMOID:
        case @U@_OP_HARD_SWISH:
            for (i = 0; i < n; ++i) y[i] = @N@_requant(@N@_act(L->op, @N@_dq(x[i], tx)), ty);
            break;
        case @U@_OP_CHANNEL_MUL: {
            const @N@_tensor_t *ts = &@N@_tensors[L->in1];
            const int8_t *s = arena + ts->offset;
            int hw = tx->h * tx->w;
            for (i = 0; i < n; ++i)
                y[i] = @N@_requant(@N@_dq(x[i], tx) * @N@_dq(s[i / hw], ts), ty);
            break;
        }
        case @U@_OP_CONCAT: {
            int k, off = 0;
            for (k = 0; k < L->n_in; ++k) {
                const @N@_tensor_t *tk = &@N@_tensors[L->in_list[k]];
                const int8_t *xk = arena + tk->offset;
                int nk = tk->c * tk->h * tk->w;
                for (i = 0; i < nk; ++i) y[off + i] = @N@_requant(@N@_dq(xk[i], tk), ty);
                off += nk;
            }
            break;
        }
        case @U@_OP_NARROW: {
            const int8_t *src = x + L->start * tx->h * tx->w;
            for (i = 0; i < n; ++i) y[i] = @N@_requant(@N@_dq(src[i], tx), ty);
            break;
        }
        case @U@_OP_SHUFFLE: {
            int g, j, hw = tx->h * tx->w, cg = tx->c / L->groups;
            for (g = 0; g < L->groups; ++g)
                for (j = 0; j < cg; ++j)
                    for (i = 0; i < hw; ++i)
                        y[(j * L->groups + g) * hw + i] =
                            @N@_requant(@N@_dq(x[(g * cg + j) * hw + i], tx), ty);
            break;
        }
        case @U@_OP_MAX_POOL:
        case @U@_OP_AVG_POOL:
            @N@_pool(L, x, tx, y, ty);
            break;
        default:
            break;
        }
    }
    memcpy(output, arena + @N@_tensors[@U@_OUTPUT_TENSOR].offset, @U@_OUTPUT_SIZE);
}
"#;

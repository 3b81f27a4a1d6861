//! C export: `<name>.h` + `<name>.c` with int8 weights (per-channel scales), int32 biases,
//! activation scales/zero points, a tensor and a layer table, and a portable C99 reference
//! int8 inference function (`<name>_run`) for micro-controller projects.

use crate::c_common::{
    INT8_OPS, OPS, Row, Tensors, array, cfloat, check_name, fill, header_end, header_start,
    op_defines, plan_arena, source_includes, tables, write_pair,
};
use crate::network::{Layer, Network, require_folded};
use crate::quant::{Int8Params, quantize_bias, quantize_weights};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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
    check_name(name)?;
    require_folded(net)?;
    let t = Tensors::new(net, "C export")?;
    // Activation scale and zero point of every tensor row.
    let act = t
        .names
        .iter()
        .map(|n| params.get(n))
        .collect::<Result<Vec<_>>>()?;
    let (offsets, arena) = plan_arena(net, &t.index, &t.lens());
    let up = name.to_ascii_uppercase();

    let mut data = String::new();
    let mut rows = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        let row = Row::new(&t, &mut data, name, i, layer);
        let wts = match layer {
            Layer::Conv { weight, bias, .. } | Layer::Linear { weight, bias, .. } => {
                Some((weight, bias))
            }
            _ => None,
        };
        let ptrs = if let Some((weight, bias)) = wts {
            let cout = weight.shape[0];
            let (wq, ws) = quantize_weights(&weight.data, cout);
            let b = bias.clone().unwrap_or_else(|| vec![0.0; cout]);
            let (bq, _) = quantize_bias(&b, act[row.in0].scale, &ws);
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
        rows.push(row.format(&up, &t, &ptrs));
    }

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
    let arena_note = format!("bytes of int8 scratch for {name}_run");
    header_start(&mut h, &guard, &up, &t, net, ("", arena, &arena_note))?;
    op_defines(&mut h, &up, &OPS[..INT8_OPS])?;
    let fields = "    const int8_t *weight;\n    const int32_t *bias;\n    const float *w_scale;\n";
    header_end(&mut h, (&guard, name, &up), TABLES_DOC, fields, API)?;

    let mut c = String::new();
    writeln!(
        c,
        "/* {name}.c: parameters and reference int8 inference of `{}` (generated by whittle). */",
        net.name
    )?;
    source_includes(&mut c, name)?;
    c.push_str(&data);
    if let ParamStore::Slot { symbol, .. } = &store {
        writeln!(
            c,
            "/* The parameters live in the ladder's slot (filled by its loader); offsets in words. */\nextern uint32_t {symbol}[];"
        )?;
    }
    let cols = |i: usize| {
        let [tc, th, tw] = t.dims[i];
        let a = &act[i];
        format!(
            "{tc}, {th}, {tw}, {}, {}, {}",
            cfloat(a.scale),
            a.zero_point,
            offsets[i]
        )
    };
    tables(&mut c, name, &up, &t, cols, &rows)?;
    c.push_str(&fill(RUNTIME, name, &up));
    write_pair(dir, name, &h, &c)
}

/// The tensor and layer documentation and the tensor struct of the header (@N@ / @U@ become
/// the name / upper-case name).
const TABLES_DOC: &str = r#"
/* Activation tensor (batch 1, layout C x H x W; 1-D is H = 1, vectors are C x 1 x 1). */
typedef struct { int c, h, w; float scale; int zero_point; int offset; } @N@_tensor_t;

/* One layer: op, tensor indices (in1 = -1 if unused), shapes, convolution geometry
 * (CONV and LINEAR; LINEAR is a 1x1 CONV on a C x 1 x 1 vector; pad_h / pad_w are the
 * zero rows / columns before the input, pad_h_end / pad_w_end after it: a causal 1-D
 * conv has pad_w = (k_w - 1) * dil_w and pad_w_end = 0) and parameters:
 * weight (Cout, Cin/groups, k_h, k_w) int8, bias int32 with scale in_scale * w_scale[c].
 * MAX_POOL / AVG_POOL use the same geometry (dilation 1; the average divides by k_h * k_w,
 * padded zeros included); CHANNEL_MUL multiplies channel c of in0 by element c of in1;
 * SHUFFLE uses `groups`; NARROW copies channels start .. start + out_c; CONCAT joins the
 * n_in tensors of in_list along the channels. Every other op requantizes element-wise. */
"#;

/// The functions the header declares (@N@ / @U@ as in [`TABLES_DOC`]).
const API: &str = r#"/* float input -> int8 input with the input tensor's scale and zero point. */
void @N@_quantize_input(const float *x, int8_t *q);
/* int8 output -> float. */
void @N@_dequantize_output(const int8_t *q, float *y);
/* Reference int8 inference: input and output are quantized; arena has @U@_ARENA_SIZE bytes. */
void @N@_run(const int8_t *input, int8_t *output, int8_t *arena);

"#;

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

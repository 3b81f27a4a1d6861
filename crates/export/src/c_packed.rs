//! Packed-weight C export: `<name>.h` + `<name>.c` of a float-activation network whose
//! conv / linear weights are stored as `bits`-wide codes in a packed bitstream (k = 2, 4, 8
//! give 4, 2, 1 codes per byte; any width 1..=16 packs), decoded in C while it computes:
//! per output channel `code · scale` (k-bit weight-only formats, two's-complement codes) or a
//! 2^bits-entry float table (reduced floats T(w,t) of at most 8 bits: the table maps a bit
//! pattern to its value) or the T(w,t) bit pattern decoded by integer arithmetic (wider reduced
//! floats such as fp16 / bf16). Biases, batch norm and activations stay f32.
//!
//! Packing is LSB first: code i occupies bits i·k … i·k + k − 1 of the stream, and bit j of
//! the stream is bit j mod 8 of byte j / 8 (codes of widths that do not divide 8 straddle
//! bytes). A layer of n weights holds ⌈k·n / 8⌉ bytes (`<NAME>_L<i>_WEIGHT_BYTES`).
//!
//! [`run_reference`] is the definition of what the generated `<name>_run` computes: the codes
//! decoded ([`decoded_network`]) and the network evaluated by [`crate::reference::run`] in
//! float. The C follows that evaluator's operation order, so compiled with
//! `-ffp-contract=off` (and without `-ffast-math`) its outputs are bit-identical to it.

use crate::c_common::{
    OPS, Row, Tensors, array, cfloat, check_name, comment, fill, header_end, header_start,
    op_defines, plan_arena, source_includes, tables, write_pair,
};
use crate::network::{Layer, Network};
use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How a layer's codes become weight values.
#[derive(Clone, Debug, PartialEq)]
pub enum Decode {
    /// w = code · scale[c] with the code a `bits`-wide two's-complement integer and c the
    /// output channel (one scale per channel).
    PerChannelScale(Vec<f32>),
    /// w = table[code] (2^bits entries, bits ≤ 8).
    Table(Vec<f32>),
    /// The code is the bit pattern of the reduced float T(exp_bits, man_bits) (1 sign bit,
    /// bias 2^(exp_bits−1) − 1, subnormals, all-ones exponent = ±Inf / NaN); see [`tfloat_value`].
    Float { exp_bits: u32, man_bits: u32 },
}

/// The weights of one conv / linear layer as packed codes and their decoding rule.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightCodes {
    /// Bits per code, 1..=16.
    pub bits: u32,
    /// One unsigned `bits`-wide field per weight, in the weight tensor's row-major order.
    pub codes: Vec<u16>,
    pub decode: Decode,
}

impl WeightCodes {
    /// Signed integer codes (each in −2^(bits−1) … 2^(bits−1) − 1) with per-channel scales.
    pub fn per_channel(bits: u32, codes: &[i32], scales: Vec<f32>) -> Result<Self> {
        ensure!(
            (2..=16).contains(&bits),
            "{bits}-bit signed codes: the width must be 2..=16"
        );
        let (lo, hi) = (-(1i32 << (bits - 1)), (1i32 << (bits - 1)) - 1);
        let mask = (1u32 << bits) - 1;
        let codes = codes
            .iter()
            .map(|&c| {
                ensure!(
                    (lo..=hi).contains(&c),
                    "code {c} does not fit {bits} signed bits"
                );
                Ok((c as u32 & mask) as u16)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            bits,
            codes,
            decode: Decode::PerChannelScale(scales),
        })
    }

    /// Bytes of the packed codes: ⌈bits · n / 8⌉.
    pub fn weight_bytes(&self) -> usize {
        (self.bits as usize * self.codes.len()).div_ceil(8)
    }

    /// The packed bitstream (see the module documentation).
    pub fn packed(&self) -> Vec<u8> {
        pack(self.bits, &self.codes)
    }

    /// The weight values of a tensor of shape `shape` (output channels first).
    pub fn decode(&self, shape: &[usize]) -> Result<Vec<f32>> {
        let cout = shape.first().copied().unwrap_or(0);
        self.check(cout, shape.iter().product())?;
        let per = self.codes.len() / cout.max(1);
        Ok(self
            .codes
            .iter()
            .enumerate()
            .map(|(i, &c)| self.value(c, i / per))
            .collect())
    }

    fn value(&self, code: u16, channel: usize) -> f32 {
        match &self.decode {
            Decode::PerChannelScale(s) => signed(code, self.bits) as f32 * s[channel],
            Decode::Table(t) => t[code as usize],
            Decode::Float { exp_bits, man_bits } => tfloat_value(*exp_bits, *man_bits, code as u32),
        }
    }

    /// Validates widths, table and scale sizes for a tensor of `n` weights, `cout` channels.
    fn check(&self, cout: usize, n: usize) -> Result<()> {
        ensure!(
            (1..=16).contains(&self.bits),
            "{} bits per code: the width must be 1..=16",
            self.bits
        );
        ensure!(
            self.codes.len() == n && n > 0,
            "{} codes for {n} weights",
            self.codes.len()
        );
        ensure!(
            cout > 0 && n.is_multiple_of(cout),
            "{n} weights do not split into {cout} output channels"
        );
        if let Some(c) = self.codes.iter().find(|&&c| (c as u32) >> self.bits != 0) {
            bail!("code {c:#x} does not fit {} bits", self.bits);
        }
        match &self.decode {
            Decode::PerChannelScale(s) => {
                ensure!(
                    self.bits >= 2,
                    "signed codes need at least 2 bits, got {}",
                    self.bits
                );
                ensure!(
                    s.len() == cout,
                    "{} scales for {cout} output channels",
                    s.len()
                );
                ensure!(
                    s.iter().all(|v| v.is_finite()),
                    "weight scales contain NaN or infinity"
                );
            }
            Decode::Table(t) => {
                ensure!(
                    self.bits <= 8,
                    "a decode table needs 2^{} entries; tables are for codes of at most 8 bits",
                    self.bits
                );
                ensure!(
                    t.len() == 1 << self.bits,
                    "decode table has {} entries, {}-bit codes need {}",
                    t.len(),
                    self.bits,
                    1 << self.bits
                );
            }
            Decode::Float { exp_bits, man_bits } => {
                ensure!(
                    (1..=8).contains(exp_bits)
                        && *man_bits <= 23
                        && 1 + exp_bits + man_bits == self.bits,
                    "T({exp_bits},{man_bits}) is not a {}-bit reduced float (1 + w + t bits, 1 ≤ w ≤ 8, t ≤ 23)",
                    self.bits
                );
            }
        }
        Ok(())
    }
}

/// The `bits`-wide field `code` as a two's-complement integer.
fn signed(code: u16, bits: u32) -> i32 {
    let c = code as i32;
    if c >> (bits - 1) & 1 == 1 {
        c - (1 << bits)
    } else {
        c
    }
}

/// Packs `bits`-wide fields LSB first into ⌈bits · n / 8⌉ bytes.
pub fn pack(bits: u32, codes: &[u16]) -> Vec<u8> {
    let k = bits as usize;
    let mut out = vec![0u8; (k * codes.len()).div_ceil(8)];
    for (i, &c) in codes.iter().enumerate() {
        for b in 0..k {
            if (c >> b) & 1 == 1 {
                let j = i * k + b;
                out[j / 8] |= 1 << (j % 8);
            }
        }
    }
    out
}

/// The `n` fields of `bits` bits packed in `bytes` (inverse of [`pack`]).
pub fn unpack(bits: u32, bytes: &[u8], n: usize) -> Vec<u16> {
    let k = bits as usize;
    (0..n)
        .map(|i| {
            (0..k).fold(0u16, |v, b| {
                let j = i * k + b;
                v | (((bytes[j / 8] >> (j % 8)) & 1) as u16) << b
            })
        })
        .collect()
}

/// The value of bit pattern `p` of T(w, t) (spec §6): sign bit 1 + w + t − 1, exponent field
/// e of w bits with bias 2^(w−1) − 1, mantissa m of t bits. e = 0: ±m · 2^(1 − bias − t)
/// (subnormal); e = 2^w − 1: ±Inf (m = 0) or NaN; otherwise ±(2^t + m) · 2^(e − bias − t).
/// Exact in f32 for every T(w, t) with w ≤ 8, t ≤ 23.
pub fn tfloat_value(w: u32, t: u32, p: u32) -> f32 {
    let bias = (1i32 << (w - 1)) - 1;
    let neg = (p >> (w + t)) & 1 == 1;
    let e = ((p >> t) & ((1 << w) - 1)) as i32;
    let m = p & ((1u32 << t) - 1);
    let a = if e == (1 << w) - 1 {
        if m == 0 { f32::INFINITY } else { f32::NAN }
    } else if e == 0 {
        ldexp(m as f64, 1 - bias - t as i32)
    } else {
        ldexp(((1u32 << t) + m) as f64, e - bias - t as i32)
    };
    if neg { -a } else { a }
}

/// m · 2^e (−1022 ≤ e ≤ 1023) rounded once to f32 (exact for the values of [`tfloat_value`]).
fn ldexp(m: f64, e: i32) -> f32 {
    (m * f64::from_bits(((e + 1023) as u64) << 52)) as f32
}

/// `net` with the weights of every conv / linear layer replaced by its decoded codes
/// (`weights` is keyed by the layer's output tensor name and must cover exactly those layers).
pub fn decoded_network(net: &Network, weights: &BTreeMap<String, WeightCodes>) -> Result<Network> {
    let mut out = net.clone();
    let mut used = 0;
    for (i, layer) in out.layers.iter_mut().enumerate() {
        let kind = layer.kind();
        let name = layer.output().to_string();
        let ctx = || format!("network `{}`, layer {i} ({kind} `{name}`)", net.name);
        match layer {
            Layer::Conv { weight, .. } | Layer::Linear { weight, .. } => {
                let codes = weights
                    .get(&name)
                    .with_context(|| format!("{}: no weight codes given", ctx()))?;
                weight.data = codes.decode(&weight.shape).with_context(ctx)?;
                used += 1;
            }
            _ => {}
        }
    }
    if used != weights.len() {
        let names: Vec<&str> = net.layers.iter().map(Layer::output).collect();
        let extra: Vec<&str> = weights
            .keys()
            .map(String::as_str)
            .filter(|k| !names.contains(k))
            .collect();
        bail!(
            "network `{}`: weight codes for {extra:?}, which are not conv / linear layers of the network",
            net.name
        );
    }
    out.shapes()
        .context("the network with decoded weights does not validate")?;
    Ok(out)
}

/// What the generated `<name>_run` returns for `input`: the decoded network in float.
pub fn run_reference(
    net: &Network,
    weights: &BTreeMap<String, WeightCodes>,
    input: &[f32],
) -> Result<Vec<f32>> {
    crate::reference::run(&decoded_network(net, weights)?, input, None)
}

/// Writes `<dir>/<name>.h` and `<dir>/<name>.c`: the network with packed weights (`weights`
/// keyed by the output tensor name of every conv / linear layer; the float weights of `net`
/// are not used, only their shapes) and the float inference function `<name>_run`. `name`
/// must be a C identifier and prefixes every symbol. Returns the two paths.
pub fn write_c_packed(
    net: &Network,
    weights: &BTreeMap<String, WeightCodes>,
    dir: &Path,
    name: &str,
) -> Result<(PathBuf, PathBuf)> {
    check_name(name)?;
    // Validates the graph, every code set against its layer and the decoded values.
    decoded_network(net, weights)?;
    let t = Tensors::new(net, "packed C export")?;
    let (offsets, arena) = plan_arena(net, &t.index, &t.lens());
    let up = name.to_ascii_uppercase();

    let mut data = String::new();
    let mut rows = Vec::new();
    let mut byte_defs = Vec::new();
    let mut total_bytes = 0usize;
    // Decode tables written so far (identical tables are shared).
    let mut luts: Vec<(Vec<u32>, String)> = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        let row = Row::new(&t, &mut data, name, i, layer);
        // weight, bits, decode, w_scale, table, exp_bits, man_bits, bias
        let mut params = "0, 0, 0, 0, 0, 0, 0, 0".to_string();
        if let Layer::Conv { bias, .. } | Layer::Linear { bias, .. } = layer {
            let codes = &weights[layer.output()];
            let bytes = codes.packed();
            total_bytes += bytes.len();
            byte_defs.push(format!(
                "#define {up}_L{i}_WEIGHT_BYTES {} /* `{}`: {} weights x {} bits */",
                bytes.len(),
                comment(layer.output()),
                codes.codes.len(),
                codes.bits
            ));
            array(&mut data, "uint8_t", &format!("{name}_w{i}"), &bytes, |v| {
                format!("0x{v:02x}")
            });
            let (decode, scale, table, e, m) = match &codes.decode {
                Decode::PerChannelScale(s) => {
                    array(&mut data, "float", &format!("{name}_ws{i}"), s, |v| {
                        cfloat(*v)
                    });
                    ("SCALE", format!("{name}_ws{i}"), "0".to_string(), 0, 0)
                }
                Decode::Table(lut) => {
                    let key: Vec<u32> = lut.iter().map(|v| v.to_bits()).collect();
                    let sym = match luts.iter().find(|(k, _)| *k == key) {
                        Some((_, s)) => s.clone(),
                        None => {
                            let s = format!("{name}_lut{i}");
                            array(&mut data, "float", &s, lut, |v| cfloat(*v));
                            luts.push((key, s.clone()));
                            s
                        }
                    };
                    ("TABLE", "0".to_string(), sym, 0, 0)
                }
                Decode::Float { exp_bits, man_bits } => (
                    "FLOAT",
                    "0".to_string(),
                    "0".to_string(),
                    *exp_bits,
                    *man_bits,
                ),
            };
            let b = match bias {
                Some(b) => {
                    array(&mut data, "float", &format!("{name}_b{i}"), b, |v| {
                        cfloat(*v)
                    });
                    format!("{name}_b{i}")
                }
                None => "0".to_string(),
            };
            params = format!(
                "{name}_w{i}, {}, {up}_DECODE_{decode}, {scale}, {table}, {e}, {m}, {b}",
                codes.bits
            );
        }
        let (bn, eps) = if let Layer::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            eps,
            ..
        } = layer
        {
            let all = [gamma.as_slice(), beta, mean, var].concat();
            array(&mut data, "float", &format!("{name}_bn{i}"), &all, |v| {
                cfloat(*v)
            });
            (format!("{name}_bn{i}"), cfloat(*eps))
        } else {
            ("0".to_string(), "0.0f".to_string())
        };
        rows.push(row.format(&up, &t, &format!("{params}, {bn}, {eps}")));
    }

    let mut h = String::new();
    let guard = format!("{up}_H");
    writeln!(
        h,
        "/* {name}.h: float network `{}` exported by whittle with packed weights.",
        net.name
    )?;
    h.push_str(HEADER_DOC);
    let arena_note = format!("floats of scratch for {name}_run");
    header_start(
        &mut h,
        &guard,
        &up,
        &t,
        net,
        (" /* floats */", arena, &arena_note),
    )?;
    writeln!(
        h,
        "/* Bytes of packed conv / linear weights: ceil(bits * n / 8) per layer. */"
    )?;
    writeln!(h, "#define {up}_WEIGHT_BYTES {total_bytes}")?;
    for d in &byte_defs {
        writeln!(h, "{d}")?;
    }
    writeln!(h)?;
    op_defines(&mut h, &up, &OPS)?;
    writeln!(
        h,
        "\n#define {up}_DECODE_SCALE 0 /* w = code (two's complement) * w_scale[c] */"
    )?;
    writeln!(h, "#define {up}_DECODE_TABLE 1 /* w = table[code] */")?;
    writeln!(
        h,
        "#define {up}_DECODE_FLOAT 2 /* code = bit pattern of T(exp_bits, man_bits) */\n"
    )?;
    let fields = "    const uint8_t *weight;\n    int bits, decode;\n    const float *w_scale, *table;\n    int exp_bits, man_bits;\n    const float *bias, *bn;\n    float eps;\n";
    header_end(&mut h, (&guard, name, &up), TABLES_DOC, fields, API)?;

    let mut c = String::new();
    writeln!(
        c,
        "/* {name}.c: packed weights and float inference of `{}` (generated by whittle).",
        net.name
    )?;
    writeln!(
        c,
        " * Compile with -ffp-contract=off (no -ffast-math) for outputs bit-identical to the reference. */"
    )?;
    source_includes(&mut c, name)?;
    c.push_str(&data);
    let cols = |i: usize| {
        let [tc, th, tw] = t.dims[i];
        format!("{tc}, {th}, {tw}, {}", offsets[i])
    };
    tables(&mut c, name, &up, &t, cols, &rows)?;
    c.push_str(&fill(RUNTIME, name, &up));
    write_pair(dir, name, &h, &c)
}

const HEADER_DOC: &str = r#" * Activations, biases and batch norm are f32; conv / linear weights are `bits`-wide codes
 * packed LSB first (code i is bits i*bits .. i*bits + bits - 1 of the stream, stream bit j
 * is bit j % 8 of byte j / 8) and decoded while computing: code * w_scale[c] (two's
 * complement codes, per output channel), table[code], or the bit pattern of the reduced
 * float T(exp_bits, man_bits). Batch 1. Compile the .c with -ffp-contract=off and without
 * -ffast-math to get outputs bit-identical to whittle's reference evaluator. */
"#;

/// The tensor struct and the tensor and layer documentation of the header (@N@ / @U@ become
/// the name / upper-case name).
const TABLES_DOC: &str = r#"/* Activation tensor (batch 1, layout C x H x W; 1-D is H = 1, vectors are C x 1 x 1);
 * offset in floats into the arena. */
typedef struct { int c, h, w; int offset; } @N@_tensor_t;

/* One layer: op, tensor indices (in1 = -1 if unused), shapes, convolution geometry
 * (CONV and LINEAR; LINEAR is a matrix-vector product on a C x 1 x 1 vector; pad_h / pad_w are
 * the zero rows / columns before the input, pad_h_end / pad_w_end after it) and parameters:
 * weight (Cout, Cin/groups, k_h, k_w) packed codes of `bits` bits decoded by `decode`, bias
 * (NULL = zeros), BATCH_NORM's bn = gamma, beta, mean, var (C each) with eps. MAX_POOL /
 * AVG_POOL use the same geometry (dilation 1; the average divides by k_h * k_w, padded zeros
 * included); CHANNEL_MUL multiplies channel c of in0 by element c of in1; SHUFFLE uses
 * `groups`; NARROW copies channels start .. start + out_c; CONCAT joins the n_in tensors of
 * in_list along the channels. */
"#;

/// The functions the header declares (@N@ / @U@ as in [`TABLES_DOC`]).
const API: &str = r#"/* Decoded weight `i` (row-major index) of layer L, output channel oc. */
float @N@_weight(const @N@_layer_t *L, long i, int oc);
/* Float inference (batch 1): input @U@_INPUT_SIZE floats, output @U@_OUTPUT_SIZE floats,
 * arena @U@_ARENA_SIZE floats. */
void @N@_run(const float *input, float *output, float *arena);

"#;

/// The inference code appended to every generated `.c` (@N@ / @U@ become the name / upper-case
/// name). Each loop follows `reference::run` (same accumulation order and start values).
const RUNTIME: &str = r#"/* Field i (bits wide) of the LSB-first bitstream p. */
static uint32_t @N@_code(const uint8_t *p, long i, int bits) {
    long bit = i * bits;
    uint32_t v = 0;
    int got = 0;
    while (got < bits) {
        int off = (int)(bit & 7), take = 8 - off;
        if (take > bits - got) take = bits - got;
        v |= (uint32_t)((p[bit >> 3] >> off) & ((1u << take) - 1)) << got;
        got += take;
        bit += take;
    }
    return v;
}

/* Value of bit pattern c of T(w, t): sign, w exponent bits (bias 2^(w-1) - 1), t mantissa bits. */
static float @N@_tfloat(uint32_t c, int w, int t) {
    int bias = (1 << (w - 1)) - 1;
    int e = (int)((c >> t) & ((1u << w) - 1));
    uint32_t m = c & ((1u << t) - 1);
    float a;
    if (e == (1 << w) - 1) a = m == 0 ? INFINITY : NAN;
    else if (e == 0) a = (float)ldexp((double)m, 1 - bias - t);
    else a = (float)ldexp((double)((1u << t) + m), e - bias - t);
    return (c >> (w + t)) & 1 ? -a : a;
}

float @N@_weight(const @N@_layer_t *L, long i, int oc) {
    uint32_t c = @N@_code(L->weight, i, L->bits);
    switch (L->decode) {
    case @U@_DECODE_TABLE:
        return L->table[c];
    case @U@_DECODE_FLOAT:
        return @N@_tfloat(c, L->exp_bits, L->man_bits);
    default:
        if (c >> (L->bits - 1)) return (float)((int32_t)c - (int32_t)(1u << L->bits)) * L->w_scale[oc];
        return (float)(int32_t)c * L->w_scale[oc];
    }
}

static void @N@_conv(const @N@_layer_t *L, const float *x, float *y) {
    int cig = L->in_c / L->groups, cog = L->out_c / L->groups;
    int oc, oy, ox, ic, ky, kx;
    for (oc = 0; oc < L->out_c; ++oc) {
        int g = oc / cog;
        for (oy = 0; oy < L->out_h; ++oy) {
            for (ox = 0; ox < L->out_w; ++ox) {
                float acc = L->bias ? L->bias[oc] : 0.0f;
                for (ic = 0; ic < cig; ++ic) {
                    int c = g * cig + ic;
                    for (ky = 0; ky < L->k_h; ++ky) {
                        int iy = oy * L->stride_h + ky * L->dil_h - L->pad_h;
                        if (iy < 0 || iy >= L->in_h) continue;
                        for (kx = 0; kx < L->k_w; ++kx) {
                            int ix = ox * L->stride_w + kx * L->dil_w - L->pad_w;
                            if (ix < 0 || ix >= L->in_w) continue;
                            acc += x[(c * L->in_h + iy) * L->in_w + ix] *
                                   @N@_weight(L, ((long)(oc * cig + ic) * L->k_h + ky) * L->k_w + kx, oc);
                        }
                    }
                }
                y[(oc * L->out_h + oy) * L->out_w + ox] = acc;
            }
        }
    }
}

static void @N@_linear(const @N@_layer_t *L, const float *x, float *y) {
    int r, c, n = L->in_c;
    for (r = 0; r < L->out_c; ++r) {
        float s = -0.0f; /* Rust's f32 sum starts at -0.0 */
        for (c = 0; c < n; ++c) s += @N@_weight(L, (long)r * n + c, r) * x[c];
        y[r] = (L->bias ? L->bias[r] : 0.0f) + s;
    }
}

static float @N@_clamp6(float v) {
    return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
}

/* ReLU6, sigmoid, hard sigmoid relu6(v + 3) / 6 and hard swish v * relu6(v + 3) / 6. */
static float @N@_act(int op, float v) {
    switch (op) {
    case @U@_OP_RELU6:
        return @N@_clamp6(v);
    case @U@_OP_SIGMOID:
        return 1.0f / (1.0f + expf(-v));
    case @U@_OP_HARD_SIGMOID:
        return @N@_clamp6(v + 3.0f) / 6.0f;
    default:
        return v * @N@_clamp6(v + 3.0f) / 6.0f;
    }
}

static void @N@_pool(const @N@_layer_t *L, const float *x, float *y) {
    int c, oy, ox, ky, kx;
    for (c = 0; c < L->out_c; ++c) {
        for (oy = 0; oy < L->out_h; ++oy) {
            for (ox = 0; ox < L->out_w; ++ox) {
                float sum = 0.0f, best = -INFINITY;
                for (ky = 0; ky < L->k_h; ++ky) {
                    int iy = oy * L->stride_h + ky - L->pad_h;
                    for (kx = 0; kx < L->k_w; ++kx) {
                        int ix = ox * L->stride_w + kx - L->pad_w;
                        float v;
                        if (iy < 0 || iy >= L->in_h || ix < 0 || ix >= L->in_w) continue;
                        v = x[(c * L->in_h + iy) * L->in_w + ix];
                        sum += v;
                        if (v > best) best = v;
                    }
                }
                y[(c * L->out_h + oy) * L->out_w + ox] =
                    L->op == @U@_OP_MAX_POOL ? best : sum / (float)(L->k_h * L->k_w);
            }
        }
    }
}

void @N@_run(const float *input, float *output, float *arena) {
    int l, i;
    memcpy(arena + @N@_tensors[0].offset, input, sizeof(float) * @U@_INPUT_SIZE);
    for (l = 0; l < @U@_NUM_LAYERS; ++l) {
        const @N@_layer_t *L = &@N@_layers[l];
        const @N@_tensor_t *tx = &@N@_tensors[L->in0], *ty = &@N@_tensors[L->out];
        const float *x = arena + tx->offset;
        float *y = arena + ty->offset;
        int n = ty->c * ty->h * ty->w, hw = tx->h * tx->w;
        switch (L->op) {
        case @U@_OP_CONV:
            @N@_conv(L, x, y);
            break;
        case @U@_OP_LINEAR:
            @N@_linear(L, x, y);
            break;
        case @U@_OP_BATCH_NORM: {
            const float *g = L->bn, *b = L->bn + tx->c, *m = L->bn + 2 * tx->c, *v = L->bn + 3 * tx->c;
            for (i = 0; i < n; ++i) {
                int c = i / hw;
                y[i] = g[c] * (x[i] - m[c]) / sqrtf(v[c] + L->eps) + b[c];
            }
            break;
        }
        case @U@_OP_RELU:
            for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
            break;
        case @U@_OP_ADD: {
            const float *b = arena + @N@_tensors[L->in1].offset;
            for (i = 0; i < n; ++i) y[i] = x[i] + b[i];
            break;
        }
        case @U@_OP_GAP: {
            int c;
            for (c = 0; c < tx->c; ++c) {
                float sum = -0.0f; /* Rust's f32 sum starts at -0.0 */
                for (i = 0; i < hw; ++i) sum += x[c * hw + i];
                y[c] = sum / (float)hw;
            }
            break;
        }
        case @U@_OP_FLATTEN:
            memmove(y, x, sizeof(float) * n);
            break;
        case @U@_OP_RELU6:
        case @U@_OP_SIGMOID:
        case @U@_OP_HARD_SIGMOID:
        case @U@_OP_HARD_SWISH:
            for (i = 0; i < n; ++i) y[i] = @N@_act(L->op, x[i]);
            break;
        case @U@_OP_CHANNEL_MUL: {
            const float *s = arena + @N@_tensors[L->in1].offset;
            for (i = 0; i < n; ++i) y[i] = x[i] * s[i / hw];
            break;
        }
        case @U@_OP_CONCAT: {
            int k, off = 0;
            for (k = 0; k < L->n_in; ++k) {
                const @N@_tensor_t *tk = &@N@_tensors[L->in_list[k]];
                int nk = tk->c * tk->h * tk->w;
                memmove(y + off, arena + tk->offset, sizeof(float) * nk);
                off += nk;
            }
            break;
        }
        case @U@_OP_NARROW:
            memmove(y, x + L->start * hw, sizeof(float) * n);
            break;
        case @U@_OP_SHUFFLE: {
            int g, j, cg = tx->c / L->groups;
            for (g = 0; g < L->groups; ++g)
                for (j = 0; j < cg; ++j)
                    for (i = 0; i < hw; ++i) y[(j * L->groups + g) * hw + i] = x[(g * cg + j) * hw + i];
            break;
        }
        case @U@_OP_MAX_POOL:
        case @U@_OP_AVG_POOL:
            @N@_pool(L, x, y);
            break;
        default:
            break;
        }
    }
    memcpy(output, arena + @N@_tensors[@U@_OUTPUT_TENSOR].offset, sizeof(float) * @U@_OUTPUT_SIZE);
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_by_hand() {
        // 4-bit codes 1, −2, 3, −7 → fields 0x1, 0xe, 0x3, 0x9; two per byte, low nibble first.
        let w = WeightCodes::per_channel(4, &[1, -2, 3, -7], vec![0.5]).unwrap();
        assert_eq!(w.codes, [0x1, 0xe, 0x3, 0x9]);
        assert_eq!(w.packed(), [0xe1, 0x93]);
        assert_eq!(w.decode(&[1, 4]).unwrap(), [0.5, -1.0, 1.5, -3.5]);
        assert!(w.decode(&[1, 5]).is_err());
        // 2-bit codes 1, −1, 0, 1, −1 → 01 11 00 01 | 11: 0b01_00_11_01 = 0x4d, then 0x03.
        let w = WeightCodes::per_channel(2, &[1, -1, 0, 1, -1], vec![2.0]).unwrap();
        assert_eq!(w.packed(), [0x4d, 0x03]);
        assert_eq!(w.weight_bytes(), 2);
        // 3 bits straddle bytes: 5, 2, 7 → 101 010 111 → bits 0..8 = 1,0,1,0,1,0,1,1 | 1.
        assert_eq!(pack(3, &[5, 2, 7]), [0b1101_0101, 0b1]);
        assert_eq!(unpack(3, &[0b1101_0101, 0b1], 3), [5, 2, 7]);
        assert!(WeightCodes::per_channel(4, &[8], vec![1.0]).is_err());
        assert!(WeightCodes::per_channel(4, &[-8], vec![1.0]).is_ok());
    }

    #[test]
    fn tfloat_values_by_hand() {
        // T(4,3): bias 7. 0x38 = 0 0111 000 = 1.0; 0x3c = 1.5; 0xb8 = −1; 0x77 = 240 (max);
        // 0x78 = Inf; 0x01 = 2^−9 (smallest subnormal); 0x08 = 2^−6 (smallest normal).
        let v = |p| tfloat_value(4, 3, p);
        assert_eq!(v(0x38), 1.0);
        assert_eq!(v(0x3c), 1.5);
        assert_eq!(v(0xb8), -1.0);
        assert_eq!(v(0x77), 240.0);
        assert_eq!(v(0x78), f32::INFINITY);
        assert!(v(0x79).is_nan());
        assert_eq!(v(0x01), 1.0 / 512.0);
        assert_eq!(v(0x08), 1.0 / 64.0);
        assert_eq!(v(0x80).to_bits(), (-0.0f32).to_bits());
        // fp16 and bf16 patterns are the IEEE ones.
        assert_eq!(tfloat_value(5, 10, 0x3c00), 1.0);
        assert_eq!(tfloat_value(5, 10, 0x0001), 2f32.powi(-24));
        assert_eq!(tfloat_value(8, 7, 0x3f80), 1.0);
        assert_eq!(tfloat_value(8, 7, 0x0001), f32::from_bits(0x0001_0000));
        // T(1,2): subnormal only, multiples of 0.5 below 2 (sign, exponent, 2 mantissa bits).
        assert_eq!(tfloat_value(1, 2, 0b0011), 1.5);
        assert_eq!(tfloat_value(1, 2, 0b1001), -0.5);
        assert_eq!(tfloat_value(1, 2, 0b0100), f32::INFINITY);
    }
}

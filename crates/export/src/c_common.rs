//! Pieces shared by the C writers — the int8 export ([`crate::c_export`]), the packed-weight
//! float export ([`crate::c_packed`]) and the ladder ([`crate::c_ladder`]): the name check, the
//! tensor table (C × H × W per tensor) and its arena plan, the writer-independent columns of a
//! layer row (op code, tensor indices, shapes, geometry, groups, narrow start, concat list),
//! the header / source scaffolding, literal and comment helpers, and writing the `.h` / `.c`
//! pair. Each writer keeps its own parameter columns, documentation and runtime.

use crate::network::{Activation, Layer, Network, PoolKind};
use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Layer op codes of the generated layer tables (`<NAME>_OP_*`, the code is the position).
/// The int8 export uses the first [`INT8_OPS`] (its networks have batch norm folded).
pub(crate) const OPS: [&str; 17] = [
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
    "BATCH_NORM",
];

/// How many of [`OPS`] the int8 export defines (all but `BATCH_NORM`).
pub(crate) const INT8_OPS: usize = 16;

/// Fails unless `name` is a C identifier (it prefixes every generated symbol).
pub(crate) fn check_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit()),
        "C export name `{name}` is not a C identifier"
    );
    Ok(())
}

/// The tensor table: the input, then every layer output, in that order.
pub(crate) struct Tensors<'a> {
    /// Tensor name → row.
    pub index: BTreeMap<&'a str, usize>,
    /// Row → tensor name.
    pub names: Vec<&'a str>,
    /// Row → (C, H, W): a vector is C × 1 × 1, a 1-D tensor C × 1 × W.
    pub dims: Vec<[usize; 3]>,
}

impl<'a> Tensors<'a> {
    /// The table of `net` (whose graph must validate); `what` names the writer in errors.
    pub fn new(net: &'a Network, what: &str) -> Result<Self> {
        let shapes = net.shapes()?;
        let mut t = Self {
            index: BTreeMap::new(),
            names: Vec::new(),
            dims: Vec::new(),
        };
        let names =
            std::iter::once(net.input.0.as_str()).chain(net.layers.iter().map(|l| l.output()));
        for n in names {
            let s = &shapes[n];
            let d = match s.len() {
                2 => [s[1], 1, 1],
                3 => [s[1], 1, s[2]],
                4 => [s[1], s[2], s[3]],
                _ => bail!("{what}: tensor `{n}` has unsupported shape {s:?}"),
            };
            t.index.insert(n, t.names.len());
            t.names.push(n);
            t.dims.push(d);
        }
        Ok(t)
    }

    /// Elements of row `i`.
    pub fn len(&self, i: usize) -> usize {
        self.dims[i].iter().product()
    }

    /// Element counts of every row.
    pub fn lens(&self) -> Vec<usize> {
        (0..self.dims.len()).map(|i| self.len(i)).collect()
    }
}

/// Places the tensors in one arena: tensor t lives from the layer producing it (the input from
/// before the first layer) to its last reader (the output to the end); tensors whose lives
/// overlap get disjoint ranges (a layer's output never aliases its inputs). First fit in
/// creation order. `lens` are the tensors' sizes in arena elements (bytes for int8, floats for
/// float activations); returns each tensor's offset and the arena size, in the same unit.
pub(crate) fn plan_arena(
    net: &Network,
    index: &BTreeMap<&str, usize>,
    lens: &[usize],
) -> (Vec<usize>, usize) {
    let n = net.layers.len();
    let mut life: Vec<(usize, usize)> = (0..lens.len()).map(|i| (i, i)).collect();
    for (l, layer) in net.layers.iter().enumerate() {
        for t in layer.inputs() {
            life[index[t]].1 = life[index[t]].1.max(l + 1);
        }
    }
    life[index[net.output.as_str()]].1 = n + 1;
    let mut offsets = vec![0; lens.len()];
    let mut size = 0;
    for i in 0..lens.len() {
        let len = lens[i];
        let mut busy: Vec<(usize, usize)> = (0..i)
            .filter(|&j| life[j].0 <= life[i].1 && life[i].0 <= life[j].1)
            .map(|j| (offsets[j], offsets[j] + lens[j]))
            .collect();
        busy.sort();
        let mut off = 0;
        for (a, b) in busy {
            if off + len <= a {
                break;
            }
            off = off.max(b);
        }
        offsets[i] = off;
        size = size.max(off + len);
    }
    (offsets, size)
}

/// The geometry row of a conv or pool: k_h, k_w, stride_h, stride_w, pad_h, pad_w, pad_h_end,
/// pad_w_end, dil_h, dil_w — one entry per spatial axis in `kernel`, `stride`, `padding` and
/// `dilation`; a 1-D layer has height 1.
pub(crate) fn geometry(
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

/// The columns of a layer row that every writer shares; the writer adds its parameter columns
/// between `groups` and `start` ([`Row::format`]).
pub(crate) struct Row {
    pub op: &'static str,
    pub in0: usize,
    /// The second input, -1 if unused.
    pub in1: i64,
    pub out: usize,
    pub geo: [usize; 10],
    pub groups: usize,
    /// NARROW's first channel (0 otherwise).
    pub start: usize,
    /// `n_in, in_list`: CONCAT's inputs (array `<name>_in<i>` appended to `data`), else `0, 0`.
    pub list: String,
    /// `/* a + b -> out */`.
    comment: String,
}

impl Row {
    /// The shared columns of layer `i` of a network with tensor table `t`.
    pub fn new(t: &Tensors, data: &mut String, name: &str, i: usize, layer: &Layer) -> Self {
        let ins = layer.inputs();
        let none = [0usize; 10];
        let (op, geo, groups) = match layer {
            Layer::Conv {
                weight,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => (
                "CONV",
                geometry(&weight.shape[2..], stride, padding, dilation),
                *groups,
            ),
            Layer::Linear { .. } => ("LINEAR", [1, 1, 1, 1, 0, 0, 0, 0, 1, 1], 1),
            Layer::BatchNorm { .. } => ("BATCH_NORM", none, 1),
            Layer::Relu { .. } => ("RELU", none, 1),
            Layer::Add { .. } => ("ADD", none, 1),
            Layer::GlobalAvgPool { .. } => ("GAP", none, 1),
            Layer::Flatten { .. } => ("FLATTEN", none, 1),
            Layer::Activation { act, .. } => (
                match act {
                    Activation::Relu6 => "RELU6",
                    Activation::Sigmoid => "SIGMOID",
                    Activation::HardSigmoid => "HARD_SIGMOID",
                    Activation::HardSwish => "HARD_SWISH",
                },
                none,
                1,
            ),
            Layer::ChannelMul { .. } => ("CHANNEL_MUL", none, 1),
            Layer::Concat { .. } => ("CONCAT", none, 1),
            Layer::Narrow { .. } => ("NARROW", none, 1),
            Layer::ChannelShuffle { groups, .. } => ("SHUFFLE", none, *groups),
            Layer::Pool {
                kind,
                kernel,
                stride,
                padding,
                ..
            } => (
                match kind {
                    PoolKind::Max => "MAX_POOL",
                    PoolKind::Avg => "AVG_POOL",
                },
                geometry(kernel, stride, padding, &[1, 1]),
                1,
            ),
        };
        let start = match layer {
            Layer::Narrow { start, .. } => *start,
            _ => 0,
        };
        let list = if let Layer::Concat { inputs, .. } = layer {
            let idx: Vec<usize> = inputs.iter().map(|n| t.index[n.as_str()]).collect();
            array(data, "int", &format!("{name}_in{i}"), &idx, |v| {
                v.to_string()
            });
            format!("{}, {name}_in{i}", idx.len())
        } else {
            "0, 0".to_string()
        };
        Self {
            op,
            in0: t.index[ins[0]],
            in1: ins.get(1).map_or(-1, |n| t.index[n] as i64),
            out: t.index[layer.output()],
            geo,
            groups,
            start,
            list,
            comment: format!(
                "/* {} -> {} */",
                comment(&ins.join(" + ")),
                comment(layer.output())
            ),
        }
    }

    /// The row's C initializer with the writer's parameter columns `params`.
    pub fn format(&self, up: &str, t: &Tensors, params: &str) -> String {
        let ([ic, ih, iw], [oc, oh, ow]) = (t.dims[self.in0], t.dims[self.out]);
        format!(
            "    {{ {up}_OP_{}, {}, {}, {}, {ic}, {ih}, {iw}, {oc}, {oh}, {ow}, {}, {}, {params}, {}, {} }}, {}",
            self.op,
            self.in0,
            self.in1,
            self.out,
            self.geo.map(|v| v.to_string()).join(", "),
            self.groups,
            self.start,
            self.list,
            self.comment
        )
    }
}

/// Opens a header: the include guard `guard` and `<stdint.h>`.
pub(crate) fn header_open(h: &mut String, guard: &str) -> Result<()> {
    writeln!(
        h,
        "#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n"
    )?;
    Ok(())
}

/// Opens the `extern "C"` block of a header.
pub(crate) fn extern_c_open(h: &mut String) -> Result<()> {
    writeln!(h, "#ifdef __cplusplus\nextern \"C\" {{\n#endif\n")?;
    Ok(())
}

/// Closes the `extern "C"` block and the include guard `guard`.
pub(crate) fn header_close(h: &mut String, guard: &str) -> Result<()> {
    writeln!(h, "#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {guard} */")?;
    Ok(())
}

/// Starts a network header after its title comment: the include guard, the `extern "C"`
/// block and the size defines — input / output elements (each followed by `io_note`), the
/// arena (`arena_note` says its unit), tensor and layer counts and the output tensor's row.
pub(crate) fn header_start(
    h: &mut String,
    guard: &str,
    up: &str,
    t: &Tensors,
    net: &Network,
    (io_note, arena, arena_note): (&str, usize, &str),
) -> Result<()> {
    header_open(h, guard)?;
    extern_c_open(h)?;
    let out = t.index[net.output.as_str()];
    writeln!(h, "#define {up}_INPUT_SIZE {}{io_note}", t.len(0))?;
    writeln!(h, "#define {up}_OUTPUT_SIZE {}{io_note}", t.len(out))?;
    writeln!(h, "#define {up}_ARENA_SIZE {arena} /* {arena_note} */")?;
    writeln!(h, "#define {up}_NUM_TENSORS {}", t.dims.len())?;
    writeln!(h, "#define {up}_NUM_LAYERS {}", net.layers.len())?;
    writeln!(h, "#define {up}_OUTPUT_TENSOR {out}\n")?;
    Ok(())
}

/// `template` with `@N@` replaced by `name` and `@U@` by `up` (its upper-case form).
pub(crate) fn fill(template: &str, name: &str, up: &str) -> String {
    template.replace("@N@", name).replace("@U@", up)
}

/// `#define <UP>_OP_<op> <code>` for every op of `ops`.
pub(crate) fn op_defines(h: &mut String, up: &str, ops: &[&str]) -> Result<()> {
    for (k, op) in ops.iter().enumerate() {
        writeln!(h, "#define {up}_OP_{op} {k}")?;
    }
    Ok(())
}

/// Ends a network header: `tables_doc` (the writer's tensor struct and layer documentation,
/// a [`fill`] template), the layer struct `<name>_layer_t` (the shared columns around the
/// writer's parameter `fields`, each line indented and ending in a newline), the two table
/// declarations, the writer's function declarations `api` (a [`fill`] template) and the
/// closing of the `extern "C"` block and the include guard.
pub(crate) fn header_end(
    h: &mut String,
    (guard, name, up): (&str, &str, &str),
    tables_doc: &str,
    fields: &str,
    api: &str,
) -> Result<()> {
    h.push_str(&fill(tables_doc, name, up));
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
        "{fields}    int start, n_in;\n    const int *in_list;\n}} {name}_layer_t;\n"
    )?;
    writeln!(
        h,
        "extern const {name}_tensor_t {name}_tensors[{up}_NUM_TENSORS];"
    )?;
    writeln!(
        h,
        "extern const {name}_layer_t {name}_layers[{up}_NUM_LAYERS];\n"
    )?;
    h.push_str(&fill(api, name, up));
    header_close(h, guard)
}

/// The includes at the top of a network's `.c`.
pub(crate) fn source_includes(c: &mut String, name: &str) -> Result<()> {
    writeln!(
        c,
        "#include \"{name}.h\"\n#include <math.h>\n#include <string.h>\n"
    )?;
    Ok(())
}

/// The tensor table (row i: `{ <cols(i)> }, /* name */`) and the layer table of `rows`.
pub(crate) fn tables(
    c: &mut String,
    name: &str,
    up: &str,
    t: &Tensors,
    cols: impl Fn(usize) -> String,
    rows: &[String],
) -> Result<()> {
    writeln!(
        c,
        "\nconst {name}_tensor_t {name}_tensors[{up}_NUM_TENSORS] = {{"
    )?;
    for (i, n) in t.names.iter().enumerate() {
        writeln!(c, "    {{ {} }}, /* {} */", cols(i), comment(n))?;
    }
    writeln!(
        c,
        "}};\n\nconst {name}_layer_t {name}_layers[{up}_NUM_LAYERS] = {{"
    )?;
    for r in rows {
        writeln!(c, "{r}")?;
    }
    writeln!(c, "}};\n")?;
    Ok(())
}

/// Writes `<dir>/<name>.h` and `<dir>/<name>.c`; returns their paths.
pub(crate) fn write_pair(dir: &Path, name: &str, h: &str, c: &str) -> Result<(PathBuf, PathBuf)> {
    let hp = dir.join(format!("{name}.h"));
    let cp = dir.join(format!("{name}.c"));
    std::fs::write(&hp, h).with_context(|| format!("writing {}", hp.display()))?;
    std::fs::write(&cp, c).with_context(|| format!("writing {}", cp.display()))?;
    Ok((hp, cp))
}

/// Text safe inside a C block comment.
pub(crate) fn comment(s: &str) -> String {
    s.replace("*/", "* /")
}

/// A C float expression that reads back to the same f32 (NaN and ±Inf from <math.h>).
pub(crate) fn cfloat(v: f32) -> String {
    if v.is_nan() {
        "NAN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "INFINITY" } else { "-INFINITY" }.into()
    } else {
        format!("{v:e}f")
    }
}

/// Appends `static const <ty> <name>[n] = { ... };` to `out`, 16 values a line.
pub(crate) fn array<T>(out: &mut String, ty: &str, name: &str, v: &[T], f: impl Fn(&T) -> String) {
    let _ = write!(out, "static const {ty} {name}[{}] = {{", v.len());
    for (i, x) in v.iter().enumerate() {
        if i % 16 == 0 {
            out.push_str("\n   ");
        }
        let _ = write!(out, " {},", f(x));
    }
    out.push_str("\n};\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_rows_by_hand() {
        // 1-D: height 1, the one axis in the width columns.
        assert_eq!(
            geometry(&[3], &[2], &[(2, 0)], &[2]),
            [1, 3, 1, 2, 0, 2, 0, 0, 1, 2]
        );
        assert_eq!(
            geometry(&[3, 5], &[1, 2], &[(1, 0), (2, 3)], &[1, 1]),
            [3, 5, 1, 2, 1, 2, 0, 3, 1, 1]
        );
    }

    #[test]
    fn arena_plan_by_hand() {
        // x -> a = relu(x) -> b = relu(a) -> c = a + b, 4 elements each. Lives (first, last
        // layer touching): x 0..1, a 1..3, b 2..3, c 3..4 (the output to the end). a overlaps x
        // (after it at 4), b only a (fits at 0), c both a and b (after them at 8).
        let relu = |i: &str, o: &str| Layer::Relu {
            input: i.into(),
            output: o.into(),
        };
        let net = Network {
            name: "n".into(),
            input: ("x".into(), vec![1, 4]),
            output: "c".into(),
            layers: vec![
                relu("x", "a"),
                relu("a", "b"),
                Layer::Add {
                    a: "a".into(),
                    b: "b".into(),
                    output: "c".into(),
                },
            ],
        };
        let t = Tensors::new(&net, "test").unwrap();
        assert_eq!(t.names, ["x", "a", "b", "c"]);
        assert_eq!(t.lens(), [4, 4, 4, 4]);
        assert_eq!(
            plan_arena(&net, &t.index, &t.lens()),
            (vec![0, 4, 0, 8], 12)
        );
    }

    #[test]
    fn literals_and_comments() {
        assert_eq!(cfloat(0.5), "5e-1f");
        assert_eq!(cfloat(f32::NEG_INFINITY), "-INFINITY");
        assert_eq!(cfloat(f32::NAN), "NAN");
        assert_eq!(comment("a*/b"), "a* /b");
        let mut s = String::new();
        array(&mut s, "int", "x", &[1, 2], |v| v.to_string());
        assert_eq!(s, "static const int x[2] = {\n    1, 2,\n};\n");
        assert!(check_name("net_1").is_ok());
        assert!(check_name("1net").is_err());
        assert!(check_name("a-b").is_err());
        assert!(check_name("").is_err());
    }
}

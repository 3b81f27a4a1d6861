//! C export of a ladder (`003`'s dynamic inference on one device): every int8 variant written
//! by [`crate::write_c`] under its own prefix (`<name>_v<k>`), plus `<name>.h` / `<name>.c`
//! holding the variant table (flash bytes, arena bytes, latency, accuracy), one shared arena
//! (variants run one at a time: the largest arena), and the dispatcher: `<name>_select` picks
//! the variant for the next inference from the free RAM and CPU budget with the ladder's
//! policy (the rule of `whittle-stages`' `ladder::policy`, given here as a [`Dispatch`]), and
//! `<name>_predict` runs a variant on a float input and returns float outputs.
//!
//! Flash accounting ([`flash_bytes`]) counts the parameter data of the C files (int8 weights,
//! int32 biases, float per-channel weight scales); code and tables are not counted.

use crate::c_export::write_c;
use crate::network::{Layer, Network};
use crate::quant::Int8Params;
use anyhow::{Context, Result, ensure};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One variant of the artifact.
pub struct CVariant<'a> {
    /// Name shown in the table (any text).
    pub label: String,
    pub net: &'a Network,
    pub params: &'a Int8Params,
    pub accuracy: f64,
    pub latency_ms: f64,
}

/// The condition of one preference position of the policy.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// Met when `ram ≤ free·(1 − m)` and (with a deadline) `latency / cpu ≤ deadline·(1 − m)`.
    Fit { ram: u64, latency_ms: f64 },
    /// Met when `free ≥ min_ram·(1 + m)` and `cpu ≥ min_cpu·(1 + m)`.
    Threshold { min_ram: u64, min_cpu: f64 },
}

/// The policy as the dispatcher runs it: variant indices in preference order, the rule of each
/// position, the fallback position, deadline, hysteresis margin and minimum dwell.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    pub order: Vec<usize>,
    pub rules: Vec<Rule>,
    pub fallback: usize,
    pub deadline_ms: Option<f64>,
    pub hysteresis: f64,
    pub min_dwell: usize,
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct LadderFiles {
    pub header: PathBuf,
    pub source: PathBuf,
    /// The variants' own `.h` / `.c` files, in variant order.
    pub variant_files: Vec<(PathBuf, PathBuf)>,
    /// Parameter bytes per variant.
    pub flash_bytes: Vec<u64>,
    /// int8 scratch bytes per variant.
    pub arena_bytes: Vec<u64>,
}

/// Parameter data bytes of `net`'s C export: int8 weights, int32 biases, f32 weight scales.
pub fn flash_bytes(net: &Network) -> u64 {
    net.layers
        .iter()
        .map(|l| match l {
            Layer::Conv { weight, .. } | Layer::Linear { weight, .. } => {
                let cout = weight.shape[0] as u64;
                weight.data.len() as u64 + 4 * cout + 4 * cout
            }
            _ => 0,
        })
        .sum()
}

fn cdouble(v: f64) -> String {
    let s = format!("{v:?}");
    if s.contains(['.', 'e', 'E']) || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// Writes the ladder `name` (a C identifier) into `dir`.
pub fn write_c_ladder(
    variants: &[CVariant],
    dispatch: &Dispatch,
    dir: &Path,
    name: &str,
) -> Result<LadderFiles> {
    ensure!(
        !variants.is_empty(),
        "a C ladder needs at least one variant"
    );
    let n = variants.len();
    ensure!(
        dispatch.order.len() == dispatch.rules.len()
            && !dispatch.order.is_empty()
            && dispatch.order.iter().all(|&k| k < n)
            && dispatch.fallback < dispatch.order.len(),
        "C ladder: the dispatch table does not match the {n} variants"
    );
    let size = |net: &Network| -> Result<(usize, usize)> {
        let s = net.shapes()?;
        let input: usize = net.input.1.iter().product();
        let out = s
            .get(&net.output)
            .with_context(|| format!("output `{}`", net.output))?;
        Ok((input, out[1..].iter().product()))
    };
    let (inp, outp) = size(variants[0].net)?;
    for v in variants {
        ensure!(
            size(v.net)? == (inp, outp),
            "C ladder: variant `{}` has input/output sizes {:?}, the first one {:?}",
            v.label,
            size(v.net)?,
            (inp, outp)
        );
    }
    let up = name.to_ascii_uppercase();
    let mut files = Vec::new();
    let (mut flash, mut arenas) = (Vec::new(), Vec::new());
    for (k, v) in variants.iter().enumerate() {
        let vn = format!("{name}_v{k}");
        let (h, c) = write_c(v.net, v.params, dir, &vn)?;
        let text = std::fs::read_to_string(&h)?;
        let key = format!("#define {}_ARENA_SIZE ", vn.to_ascii_uppercase());
        let arena: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .context("arena size of a variant")?;
        files.push((h, c));
        flash.push(flash_bytes(v.net));
        arenas.push(arena);
    }
    let arena = *arenas.iter().max().unwrap_or(&0);
    // Header.
    let mut h = String::new();
    let guard = format!("{up}_LADDER_H");
    writeln!(
        h,
        "/* {name}.h: a ladder of {n} int8 variants and its switching policy (generated by whittle). */"
    )?;
    writeln!(
        h,
        "#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n"
    )?;
    writeln!(h, "#define {up}_NUM_VARIANTS {n}")?;
    writeln!(h, "#define {up}_INPUT_SIZE {inp}")?;
    writeln!(h, "#define {up}_OUTPUT_SIZE {outp}")?;
    writeln!(
        h,
        "#define {up}_ARENA_SIZE {arena} /* bytes: the largest variant's arena, shared */\n"
    )?;
    writeln!(
        h,
        "typedef struct {{\n    const char *name;\n    uint32_t flash_bytes;\n    uint32_t arena_bytes;\n    double latency_ms;\n    double accuracy;\n}} {name}_variant_t;\n"
    )?;
    writeln!(
        h,
        "extern const {name}_variant_t {name}_variants[{up}_NUM_VARIANTS];\n"
    )?;
    writeln!(
        h,
        "/* Policy state: the current variant (-1 before the first step) and steps on it. */"
    )?;
    writeln!(
        h,
        "typedef struct {{\n    int current;\n    uint32_t since_switch;\n}} {name}_state_t;\n"
    )?;
    writeln!(h, "#ifdef __cplusplus\nextern \"C\" {{\n#endif\n")?;
    writeln!(h, "void {name}_init({name}_state_t *s);")?;
    writeln!(
        h,
        "/* The variant for the next inference; cpu_budget is the CPU share (0, 1]. */"
    )?;
    writeln!(
        h,
        "int {name}_select({name}_state_t *s, uint32_t free_ram_bytes, double cpu_budget);"
    )?;
    writeln!(
        h,
        "/* Runs variant v on x ({up}_INPUT_SIZE floats) into y ({up}_OUTPUT_SIZE floats). */"
    )?;
    writeln!(
        h,
        "void {name}_predict(int v, const float *x, float *y, int8_t *arena);\n"
    )?;
    writeln!(h, "#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {guard} */")?;
    // Source.
    let mut c = String::new();
    writeln!(
        c,
        "/* {name}.c: variant table, dispatcher and predict of the ladder (generated by whittle). */"
    )?;
    writeln!(c, "#include \"{name}.h\"")?;
    for k in 0..n {
        writeln!(c, "#include \"{name}_v{k}.h\"")?;
    }
    writeln!(
        c,
        "\nconst {name}_variant_t {name}_variants[{up}_NUM_VARIANTS] = {{"
    )?;
    for (k, v) in variants.iter().enumerate() {
        let label = v.label.replace(['"', '\\'], "_");
        writeln!(
            c,
            "    {{ \"{label}\", {}u, {}u, {}, {} }},",
            flash[k],
            arenas[k],
            cdouble(v.latency_ms),
            cdouble(v.accuracy)
        )?;
    }
    writeln!(c, "}};\n")?;
    let np = dispatch.order.len();
    writeln!(c, "#define {up}_POSITIONS {np}")?;
    let order: Vec<String> = dispatch.order.iter().map(usize::to_string).collect();
    writeln!(
        c,
        "static const int {name}_order[{up}_POSITIONS] = {{ {} }};",
        order.join(", ")
    )?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let fit = matches!(dispatch.rules[0], Rule::Fit { .. });
    for r in &dispatch.rules {
        match *r {
            Rule::Fit { ram, latency_ms } => {
                ensure!(fit, "C ladder: mixed rule kinds");
                a.push(cdouble(ram as f64));
                b.push(cdouble(latency_ms));
            }
            Rule::Threshold { min_ram, min_cpu } => {
                ensure!(!fit, "C ladder: mixed rule kinds");
                a.push(cdouble(min_ram as f64));
                b.push(cdouble(min_cpu));
            }
        }
    }
    writeln!(
        c,
        "static const double {name}_rule_ram[{up}_POSITIONS] = {{ {} }};",
        a.join(", ")
    )?;
    writeln!(
        c,
        "static const double {name}_rule_b[{up}_POSITIONS] = {{ {} }};",
        b.join(", ")
    )?;
    let deadline = dispatch.deadline_ms.map_or("-1.0".to_string(), cdouble);
    let met = if fit {
        format!(
            "    double free = (double)free_ram, d = {deadline};\n    if ({name}_rule_ram[p] > free * (1.0 - m)) return 0;\n    return d < 0.0 || {name}_rule_b[p] / cpu <= d * (1.0 - m);\n"
        )
    } else {
        format!(
            "    return (double)free_ram >= {name}_rule_ram[p] * (1.0 + m) && cpu >= {name}_rule_b[p] * (1.0 + m);\n"
        )
    };
    writeln!(
        c,
        "\nstatic int {name}_met(int p, uint32_t free_ram, double cpu, double m) {{\n{met}}}\n"
    )?;
    writeln!(
        c,
        "void {name}_init({name}_state_t *s) {{ s->current = -1; s->since_switch = 0; }}\n"
    )?;
    writeln!(
        c,
        "int {name}_select({name}_state_t *s, uint32_t free_ram_bytes, double cpu_budget) {{\n\
         \x20   int p, pick = {fallback};\n\
         \x20   for (p = 0; p < {up}_POSITIONS; ++p) {{\n\
         \x20       int up = s->current >= 0 && p < s->current;\n\
         {dwell}\
         \x20       if ({name}_met(p, free_ram_bytes, cpu_budget, up ? {h} : 0.0)) {{ pick = p; break; }}\n\
         \x20   }}\n\
         \x20   if (s->current >= 0 && s->current != pick) s->since_switch = 0;\n\
         \x20   s->since_switch += 1;\n\
         \x20   s->current = pick;\n\
         \x20   return {name}_order[pick];\n}}\n",
        fallback = dispatch.fallback,
        dwell = if dispatch.min_dwell > 0 {
            format!(
                "        if (up && s->since_switch < {}u) continue;\n",
                dispatch.min_dwell
            )
        } else {
            String::new()
        },
        h = cdouble(dispatch.hysteresis),
    )?;
    writeln!(
        c,
        "void {name}_predict(int v, const float *x, float *y, int8_t *arena) {{"
    )?;
    writeln!(
        c,
        "    static int8_t q[{up}_INPUT_SIZE], o[{up}_OUTPUT_SIZE];\n    switch (v) {{"
    )?;
    for k in 0..n {
        let vn = format!("{name}_v{k}");
        writeln!(
            c,
            "    case {k}: {vn}_quantize_input(x, q); {vn}_run(q, o, arena); {vn}_dequantize_output(o, y); break;"
        )?;
    }
    writeln!(c, "    default: break;\n    }}\n}}")?;
    let header = dir.join(format!("{name}.h"));
    let source = dir.join(format!("{name}.c"));
    std::fs::write(&header, h).with_context(|| format!("writing {}", header.display()))?;
    std::fs::write(&source, c).with_context(|| format!("writing {}", source.display()))?;
    Ok(LadderFiles {
        header,
        source,
        variant_files: files,
        flash_bytes: flash,
        arena_bytes: arenas,
    })
}

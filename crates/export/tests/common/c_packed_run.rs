//! Compiles a packed-weight C export (`whittle_export::write_c_packed`) with the system C
//! compiler (`cc -std=c99 -O2 -ffp-contract=off`) and a main that runs it on several inputs;
//! returns the f32 bit patterns of every output. Included with `#[path]` by the export and
//! stages tests; compiling and running go through `c_run.rs`'s [`c_run::run_main`]. Tests call
//! [`have_cc`] first: false (after one line on stderr) when `cc` is not installed.

#[path = "c_run.rs"]
#[allow(dead_code)]
mod c_run;

use std::path::Path;
use std::process::Command;

/// True when `cc --version` runs; otherwise prints one line saying the test is skipped.
pub fn have_cc(test: &str) -> bool {
    let ok = Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("{test}: skipped, no C compiler `cc` on PATH");
    }
    ok
}

/// Output bit patterns of `<name>_run` on each of `xs` (the export in `dir`).
pub fn run_c_packed(dir: &Path, name: &str, xs: &[Vec<f32>]) -> Vec<Vec<u32>> {
    let up = name.to_uppercase();
    let rows: Vec<String> = xs
        .iter()
        .map(|x| {
            let v: Vec<String> = x.iter().map(|v| format!("{v:e}f")).collect();
            format!("{{{}}}", v.join(", "))
        })
        .collect();
    let main = format!(
        "#include <stdio.h>\n#include <string.h>\n#include \"{name}.h\"\n\
         static const float xs[{k}][{up}_INPUT_SIZE] = {{{rows}}};\n\
         static float y[{up}_OUTPUT_SIZE], arena[{up}_ARENA_SIZE];\n\
         int main(void) {{ int s, i; uint32_t u;\n\
         for (s = 0; s < {k}; ++s) {{ {name}_run(xs[s], y, arena);\n\
         for (i = 0; i < {up}_OUTPUT_SIZE; ++i) {{ memcpy(&u, &y[i], 4); printf(\"%08x \", (unsigned)u); }}\n\
         printf(\"\\n\"); }}\n return 0; }}\n",
        k = xs.len(),
        rows = rows.join(",\n"),
    );
    c_run::run_main(dir, name, &main, &["-std=c99", "-O2", "-ffp-contract=off"])
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|h| u32::from_str_radix(h, 16).unwrap())
                .collect()
        })
        .collect()
}

//! Compiles a C export with the system C compiler (`cc`) and a main that runs it on one input.
//! Included with `#[path]` by the export and stages tests; [`compile`] and [`run_main`] also
//! serve the packed-weight harness (`c_packed_run.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles `sources` with `cc <flags> -Wall -Wextra -Werror -o <dir>/<name> <sources> -lm`
/// (panicking with cc's messages if it fails); returns the executable.
pub fn compile(dir: &Path, name: &str, sources: &[PathBuf], flags: &[&str]) -> PathBuf {
    let exe = dir.join(name);
    let out = Command::new("cc")
        .args(flags)
        .args(["-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .args(sources)
        .arg("-lm")
        .output()
        .expect("running the system C compiler `cc`");
    assert!(
        out.status.success(),
        "cc failed on {name}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Writes `main` to `<dir>/main_<name>.c`, compiles it with the export `<dir>/<name>.c`
/// ([`compile`] with `flags`), runs it and returns its standard output.
pub fn run_main(dir: &Path, name: &str, main: &str, flags: &[&str]) -> String {
    let main_c = dir.join(format!("main_{name}.c"));
    std::fs::write(&main_c, main).unwrap();
    let exe = compile(dir, name, &[main_c, dir.join(format!("{name}.c"))], flags);
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success(), "{name} failed: {:?}", run.status);
    String::from_utf8(run.stdout).unwrap()
}

/// Compiles the C export `name` in `dir` with a main that runs it on `x`; returns the int8 output.
pub fn run_c(dir: &Path, name: &str, x: &[f32]) -> Vec<i32> {
    let up = name.to_uppercase();
    let xs: Vec<String> = x.iter().map(|v| format!("{v:e}f")).collect();
    let main = format!(
        "#include <stdio.h>\n#include \"{name}.h\"\nstatic const float x[{up}_INPUT_SIZE] = {{{}}};\n\
         int main(void) {{ static int8_t q[{up}_INPUT_SIZE], y[{up}_OUTPUT_SIZE], arena[{up}_ARENA_SIZE]; int i;\n\
         {name}_quantize_input(x, q); {name}_run(q, y, arena);\n\
         for (i = 0; i < {up}_OUTPUT_SIZE; ++i) printf(\"%d\\n\", y[i]);\n return 0; }}\n",
        xs.join(", ")
    );
    run_main(dir, name, &main, &["-std=c99", "-O1"])
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

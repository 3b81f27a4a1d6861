//! Compiles a C export with the system C compiler (`cc`) and a main that runs it on one input.
//! Included with `#[path]` by the export and stages tests.

use std::path::Path;
use std::process::Command;

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
    let main_c = dir.join(format!("main_{name}.c"));
    std::fs::write(&main_c, main).unwrap();
    let exe = dir.join(name);
    let out = Command::new("cc")
        .args(["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&main_c)
        .arg(dir.join(format!("{name}.c")))
        .arg("-lm")
        .output()
        .expect("running the system C compiler `cc`");
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

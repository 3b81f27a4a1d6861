//! Compiles the C export of every test network (`common::all`: CNNs, TCNs, MobileNet and
//! ShuffleNet blocks, pooling) with the system C compiler, runs it on a fixed input and
//! compares with the Rust fake-quant reference (a few int8 steps, same argmax).

mod common;

use std::process::Command;
use whittle_export::{Int8Params, fold_batchnorm, reference, write_c};

fn argmax(v: &[i32]) -> usize {
    (0..v.len())
        .max_by_key(|&i| (v[i], std::cmp::Reverse(i)))
        .unwrap()
}

#[test]
fn generated_c_matches_fake_quant_reference() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (k, net) in common::all(11).into_iter().enumerate() {
        let net = fold_batchnorm(&net).unwrap();
        let calib: Vec<Vec<f32>> = (0..8).map(|s| common::input(&net, 500 + s)).collect();
        let params = Int8Params::calibrate(&net, &calib).unwrap();
        let name = format!("net_{}", net.name);
        let (hp, _) = write_c(&net, &params, d, &name).unwrap();
        // The arena reuses memory of dead tensors: smaller than all tensors together.
        let shapes = net.shapes().unwrap();
        let total: usize = shapes.values().map(|s| s.iter().product::<usize>()).sum();
        let header = std::fs::read_to_string(&hp).unwrap();
        let arena: usize = header
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {}_ARENA_SIZE ", name.to_uppercase())))
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        eprintln!("{name}: arena {arena} bytes, all tensors {total}");
        assert!(arena < total, "{name}: arena {arena} vs {total}");
        let x = common::input(&net, 77 + k as u64);
        let up = name.to_uppercase();
        let xs: Vec<String> = x.iter().map(|v| format!("{v:e}f")).collect();
        let main = format!(
            "#include <stdio.h>\n#include \"{name}.h\"\nstatic const float x[{up}_INPUT_SIZE] = {{{}}};\n\
             int main(void) {{ static int8_t q[{up}_INPUT_SIZE], y[{up}_OUTPUT_SIZE], arena[{up}_ARENA_SIZE]; int i;\n\
             {name}_quantize_input(x, q); {name}_run(q, y, arena);\n\
             for (i = 0; i < {up}_OUTPUT_SIZE; ++i) printf(\"%d\\n\", y[i]);\n return 0; }}\n",
            xs.join(", ")
        );
        let main_c = d.join(format!("main_{name}.c"));
        std::fs::write(&main_c, main).unwrap();
        let exe = d.join(&name);
        let out = Command::new("cc")
            .args(["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&exe)
            .arg(&main_c)
            .arg(d.join(format!("{name}.c")))
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
        let got: Vec<i32> = String::from_utf8(run.stdout)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        let yref = reference::run(&net, &x, Some(&params)).unwrap();
        let a = params.get(&net.output).unwrap();
        let want: Vec<i32> = yref.iter().map(|&v| a.quantize(v) as i32).collect();
        let steps = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .max()
            .unwrap();
        eprintln!("{name}: C {got:?} vs reference {want:?}, max {steps} steps");
        assert_eq!(got.len(), want.len());
        assert!(steps <= 2, "{name}: C {got:?} vs reference {want:?}");
        assert_eq!(argmax(&got), argmax(&want), "{name}: argmax");
        // The logits must not be degenerate (otherwise the comparison proves little).
        assert!(
            want.iter().max() != want.iter().min(),
            "{name}: constant logits {want:?}"
        );
    }
}

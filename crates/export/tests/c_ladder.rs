//! The C ladder: three int8 variants and the dispatcher compiled together with `cc`; each
//! variant's predictions match the Rust fake-quant reference, and `select` replays the
//! hand-computed policy trace of the ladder stage's tests.

mod common;

use std::process::Command;
use whittle_export::c_ladder::{CVariant, Dispatch, Rule, write_c_ladder};
use whittle_export::{Int8Params, fold_batchnorm, reference};

fn argmax(v: &[f32]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]).then(b.cmp(&a)))
        .unwrap()
}

#[test]
fn ladder_variants_and_dispatcher_compile_and_match() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nets: Vec<_> = (1..=3)
        .map(|s| fold_batchnorm(&common::ds_cnn(s)).unwrap())
        .collect();
    let params: Vec<Int8Params> = nets
        .iter()
        .map(|n| {
            let calib: Vec<Vec<f32>> = (0..8).map(|s| common::input(n, 500 + s)).collect();
            Int8Params::calibrate(n, &calib).unwrap()
        })
        .collect();
    let variants: Vec<CVariant> = (0..3)
        .map(|k| CVariant {
            label: format!("v{k}"),
            net: &nets[k],
            params: &params[k],
            accuracy: [0.6, 0.8, 0.9][k],
            latency_ms: [1.0, 2.0, 4.0][k],
        })
        .collect();
    // Fit policy over A (100 B, 1 ms), B (200 B, 2 ms), C (400 B, 4 ms); deadline 5 ms.
    let dispatch = Dispatch {
        order: vec![2, 1, 0],
        rules: vec![
            Rule::Fit {
                ram: 400,
                latency_ms: 4.0,
            },
            Rule::Fit {
                ram: 200,
                latency_ms: 2.0,
            },
            Rule::Fit {
                ram: 100,
                latency_ms: 1.0,
            },
        ],
        fallback: 2,
        deadline_ms: Some(5.0),
        hysteresis: 0.1,
        min_dwell: 0,
    };
    let files = write_c_ladder(&variants, &dispatch, d, "kws").unwrap();
    assert_eq!(files.variant_files.len(), 3);
    // ds_cnn: conv 8·40 + dw 8·9 + pw 12·8 + fc 5·12 int8 weights, 4 B bias + 4 B scale per
    // output channel (8 + 8 + 12 + 5 = 33 channels).
    assert_eq!(files.flash_bytes[0], 320 + 72 + 96 + 60 + 8 * 33);
    let header = std::fs::read_to_string(&files.header).unwrap();
    let arena = *files.arena_bytes.iter().max().unwrap();
    assert!(header.contains(&format!("#define KWS_ARENA_SIZE {arena} ")));

    let xs: Vec<Vec<f32>> = (0..4).map(|s| common::input(&nets[0], 900 + s)).collect();
    let lit = |v: &[f32]| {
        v.iter()
            .map(|x| format!("{x:e}f"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut main = String::from("#include <stdio.h>\n#include \"kws.h\"\n");
    for (i, x) in xs.iter().enumerate() {
        main += &format!(
            "static const float x{i}[KWS_INPUT_SIZE] = {{{}}};\n",
            lit(x)
        );
    }
    main += "static const float *xs[4] = { x0, x1, x2, x3 };\n";
    main += "int main(void) {\n    static int8_t arena[KWS_ARENA_SIZE]; float y[KWS_OUTPUT_SIZE];\n\
             \x20   int v, i, j; kws_state_t s;\n\
             \x20   for (v = 0; v < KWS_NUM_VARIANTS; ++v) for (i = 0; i < 4; ++i) {\n\
             \x20       kws_predict(v, xs[i], y, arena);\n\
             \x20       for (j = 0; j < KWS_OUTPUT_SIZE; ++j) printf(\"%.9g \", y[j]);\n\
             \x20       printf(\"\\n\");\n    }\n\
             \x20   static const uint32_t ram[5] = { 500, 300, 430, 1000, 1000 };\n\
             \x20   static const double cpu[5] = { 1.0, 1.0, 1.0, 0.5, 0.3 };\n\
             \x20   kws_init(&s);\n\
             \x20   for (i = 0; i < 5; ++i) printf(\"%d \", kws_select(&s, ram[i], cpu[i]));\n\
             \x20   printf(\"\\n\");\n\
             \x20   kws_init(&s);\n\
             \x20   for (i = 0; i < 40; ++i) printf(\"%d \", kws_select(&s, i % 2 ? 390 : 410, 1.0));\n\
             \x20   printf(\"\\n\");\n    return 0;\n}\n";
    std::fs::write(d.join("main.c"), main).unwrap();
    let exe = d.join("ladder");
    let mut cc = Command::new("cc");
    cc.args(["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(d.join("main.c"))
        .arg(&files.source);
    for (_, c) in &files.variant_files {
        cc.arg(c);
    }
    let out = cc
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
    let text = String::from_utf8(run.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3 * 4 + 2);
    for v in 0..3 {
        let a = params[v].get(&nets[v].output).unwrap();
        for (i, x) in xs.iter().enumerate() {
            let got: Vec<f32> = lines[v * 4 + i]
                .split_whitespace()
                .map(|t| t.parse().unwrap())
                .collect();
            let want = reference::run(&nets[v], x, Some(&params[v])).unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 2.0 * a.scale + 1e-6,
                    "variant {v} input {i}: C {got:?} vs {want:?}"
                );
            }
            assert_eq!(argmax(&got), argmax(&want), "variant {v} input {i}");
        }
    }
    // The hand-computed trace of the Rust policy: C, B, B, B, A.
    assert_eq!(
        lines[12].split_whitespace().collect::<Vec<_>>(),
        ["2", "1", "1", "1", "0"]
    );
    // Oscillating RAM around C's 400 B: one switch, then B.
    let osc: Vec<&str> = lines[13].split_whitespace().collect();
    assert_eq!(osc[0], "2");
    assert!(osc[1..].iter().all(|&k| k == "1"), "{osc:?}");
}

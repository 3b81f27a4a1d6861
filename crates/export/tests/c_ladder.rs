//! The C ladder: three int8 variants and the dispatcher compiled together with `cc`; each
//! variant's predictions match the Rust fake-quant reference, and `select` replays the
//! hand-computed policy trace of the ladder stage's tests. The loader mode: the same variants
//! as checked blobs loaded one at a time through a `fopen` read callback give the same
//! predictions, `step` loads on a switch and counts the bytes, and corrupt, short, mislabelled
//! or re-sized blobs are refused with their error codes.

#[allow(dead_code)]
#[path = "common/c_run.rs"]
mod c_run;
mod common;

use std::process::Command;
use whittle_export::c_ladder::{
    BLOB_HEADER_BYTES, CVariant, Dispatch, Rule, SlotPlace, write_c_ladder, write_c_ladder_loader,
};
use whittle_export::{Int8Params, fold_batchnorm, reference};

fn argmax(v: &[f32]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]).then(b.cmp(&a)))
        .unwrap()
}

struct Fixture {
    nets: Vec<whittle_export::Network>,
    params: Vec<Int8Params>,
}

fn fixture() -> Fixture {
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
    Fixture { nets, params }
}

fn variants(f: &Fixture) -> Vec<CVariant<'_>> {
    (0..3)
        .map(|k| CVariant {
            label: format!("v{k}"),
            net: &f.nets[k],
            params: &f.params[k],
            accuracy: [0.6, 0.8, 0.9][k],
            latency_ms: [1.0, 2.0, 4.0][k],
        })
        .collect()
}

/// Fit policy over A (100 B, 1 ms), B (200 B, 2 ms), C (400 B, 4 ms); deadline 5 ms.
fn fit_dispatch() -> Dispatch {
    Dispatch {
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
    }
}

fn c_floats(v: &[f32]) -> String {
    v.iter()
        .map(|x| format!("{x:e}f"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compiles `main.c` in `d` with `sources` (`-O2`, strict aliasing on: the slot is read as
/// int8 / int32 / float through the tables); returns the executable.
fn compile(d: &std::path::Path, sources: &[&std::path::Path]) -> std::path::PathBuf {
    let mut all = vec![d.join("main.c")];
    all.extend(sources.iter().map(|p| p.to_path_buf()));
    c_run::compile(d, "ladder", &all, &["-std=c99", "-O2"])
}

/// Every variant's C outputs on `xs` (lines[v * 4 + i]) against the Rust reference.
fn check_predictions(f: &Fixture, xs: &[Vec<f32>], lines: &[&str]) {
    for v in 0..3 {
        let a = f.params[v].get(&f.nets[v].output).unwrap();
        for (i, x) in xs.iter().enumerate() {
            let got: Vec<f32> = lines[v * 4 + i]
                .split_whitespace()
                .map(|t| t.parse().unwrap())
                .collect();
            let want = reference::run(&f.nets[v], x, Some(&f.params[v])).unwrap();
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
    let dispatch = fit_dispatch();
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
    let mut sources: Vec<&std::path::Path> = vec![&files.source];
    sources.extend(files.variant_files.iter().map(|(_, c)| c.as_path()));
    let exe = compile(d, &sources);
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

/// The loader harness: `ladder DIR` loads every variant from `DIR/kws_v<k>.bin` in turn and
/// prints its return code, then (if it loaded) the outputs on the four inputs; then the
/// bytes read, predict's code for a variant that is not resident, and `step` over the
/// hand-computed trace (chosen variant, bytes read so far).
fn loader_main(xs: &[Vec<f32>]) -> String {
    let mut m = String::from(
        "#include <stdio.h>\n#include <string.h>\n#include \"kws.h\"\n\
         static uint32_t read_file(void *ctx, int v, uint32_t off, uint8_t *dst, uint32_t len) {\n\
         \x20   char path[4096]; FILE *f; size_t got;\n\
         \x20   snprintf(path, sizeof path, \"%s/kws_v%d.bin\", (const char *)ctx, v);\n\
         \x20   if (!(f = fopen(path, \"rb\"))) return 0;\n\
         \x20   if (fseek(f, (long)off, SEEK_SET) != 0) { fclose(f); return 0; }\n\
         \x20   got = fread(dst, 1, len, f); fclose(f); return (uint32_t)got;\n}\n",
    );
    for (i, x) in xs.iter().enumerate() {
        m += &format!(
            "static const float x{i}[KWS_INPUT_SIZE] = {{{}}};\n",
            c_floats(x)
        );
    }
    m += "static const float *xs[4] = { x0, x1, x2, x3 };\n\
          int main(int argc, char **argv) {\n\
          \x20   static int8_t arena[KWS_ARENA_SIZE]; float y[KWS_OUTPUT_SIZE];\n\
          \x20   int v, i, j, r; kws_state_t s; uint32_t before;\n\
          \x20   static const uint32_t ram[5] = { 500, 300, 430, 1000, 1000 };\n\
          \x20   static const double cpu[5] = { 1.0, 1.0, 1.0, 0.5, 0.3 };\n\
          \x20   if (argc < 2) return 2;\n\
          \x20   for (v = 0; v < KWS_NUM_VARIANTS; ++v) {\n\
          \x20       r = kws_load(v, read_file, argv[1]);\n\
          \x20       printf(\"load %d %d %d\\n\", v, r, kws_resident());\n\
          \x20       if (r != KWS_OK) continue;\n\
          \x20       for (i = 0; i < 4; ++i) {\n\
          \x20           if (kws_predict(v, xs[i], y, arena) != KWS_OK) return 3;\n\
          \x20           for (j = 0; j < KWS_OUTPUT_SIZE; ++j) printf(\"%.9g \", y[j]);\n\
          \x20           printf(\"\\n\");\n\
          \x20       }\n\
          \x20   }\n\
          \x20   printf(\"read %lu\\n\", (unsigned long)kws_bytes_read());\n\
          \x20   printf(\"not_resident %d\\n\", kws_predict(0, xs[0], y, arena));\n\
          \x20   kws_init(&s); before = kws_bytes_read();\n\
          \x20   printf(\"step\");\n\
          \x20   for (i = 0; i < 5; ++i) {\n\
          \x20       r = kws_step(&s, ram[i], cpu[i], read_file, argv[1]);\n\
          \x20       printf(\" %d:%lu\", r, (unsigned long)(kws_bytes_read() - before));\n\
          \x20   }\n\
          \x20   printf(\"\\n\");\n    return 0;\n}\n";
    m
}

#[test]
fn loader_artifact_loads_each_variant_in_turn_and_refuses_bad_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = fixture();
    let vars = variants(&f);
    let l = write_c_ladder_loader(&vars, &fit_dispatch(), d, "kws", SlotPlace::Ram).unwrap();
    // ds_cnn payload: 320 + 72 + 96 + 60 int8 weights (all multiples of 4: no padding) and
    // 4 B bias + 4 B scale per output channel (33 channels); 20 B header.
    let payload = (320 + 72 + 96 + 60 + 8 * 33) as u64;
    assert_eq!(l.files.flash_bytes, vec![payload; 3]);
    assert_eq!(l.blob_bytes, vec![payload + BLOB_HEADER_BYTES; 3]);
    assert_eq!(l.slot_bytes, payload);
    // Tables: 13 tensors × 24 B + 12 layers × 108 B (ds_cnn has no concat).
    assert_eq!(
        l.table_bytes[0],
        24 * (f.nets[0].layers.len() as u64 + 1) + 108 * f.nets[0].layers.len() as u64
    );
    let blob: Vec<Vec<u8>> = l.blobs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for (k, b) in blob.iter().enumerate() {
        assert_eq!(&b[..4], b"WLDR");
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        assert_eq!((word(4), word(8), word(12)), (1, k as u32, payload as u32));
        assert_eq!(word(16), crc32fast::hash(&b[20..]));
        assert_eq!(word(16), l.checksums[k]);
        // The first weights are the first conv's int8 weights.
        assert_eq!(b.len() as u64, l.blob_bytes[k]);
    }
    assert_eq!(
        crc32fast::hash(b"123456789"),
        0xcbf4_3926,
        "CRC-32 (IEEE) check value"
    );
    // No parameter arrays in the variant sources: the tables point into the slot.
    let v0 = std::fs::read_to_string(&l.files.variant_files[0].1).unwrap();
    assert!(!v0.contains("static const int8_t kws_v0_w"), "{v0}");
    assert!(v0.contains("(const int8_t *)(kws_slot + 0)"));
    let header = std::fs::read_to_string(&l.files.header).unwrap();
    assert!(header.contains(&format!("#define KWS_SLOT_BYTES {payload} ")));

    let xs: Vec<Vec<f32>> = (0..4).map(|s| common::input(&f.nets[0], 900 + s)).collect();
    std::fs::write(d.join("main.c"), loader_main(&xs)).unwrap();
    let mut sources = vec![l.files.source.as_path()];
    sources.extend(l.files.variant_files.iter().map(|(_, c)| c.as_path()));
    let exe = compile(d, &sources);
    let run = |blobs: &std::path::Path| {
        let r = Command::new(&exe).arg(blobs).output().unwrap();
        assert!(r.status.success(), "{r:?}");
        String::from_utf8(r.stdout).unwrap()
    };
    // Good blobs: every variant loads and matches the reference.
    let text = run(d);
    let lines: Vec<&str> = text.lines().collect();
    let loads: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("load"))
        .collect();
    assert_eq!(loads, ["load 0 0 0", "load 1 0 1", "load 2 0 2"]);
    let outs: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with(char::is_alphabetic))
        .collect();
    assert_eq!(outs.len(), 12);
    check_predictions(&f, &xs, &outs);
    let blob_b = payload + BLOB_HEADER_BYTES;
    assert!(text.contains(&format!("read {}\n", 3 * blob_b)), "{text}");
    // Variant 2 is resident, so predict(0) is refused.
    assert!(text.contains("not_resident -6\n"), "{text}");
    // step: C, B, B, B, A (the hand-computed trace): C is resident (no read), then B and A
    // are loaded once each.
    let step = lines.iter().find(|l| l.starts_with("step")).unwrap();
    assert_eq!(
        *step,
        format!("step 2:0 1:{blob_b} 1:{blob_b} 1:{blob_b} 0:{}", 2 * blob_b)
    );

    // Bad blobs of variant 1 in their own folders: each is refused, 0 and 2 still load.
    let bad = |tag: &str, bytes: &[u8]| {
        let sub = d.join(tag);
        std::fs::create_dir_all(&sub).unwrap();
        for k in [0, 2] {
            std::fs::copy(&l.blobs[k], sub.join(format!("kws_v{k}.bin"))).unwrap();
        }
        std::fs::write(sub.join("kws_v1.bin"), bytes).unwrap();
        let t = run(&sub);
        t.lines()
            .filter(|l| l.starts_with("load"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let mut flipped = blob[1].clone();
    flipped[20 + 100] ^= 0x10;
    let short = &blob[1][..blob[1].len() - 7];
    let mut relabelled = blob[0].clone(); // variant 0's blob under variant 1's name
    relabelled[8] = 1;
    let mut resized = blob[1].clone();
    resized[12] = resized[12].wrapping_add(4);
    let mut magic = blob[1].clone();
    magic[0] = b'X';
    for (tag, bytes, code) in [
        ("crc", flipped.as_slice(), -5),
        ("short", short, -2),
        ("relabelled", relabelled.as_slice(), -5),
        ("resized", resized.as_slice(), -4),
        ("magic", magic.as_slice(), -3),
        ("wrong_index", blob[0].as_slice(), -3),
    ] {
        assert_eq!(
            bad(tag, bytes),
            [
                "load 0 0 0".to_string(),
                format!("load 1 {code} -1"),
                "load 2 0 2".into()
            ],
            "{tag}"
        );
    }
}

#[test]
fn loader_rejects_mismatched_variants_like_the_together_mode() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let mut d = fit_dispatch();
    d.order = vec![2, 1, 5];
    let e = write_c_ladder_loader(&variants(&f), &d, dir.path(), "kws", SlotPlace::Flash)
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("does not match the 3 variants"),
        "{e}"
    );
}

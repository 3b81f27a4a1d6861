//! Compiles the C export of every test network (`common::all`: CNNs, TCNs, MobileNet and
//! ShuffleNet blocks, pooling) with the system C compiler, runs it on a fixed input and
//! compares with the Rust fake-quant reference (a few int8 steps, same argmax).

#[path = "common/c_run.rs"]
mod c_run;
mod common;

use c_run::run_c;
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
        let got = run_c(d, &name, &x);
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

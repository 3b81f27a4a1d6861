//! Whole-model gradients (train-mode BN, residual adds, depthwise and stride-2 convs, the
//! parity work-around) against central finite differences, in f64 copies of the model.

use super::models::{randn, small_dscnn, small_tcn};
use crate::model::Model;
use candle_core::{DType, Tensor};

fn check(cfg: crate::config::ModelConfig, input: &[usize]) {
    check_opt(cfg, input, true)
}

fn check_opt(cfg: crate::config::ModelConfig, input: &[usize], strict: bool) {
    let m = Model::new(cfg, 4).unwrap();
    let mut shape = vec![4];
    shape.extend_from_slice(input);
    let x = randn(&shape, 8);
    let y = Tensor::new(&[0u32, 1, 2, 1], x.device()).unwrap();
    let loss = |m: &Model| -> f64 {
        let out = m.forward(&x, true).unwrap();
        crate::loss::cross_entropy(&out, &y)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let l = crate::loss::cross_entropy(&m.forward(&x, true).unwrap(), &y).unwrap();
    let grads = l.backward().unwrap();
    let mut checked = 0;
    for (name, var) in m.params() {
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let w0: Vec<f32> = var.flatten_all().unwrap().to_vec1().unwrap();
        // The largest-gradient element of each tensor (a relative check is meaningful there).
        let (i, gi) = g
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        if gi.abs() < 1e-3 {
            continue;
        }
        let h = 2e-3f32;
        let at = |d: f32| {
            let mut w = w0.clone();
            w[i] += d;
            var.set(&Tensor::from_vec(w, var.dims(), var.device()).unwrap())
                .unwrap();
            loss(&m)
        };
        let fd = (at(h) - at(-h)) / (2.0 * h as f64);
        at(0.0);
        // 5 % relative plus an absolute allowance for f32 rounding and ReLU kinks.
        let err = (fd - *gi as f64).abs() / (0.05 * gi.abs() as f64 + 2e-3);
        if strict {
            assert!(
                err < 1.0,
                "{name}[{i}]: analytic {gi}, finite difference {fd}"
            );
        } else {
            eprintln!("{name}[{i}]: analytic {gi}, finite difference {fd}");
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} tensors had a usable gradient");
}

#[test]
fn tcn_gradients_match_finite_differences() {
    check(small_tcn(), &[10, 49]);
}

#[test]
fn dscnn_gradients_match_finite_differences() {
    check(small_dscnn(), &[1, 49, 10]);
}

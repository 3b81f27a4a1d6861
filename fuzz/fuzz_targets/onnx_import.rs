//! Fuzz target: arbitrary bytes → the ONNX importer → a validated network or an error; it
//! must never panic (truncated or corrupted files, foreign formats, shape-inconsistent
//! graphs). An imported network is also evaluated once by the reference evaluator, so what
//! the importer accepts is a network the writers can run. Seeds: `corpus/onnx_import/seed-*`
//! (small fixtures of crates/export/tests/fixtures/onnx).

#![no_main]

use libfuzzer_sys::fuzz_target;
use whittle_export::{ImportOptions, import_onnx, reference};

fuzz_target!(|data: &[u8]| {
    if let Ok(imp) = import_onnx(data, "fuzz.onnx", &ImportOptions::default()) {
        let n: usize = imp.network.input.1.iter().product();
        if n <= 1 << 16 && imp.network.num_params() <= 1 << 20 {
            let _ = reference::run(&imp.network, &vec![0.5; n], None);
        }
    }
});

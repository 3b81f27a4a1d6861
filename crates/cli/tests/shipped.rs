//! What the report measures is what ships (issue 22): a TCN and a DS-CNN are trained,
//! quantized (fp32, int8) and exported; the export stage runs the exported ONNX float file, the
//! ONNX int8 QDQ file (both in tract) and the C int8 source (compiled with `cc`) on the test
//! split. The int8 network the export holds is the quantize stage's: its in-process accuracy
//! is the report's int8 number exactly, and the shipped files agree with it item by item up
//! to a handful of ties — at most 2 % of the test items for the int8 files (a logit pair that
//! rounds to the same int8 code, or an accumulation order that moves a value across a rounding
//! boundary in a runtime's integer kernels), none for the float file. The packed-weight C
//! export of the `w4` network (float activations, weights unpacked in C) is the quantize
//! stage's `w4` network: no prediction differs.

mod common;
use common::*;
use serde_json::Value;

const EXP: &str = r#"
[experiment]
name = "shipped"
seed = 11

[stages.data]
kind = "fetch"
dataset = { kind = "synthetic_kws", train_per_class = 80, val_per_class = 4, test_per_class = 20 }

[stages.tcn]
kind = "train"
inputs = ["data"]
model = { arch = "tcn", channels = 16, dilations = [1, 2, 4], padding = "causal" }
epochs = 12
lr = 5e-3
allow_divergence = true

[stages.dscnn]
kind = "train"
inputs = ["data"]
model = { arch = "ds_cnn", channels = 16 }
epochs = 12
lr = 5e-3
allow_divergence = true

[stages.quant]
kind = "quantize"
inputs = ["tcn", "dscnn", "data"]
formats = ["fp32", "int8", "w4"]

[stages.ship]
kind = "export"
inputs = ["tcn", "dscnn", "data"]
weight_formats = ["w4"]
"#;

fn metrics_of(cache: &std::path::Path, node: &str) -> Value {
    for k in entries(cache) {
        let m: Value = serde_json::from_slice(
            &std::fs::read(cache.join("entries").join(k).join("manifest.json")).unwrap(),
        )
        .unwrap();
        if m["node"] == node {
            return m["metrics"].clone();
        }
    }
    panic!("no cache entry for {node}");
}

#[test]
fn exported_files_score_what_the_report_says() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("e.toml"), EXP).unwrap();
    let cache = d.path().join("cache");
    let o = whittle(d.path(), &cache, &["run", "e.toml"]);
    assert_eq!(
        summary(&o),
        "summary: ran=5 cached=0 resumed=0 failed=0",
        "{:?}",
        text(&o)
    );
    let quant = metrics_of(&cache, "quant");
    let ship = metrics_of(&cache, "ship");
    let has_cc = std::process::Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    for net in ["tcn", "dscnn"] {
        let row = |fmt: &str| -> f64 {
            quant["models"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["parent"] == net && r["format"] == fmt)
                .unwrap_or_else(|| panic!("{net} {fmt}: {quant}"))["test_accuracy"]
                .as_f64()
                .unwrap()
        };
        let e = ship["exports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["parent"] == net)
            .unwrap();
        assert_eq!(e["shipped"]["metric"], "accuracy");
        let file = |a: &str| -> &Value {
            e["shipped"]["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["artifact"] == a)
                .unwrap_or_else(|| panic!("{net}: no {a} in {e}"))
        };
        let items = 12 * 20;
        // trained well above chance (1/12), so agreeing predictions say something
        assert!(row("fp32") > 0.3 && row("int8") > 0.3, "{net}: {quant}");
        // the float file is the fp32 network
        let f = file("onnx");
        assert_eq!(f["in_process"].as_f64().unwrap(), row("fp32"), "{net}: {f}");
        assert_eq!(f["items"], items);
        assert_eq!(f["differ"], 0, "{net}: the float ONNX file disagrees: {f}");
        assert_eq!(f["value"].as_f64().unwrap(), row("fp32"), "{net}: {f}");
        // the int8 files hold the report's int8 network
        let handful = items / 50;
        let mut int8 = vec![file("onnx_int8_qdq")];
        if has_cc {
            int8.push(file("c_int8"));
        } else {
            assert!(file("c_int8")["skipped"].is_string());
        }
        for f in int8 {
            assert_eq!(
                f["in_process"].as_f64().unwrap(),
                row("int8"),
                "{net}: the export's int8 network is not the quantize stage's: {f}"
            );
            let differ = f["differ"].as_u64().unwrap() as usize;
            assert!(differ <= handful, "{net}: {differ} predictions differ: {f}");
            let gap = (f["value"].as_f64().unwrap() - row("int8")).abs();
            assert!(
                gap <= differ as f64 / items as f64 + 1e-12,
                "{net}: accuracy gap {gap} with {differ} differing items: {f}"
            );
        }
        if has_cc {
            let f = e["shipped"]["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["artifact"] == "c_packed" && f["format"] == "w4")
                .unwrap_or_else(|| panic!("{net}: no packed w4 C file in {e}"));
            assert_eq!(f["in_process"].as_f64().unwrap(), row("w4"), "{net}: {f}");
            assert_eq!(f["differ"], 0, "{net}: the packed w4 C file disagrees: {f}");
            assert_eq!(f["value"].as_f64().unwrap(), row("w4"), "{net}: {f}");
        }
    }
    // the report shows the shipped files beside the quantize stage's numbers
    let md = std::fs::read_to_string(d.path().join("reports/shipped.md")).unwrap();
    assert!(md.contains("## Shipped files"), "{md}");
}

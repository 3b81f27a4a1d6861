//! Training-time augmentation through the `train` stage: a run with `augment` is bit-identical
//! to itself from an empty cache (every draw is seeded), differs from the run without it, and
//! leaving `augment` out keeps the key a file without the key had.

mod common;
use common::*;

fn experiment(augment: &str) -> String {
    format!(
        r#"
[experiment]
name = "aug"
seed = 3

[stages.data]
kind = "fetch"
dataset = {{ kind = "synthetic_kws", train_per_class = 3, val_per_class = 1, test_per_class = 1 }}

[stages.kws]
kind = "train"
inputs = ["data"]
model = {{ arch = "ds_cnn", channels = 8 }}
epochs = 2
batch_size = 16
allow_divergence = true
{augment}

[stages.img_data]
kind = "fetch"
dataset = {{ kind = "synthetic_images", train_per_class = 3, val_per_class = 1, test_per_class = 1 }}

[stages.img]
kind = "train"
inputs = ["img_data"]
model = {{ arch = "resnet8", width = 0.25 }}
epochs = 1
allow_divergence = true   # one epoch on 30 images stays at chance
batch_size = 16
"#
    )
}

fn key_of(dir: &std::path::Path, cache: &std::path::Path, node: &str) -> String {
    status_field(dir, cache, "exp.toml", node, "key")
}

#[test]
fn augmented_training_is_seeded_and_keyed() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("exp.toml");
    std::fs::write(&file, experiment("")).unwrap();
    let plain = key_of(d.path(), &d.path().join("c0"), "kws");
    std::fs::write(&file, experiment("augment = {}")).unwrap();
    assert_eq!(
        key_of(d.path(), &d.path().join("c0"), "kws"),
        plain,
        "augment = {{}} is off"
    );

    std::fs::write(
        &file,
        experiment("augment = { time_shift = 3, noise = 0.05 }"),
    )
    .unwrap();
    let aug = key_of(d.path(), &d.path().join("c0"), "kws");
    assert_ne!(aug, plain);
    let mut outs = Vec::new();
    for c in ["c1", "c2"] {
        let cache = d.path().join(c);
        let o = whittle(
            d.path(),
            &cache,
            &[
                "run",
                "exp.toml",
                "--set",
                "stages.img.augment={ crop_pad = 2, hflip = true }",
            ],
        );
        assert!(o.status.success(), "{:?}", text(&o));
        outs.push(tree(&cache.join("entries").join(&aug).join("out")));
    }
    assert_eq!(outs[0], outs[1], "same file, same seed: same bytes");
    std::fs::write(&file, experiment("")).unwrap();
    let cache = d.path().join("c3");
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let without = tree(&cache.join("entries").join(&plain).join("out"));
    assert_ne!(without, outs[0], "augmentation changes the trained weights");
}

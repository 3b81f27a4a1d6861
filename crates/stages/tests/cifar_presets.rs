//! `002`'s CIFAR presets as experiment-file models (`wrn`, `mnasnet`, `shufflenet_v1`,
//! `shufflenet_v2`, `mcunet`, `mobilenet_v1` with `layout = "cifar"`): counts through the
//! short form, errors naming the key, and the serialisation (so the cache keys) of the
//! existing presets left as it was.

use whittle_stages::model_spec::ModelSpec;

fn spec(text: &str) -> ModelSpec {
    toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn params(text: &str) -> u64 {
    let s = spec(text);
    s.validate().unwrap_or_else(|e| panic!("{text}: {e:#}"));
    s.config(&[3, 32, 32], 10)
        .unwrap()
        .build()
        .unwrap()
        .params()
}

#[test]
fn presets_from_toml_count_like_the_nn_hand_counts() {
    // The hand counts are in crates/nn/src/tests/cifar_archs.rs.
    assert_eq!(params("arch = \"wrn\"\ndepth = 16\nwiden = 1.0"), 175_066);
    assert_eq!(params("arch = \"wrn\""), 2_243_546); // WRN-40-2
    assert_eq!(params("arch = \"mnasnet\""), 117_738 - 464 + 1_472 + 9_216);
    assert_eq!(
        params("arch = \"shufflenet_v2\"\nwidth = 8\nblocks = 6"),
        3_906
    );
    assert_eq!(
        params("arch = \"shufflenet_v1\"\nwidth = 24\nblocks = 6\ngroups = 2"),
        6_520
    );
    assert_eq!(
        params("arch = \"mobilenet_v1\"\nlayout = \"cifar\"\nwidth = 8\nblocks = 3"),
        2_114
    );
    assert_eq!(
        params("arch = \"mobilenet_v1\"\nlayout = \"cifar\"\nwidth = 8\nblocks = 3\nse = 2"),
        2_190
    );
    // mcunet: stem 3·16·9 + 32 = 464; block (expansion 1, 16 → 16): dw 144 + 32, pr 256 + 32
    // = 464; block (expansion 2, 5×5, stride 2, 16 → 24): ex 512 + 64, dw 32·25 + 64, pr 768
    // + 48 = 2,256; fc 24·10 + 10 = 250.
    assert_eq!(
        params(
            "arch = \"mcunet\"\nblocks = [{ expand = 1, channels = 16 }, { expand = 2, kernel = 5, stride = 2, channels = 24 }]"
        ),
        464 + 464 + 2_256 + 250
    );
    for (text, arch) in [
        ("arch = \"wrn\"", "wrn"),
        ("arch = \"mnasnet\"", "mnasnet"),
        ("arch = \"shufflenet_v1\"", "shufflenet_v1"),
        ("arch = \"shufflenet_v2\"", "shufflenet_v2"),
        ("arch = \"mcunet\"\nblocks = []", "mcunet"),
    ] {
        assert_eq!(spec(text).arch(), arch);
    }
}

#[test]
fn bad_preset_keys_are_named() {
    for (text, key) in [
        ("arch = \"wrn\"\ndepth = 15", "`depth`"),
        ("arch = \"wrn\"\nwiden = 0.0", "`widen`"),
        ("arch = \"mnasnet\"\nblocks = 8", "`blocks`"),
        ("arch = \"shufflenet_v2\"\nwidth = 7", "`width`"),
        ("arch = \"shufflenet_v1\"\nwidth = 20", "`width`"),
        ("arch = \"shufflenet_v1\"\ngroups = 0", "`groups`"),
        ("arch = \"mcunet\"\nblocks = []", "at least one block"),
        (
            "arch = \"mcunet\"\nblocks = [{ expand = 1, channels = 8, kernel = 4 }]",
            "`kernel`",
        ),
        ("arch = \"mobilenet_v1\"\nwidth = 8", "`width`"),
        (
            "arch = \"mobilenet_v1\"\nlayout = \"cifar\"\nalpha = 0.5",
            "`alpha`",
        ),
        (
            "arch = \"mobilenet_v1\"\nlayout = \"cifar\"\nblocks = 4",
            "`blocks`",
        ),
    ] {
        let e = format!("{:#}", spec(text).validate().unwrap_err());
        assert!(e.contains(key), "{text}: {e}");
    }
    let e = toml::from_str::<ModelSpec>("arch = \"wrn\"\ndepht = 16")
        .unwrap_err()
        .to_string();
    assert!(e.contains("depht"), "{e}");
}

/// Resolved parameters (and so node keys) of the presets that existed before are unchanged.
#[test]
fn existing_presets_serialise_as_before() {
    for (text, json) in [
        (
            "arch = \"mobilenet_v1\"",
            r#"{"arch":"mobilenet_v1","alpha":0.25}"#,
        ),
        (
            "arch = \"mobilenet_v1\"\nalpha = 0.5",
            r#"{"arch":"mobilenet_v1","alpha":0.5}"#,
        ),
        (
            "arch = \"mobilenet_v2\"",
            r#"{"arch":"mobilenet_v2","width":16,"blocks":9,"expand":4,"se":false,"dropout":0.2}"#,
        ),
        ("arch = \"resnet8\"", r#"{"arch":"resnet8","width":1.0}"#),
        (
            "arch = \"ds_cnn\"",
            r#"{"arch":"ds_cnn","channels":64,"blocks":4}"#,
        ),
    ] {
        assert_eq!(serde_json::to_string(&spec(text)).unwrap(), json, "{text}");
    }
    // A full ImageNet-layout MobileNetV1 configuration has no `se` key either.
    let c = spec("arch = \"mobilenet_v1\"")
        .config(&[3, 96, 96], 2)
        .unwrap();
    assert!(!serde_json::to_string(&c).unwrap().contains("\"se\""));
}

//! `allow_divergence` and node keys: absent and an explicit `false` resolve to the same
//! parameters (so existing experiments keep their keys); `true` is part of the key (it decides
//! whether a diverged result exists at all).

use whittle_engine::StageKind;

fn resolved(kind: &dyn StageKind, toml_text: &str) -> serde_json::Value {
    let t: toml::Table = toml::from_str(toml_text).unwrap();
    kind.resolve(&t).unwrap()
}

#[test]
fn absent_and_false_resolve_alike_and_true_differs() {
    let kinds: [(&dyn StageKind, &str); 4] = [
        (
            &whittle_stages::train::Train,
            "model = { arch = \"tcn\", channels = 4 }\n",
        ),
        (&whittle_stages::finetune::Finetune, ""),
        (
            &whittle_stages::search::Search,
            "method = \"pit\"\nlambda = 1e-6\n",
        ),
        (
            &whittle_stages::distill::Distill,
            "student = { arch = \"tcn\", channels = 4 }\n",
        ),
    ];
    for (kind, base) in kinds {
        let absent = resolved(kind, base);
        let off = resolved(kind, &format!("{base}allow_divergence = false\n"));
        let on = resolved(kind, &format!("{base}allow_divergence = true\n"));
        assert_eq!(absent, off, "{}", kind.name());
        assert!(
            !absent.to_string().contains("allow_divergence"),
            "{}: {absent}",
            kind.name()
        );
        assert_ne!(absent, on, "{}", kind.name());
    }
}

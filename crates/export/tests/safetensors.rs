//! Round trip of networks through safetensors + JSON architecture, and clear errors on
//! damaged files.

mod common;

use whittle_export::{read_safetensors, reference, write_safetensors};

#[test]
fn round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    for net in common::all(3) {
        let (st, js) = write_safetensors(&net, dir.path(), &net.name).unwrap();
        assert!(st.exists() && js.exists());
        let back = read_safetensors(dir.path(), &net.name).unwrap();
        assert_eq!(back, net);
        let x = common::input(&net, 9);
        assert_eq!(
            reference::run(&back, &x, None).unwrap(),
            reference::run(&net, &x, None).unwrap()
        );
    }
}

#[test]
fn damaged_files_give_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let net = common::tcn(1);
    let (st, js) = write_safetensors(&net, dir.path(), "n").unwrap();
    let json = std::fs::read_to_string(&js).unwrap();

    // A weight key the safetensors file does not have.
    std::fs::write(&js, json.replace("layers.0.weight", "layers.0.nope")).unwrap();
    let e = format!("{:#}", read_safetensors(dir.path(), "n").unwrap_err());
    assert!(e.contains("`layers.0.nope` missing"), "{e}");

    // An inconsistent architecture (wrong groups).
    std::fs::write(&js, json.replacen("\"groups\": 1", "\"groups\": 2", 1)).unwrap();
    let e = format!("{:#}", read_safetensors(dir.path(), "n").unwrap_err());
    assert!(
        e.contains("architecture in") && e.contains("groups 2"),
        "{e}"
    );

    // Truncated weights.
    std::fs::write(&js, &json).unwrap();
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = format!("{:#}", read_safetensors(dir.path(), "n").unwrap_err());
    assert!(e.contains("n.safetensors"), "{e}");
}

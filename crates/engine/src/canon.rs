//! Canonical JSON encoding used for node keys: object keys sorted, no whitespace, numbers in
//! shortest round-trip form, so that equal values always hash equally.

use serde_json::Value;

/// Encode `v` canonically (sorted keys, compact, shortest round-trip floats).
pub fn canonical_json(v: &Value) -> String {
    let mut s = String::new();
    write(v, &mut s);
    s
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            // serde_json writes integers in decimal and floats with ryu (shortest round-trip).
            out.push_str(&v.to_string())
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write(&m[k.as_str()], out);
            }
            out.push('}');
        }
    }
}

/// Readable, stable text for a TOML value in node names and environment variables:
/// `1e-5`, `0.25`, `64`, `true`, `tcn` (strings unquoted when they are plain words).
pub fn display_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.+()".contains(c));
            if plain { s.clone() } else { format!("{s:?}") }
        }
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => display_float(*f),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(display_value).collect();
            format!("[{}]", parts.join(","))
        }
        toml::Value::Table(t) => {
            let parts: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{k}={}", display_value(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
    }
}

/// Shortest round-trip float text, in exponent form for very small or large magnitudes.
pub fn display_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = f.abs();
    if a == 0.0 || (1e-3..1e6).contains(&a) {
        let s = format!("{f}");
        // keep a visible float marker so 1.0 is not mistaken for the integer 1
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        format!("{f:e}")
    }
}

/// Convert a TOML value to JSON (datetimes become strings, non-finite floats become strings).
pub fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(display_float(*f))),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"y": [1, 2.5], "x": "s"}});
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2.5]},"b":1}"#);
    }

    #[test]
    fn floats_are_shortest_round_trip() {
        assert_eq!(canonical_json(&json!(0.1)), "0.1");
        assert_eq!(canonical_json(&json!(1e-5)), "0.00001");
        assert_eq!(canonical_json(&json!(1.5e300)), "1.5e+300");
        assert_eq!(canonical_json(&json!(1.0)), "1.0");
    }

    #[test]
    fn readable_values() {
        assert_eq!(display_float(1e-5), "1e-5");
        assert_eq!(display_float(2.5e-6), "2.5e-6");
        assert_eq!(display_float(0.25), "0.25");
        assert_eq!(display_float(3.0), "3.0");
        assert_eq!(display_float(1e7), "1e7");
        assert_eq!(display_value(&toml::Value::String("tcn".into())), "tcn");
        assert_eq!(display_value(&toml::Value::String("a b".into())), "\"a b\"");
        assert_eq!(display_value(&toml::Value::Integer(64)), "64");
    }
}

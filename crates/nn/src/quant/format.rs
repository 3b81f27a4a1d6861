//! The precision formats an experiment names (`fp32`, `fp16`, `bf16`, `float(w,t)`, `int8`,
//! `int4`, k-bit weight-only `wN`), parsed from their TOML strings, with bits per stored weight.

use super::float::FloatFormat;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Weights and activations rounded to a reduced float (fp32 is T(8,23)).
    Float(FloatFormat),
    /// int8 post-training: per-channel symmetric weights, per-tensor affine activations.
    Int8,
    /// k-bit weight-only symmetric per-channel quantization; activations stay fp32.
    WeightOnly(u32),
}

impl Format {
    /// Parses `fp32`, `fp16`, `bf16`, `float(w,t)`, `int8`, `int4` (= weight-only 4 bit), `w<k>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "fp32" | "float32" => return Ok(Format::Float(FloatFormat::FP32)),
            "fp16" | "float16" | "half" => return Ok(Format::Float(FloatFormat::FP16)),
            "bf16" | "bfloat16" => return Ok(Format::Float(FloatFormat::BF16)),
            "int8" => return Ok(Format::Int8),
            "int4" => return Ok(Format::WeightOnly(4)),
            _ => {}
        }
        if let Some(inner) = t.strip_prefix("float(").and_then(|r| r.strip_suffix(')')) {
            let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
            if let [w, m] = parts.as_slice() {
                let w: u32 = w
                    .parse()
                    .map_err(|_| format!("`{s}`: exponent bits `{w}` is not a number"))?;
                let m: u32 = m
                    .parse()
                    .map_err(|_| format!("`{s}`: mantissa bits `{m}` is not a number"))?;
                return FloatFormat::new(w, m).map(Format::Float);
            }
            return Err(format!("`{s}`: expected float(w,t) with two numbers"));
        }
        if let Some(k) = t.strip_prefix('w').and_then(|k| k.parse::<u32>().ok())
            && (2..=8).contains(&k)
        {
            return Ok(Format::WeightOnly(k));
        }
        Err(format!(
            "unknown precision format `{s}`: expected fp32, fp16, bf16, float(w,t), int8, int4 or w<k> (k = 2..8)"
        ))
    }

    /// Canonical name (stable: used in node names and reports).
    pub fn name(&self) -> String {
        match self {
            Format::Float(f) if *f == FloatFormat::FP32 => "fp32".into(),
            Format::Float(f) if *f == FloatFormat::FP16 => "fp16".into(),
            Format::Float(f) if *f == FloatFormat::BF16 => "bf16".into(),
            Format::Float(f) => format!("float({},{})", f.exp_bits, f.man_bits),
            Format::Int8 => "int8".into(),
            Format::WeightOnly(k) => format!("w{k}"),
        }
    }

    /// Bits per stored weight.
    pub fn weight_bits(&self) -> u32 {
        match self {
            Format::Float(f) => f.bits(),
            Format::Int8 => 8,
            Format::WeightOnly(k) => *k,
        }
    }

    /// Bits per activation passed between layers.
    pub fn activation_bits(&self) -> u32 {
        match self {
            Format::Float(f) => f.bits(),
            Format::Int8 => 8,
            Format::WeightOnly(_) => 32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_round_trip() {
        for s in ["fp32", "fp16", "bf16", "float(4,3)", "int8", "w4", "w2"] {
            assert_eq!(Format::parse(s).unwrap().name(), s);
        }
        assert_eq!(Format::parse("int4").unwrap(), Format::WeightOnly(4));
        assert_eq!(Format::parse("float(5,10)").unwrap().name(), "fp16");
        assert_eq!(Format::parse("float(4,3)").unwrap().weight_bits(), 8);
        assert!(
            Format::parse("float(9,3)")
                .unwrap_err()
                .contains("exponent bits")
        );
        assert!(
            Format::parse("int3")
                .unwrap_err()
                .contains("unknown precision format")
        );
    }
}

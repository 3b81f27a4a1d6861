//! Micro-controller profiles (spec §7): memory budgets, clock and cycles per MAC per
//! precision, read from the stage's TOML or built in; per network and format: does it fit
//! (weights vs flash, peak activations vs SRAM), estimated latency and energy.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Cycles per multiply-accumulate at each precision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CyclesPerMac {
    pub int8: f64,
    pub fp16: f64,
    pub fp32: f64,
}

/// One micro-controller target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McuProfile {
    pub name: String,
    pub flash_bytes: u64,
    pub sram_bytes: u64,
    pub clock_mhz: f64,
    pub cycles_per_mac: CyclesPerMac,
}

/// Built-in profiles. STM32F746 (Cortex-M7): 1 MB flash, 320 KB SRAM, 216 MHz (`001` Table
/// 1.2). Assumed throughput (our estimate, not measured): int8 1 cycle/MAC (CMSIS-NN SMLAD
/// packs two MACs per cycle, halved for loads and requantization), fp32 2 cycles/MAC
/// (single-precision FPU multiply-accumulate + loads), fp16 like fp32 (no native fp16 math).
pub fn builtin(name: &str) -> Option<McuProfile> {
    match name {
        "stm32f746" => Some(McuProfile {
            name: "stm32f746".into(),
            flash_bytes: 1024 * 1024,
            sram_bytes: 320 * 1024,
            clock_mhz: 216.0,
            cycles_per_mac: CyclesPerMac {
                int8: 1.0,
                fp16: 2.0,
                fp32: 2.0,
            },
        }),
        _ => None,
    }
}

/// Energy per MAC in pJ (`001` Table 1.1, 45 nm: multiply + add) for int8, fp16, fp32.
pub fn pj_per_mac(bits: u32) -> f64 {
    match bits {
        0..=8 => 0.2 + 0.03,
        9..=16 => 1.1 + 0.4,
        _ => 3.7 + 0.9,
    }
}

/// pJ per 32-bit SRAM read (`001` Table 1.1).
pub const PJ_SRAM_READ_32: f64 = 5.0;

/// One network under one format on one profile: sizes, fit, latency, energy.
/// Energy = MACs·(mult + add) + (weight bytes + 2 × peak activation bytes)/4 · SRAM read
/// (every weight read once, activations written and read once; a lower bound).
pub fn estimate(
    p: &McuProfile,
    parent: &str,
    format: &str,
    bits: u32,
    macs: u64,
    weight_bytes: u64,
    peak_act_bytes: u64,
) -> Value {
    let cpm = match bits {
        0..=8 => p.cycles_per_mac.int8,
        9..=16 => p.cycles_per_mac.fp16,
        _ => p.cycles_per_mac.fp32,
    };
    let latency_ms = macs as f64 * cpm / (p.clock_mhz * 1e6) * 1e3;
    let reads = (weight_bytes + 2 * peak_act_bytes) as f64 / 4.0;
    let energy_uj = (macs as f64 * pj_per_mac(bits) + reads * PJ_SRAM_READ_32) * 1e-6;
    json!({
        "device": p.name,
        "parent": parent,
        "format": format,
        "weight_bytes": weight_bytes,
        "peak_activation_bytes": peak_act_bytes,
        "fits_flash": weight_bytes <= p.flash_bytes,
        "fits_sram": peak_act_bytes <= p.sram_bytes,
        "est_latency_ms": latency_ms,
        "est_energy_uj": energy_uj,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stm32_estimate_hand_computed() {
        let p = builtin("stm32f746").unwrap();
        // 2.16 M int8 MACs at 1 cycle / 216 MHz = 10 ms; energy 2.16e6·0.23 pJ + (400 000 +
        // 2·100 000)/4 reads · 5 pJ = 496 800 + 750 000 pJ = 1.2468 µJ.
        let e = estimate(&p, "n", "int8", 8, 2_160_000, 400_000, 100_000);
        assert!((e["est_latency_ms"].as_f64().unwrap() - 10.0).abs() < 1e-9);
        assert!((e["est_energy_uj"].as_f64().unwrap() - 1.2468).abs() < 1e-9);
        assert_eq!(e["fits_flash"], true);
        assert_eq!(e["fits_sram"], true);
        let e = estimate(&p, "n", "fp32", 32, 1, 2_000_000, 400_000);
        assert_eq!(e["fits_flash"], false);
        assert_eq!(e["fits_sram"], false);
        assert!(builtin("esp32").is_none());
    }
}

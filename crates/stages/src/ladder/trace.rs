//! Resource traces a ladder's policy is replayed on: one sample per inference step (time in
//! seconds, free RAM in bytes, CPU budget as the share of the processor the inference gets,
//! 0 < b ≤ 1). Built-in synthetic traces are seeded (same seed, same trace): `square` (high and
//! low resources alternating every half period), `sine` (RAM and CPU as sines a quarter period
//! apart, with noise), `random_walk` (a bounded walk of each resource); their ranges default to
//! the ladder's span of RAM needs (from the cheapest rung's need to 10 % above the
//! largest) and to a CPU budget of 0.2–1. CSV files have the header
//! `time,free_ram_bytes,cpu_budget` and one sample per row (`#` comments and blank lines
//! skipped); a bad row is an error naming the file, line and column.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// SplitMix64: a small seeded stream of uniform numbers in [0, 1).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One resource sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub time: f64,
    pub free_ram_bytes: u64,
    pub cpu_budget: f64,
}

/// One entry of the stage's `traces` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// `square`, `sine`, `random_walk` or `csv`.
    pub kind: String,
    /// Name in the report (default: the kind, or the file's stem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_steps")]
    pub steps: usize,
    #[serde(default = "default_period")]
    pub period: usize,
    /// Free RAM range [low, high] in bytes (default: the ladder's span of RAM needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<[u64; 2]>,
    /// CPU budget range [low, high] (default [0.2, 1]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<[f64; 2]>,
    /// Relative noise of the synthetic traces (fraction of the range).
    #[serde(default = "default_noise")]
    pub noise: f64,
    /// Seconds between steps of a synthetic trace.
    #[serde(default = "default_dt")]
    pub dt: f64,
    /// A CSV file (relative to the experiment file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

fn default_steps() -> usize {
    200
}
fn default_period() -> usize {
    50
}
fn default_noise() -> f64 {
    0.05
}
fn default_dt() -> f64 {
    0.1
}

pub const KINDS: [&str; 4] = ["square", "sine", "random_walk", "csv"];

impl TraceSpec {
    /// Checks the entry alone: (field, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let e = |k: &str, m: String| Err((k.to_string(), m));
        if !KINDS.contains(&self.kind.as_str()) {
            return e(
                "kind",
                format!(
                    "unknown trace kind `{}` (known: {})",
                    self.kind,
                    KINDS.join(", ")
                ),
            );
        }
        if self.kind == "csv" {
            if self.path.is_none() {
                return e("path", "a csv trace needs `path`".into());
            }
            return Ok(());
        }
        if self.path.is_some() {
            return e("path", "only a csv trace reads a file".into());
        }
        if self.steps == 0 || self.period < 2 {
            return e("steps", "steps must be ≥ 1 and period ≥ 2".into());
        }
        if let Some([lo, hi]) = self.ram
            && lo > hi
        {
            return e("ram", format!("low {lo} is above high {hi}"));
        }
        if let Some([lo, hi]) = self.cpu
            && !(lo > 0.0 && lo <= hi && hi <= 1.0)
        {
            return e("cpu", format!("needs 0 < low ≤ high ≤ 1, got [{lo}, {hi}]"));
        }
        if !(0.0..=1.0).contains(&self.noise) || self.dt.is_nan() || self.dt <= 0.0 {
            return e("noise", "noise must be in [0, 1] and dt > 0".into());
        }
        Ok(())
    }

    /// The trace's name in the report.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match &self.path {
            Some(p) => Path::new(p)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.clone()),
            None => self.kind.clone(),
        })
    }

    /// The samples: generated (seeded) or read from the CSV file under `dir`.
    pub fn samples(&self, seed: u64, default_ram: [u64; 2], dir: &Path) -> Result<Vec<Sample>> {
        if self.kind == "csv" {
            let p = dir.join(self.path.as_deref().unwrap_or_default());
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading trace {}", p.display()))?;
            return parse_csv(&text, &p.display().to_string());
        }
        let [rlo, rhi] = self.ram.unwrap_or(default_ram);
        let [clo, chi] = self.cpu.unwrap_or([0.2, 1.0]);
        let mut rng = Mix(seed);
        let mut noise = || (rng.next() * 2.0 - 1.0) * self.noise;
        let per = self.period as f64;
        let (mut wr, mut wc) = (0.5f64, 0.5f64);
        let mut walk = Mix(seed ^ 0x5eed);
        Ok((0..self.steps)
            .map(|t| {
                let (r, c) = match self.kind.as_str() {
                    "square" => {
                        let high = (t % self.period) < self.period / 2;
                        let v = if high { 1.0 } else { 0.0 };
                        (v + noise(), v + noise())
                    }
                    "sine" => {
                        let ph = 2.0 * std::f64::consts::PI * t as f64 / per;
                        (
                            0.5 + 0.5 * ph.sin() + noise(),
                            0.5 + 0.5 * ph.cos() + noise(),
                        )
                    }
                    _ => {
                        let step = 4.0 / per;
                        wr += (walk.next() * 2.0 - 1.0) * step;
                        wc += (walk.next() * 2.0 - 1.0) * step;
                        wr = wr.clamp(0.0, 1.0);
                        wc = wc.clamp(0.0, 1.0);
                        (wr, wc)
                    }
                };
                let (r, c) = (r.clamp(0.0, 1.0), c.clamp(0.0, 1.0));
                Sample {
                    time: t as f64 * self.dt,
                    free_ram_bytes: (rlo as f64 + r * (rhi - rlo) as f64).round() as u64,
                    cpu_budget: clo + c * (chi - clo),
                }
            })
            .collect())
    }
}

/// Parses a `time,free_ram_bytes,cpu_budget` CSV; `what` names the file in errors.
pub fn parse_csv(text: &str, what: &str) -> Result<Vec<Sample>> {
    const HEADER: [&str; 3] = ["time", "free_ram_bytes", "cpu_budget"];
    let mut rows = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((hl, header)) = rows.next() else {
        bail!(
            "{what}: empty trace (expected the header `{}`)",
            HEADER.join(",")
        );
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols != HEADER {
        bail!(
            "{what}:{hl}: header is `{header}`, expected `{}`",
            HEADER.join(",")
        );
    }
    let mut out: Vec<Sample> = Vec::new();
    for (line, l) in rows {
        let f: Vec<&str> = l.split(',').map(str::trim).collect();
        if f.len() != 3 {
            bail!(
                "{what}:{line}: {} fields, expected 3 ({})",
                f.len(),
                HEADER.join(", ")
            );
        }
        let num = |k: usize| -> Result<f64> {
            f[k].parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| {
                    format!(
                        "{what}:{line}: column `{}`: `{}` is not a number",
                        HEADER[k], f[k]
                    )
                })
        };
        let time = num(0)?;
        let ram = f[1].parse::<u64>().with_context(|| {
            format!(
                "{what}:{line}: column `free_ram_bytes`: `{}` is not a whole number of bytes ≥ 0",
                f[1]
            )
        })?;
        let cpu = num(2)?;
        if !(cpu > 0.0 && cpu <= 1.0) {
            bail!(
                "{what}:{line}: column `cpu_budget`: {cpu} is outside (0, 1] (the share of the CPU the inference gets)"
            );
        }
        if let Some(prev) = out.last()
            && time <= prev.time
        {
            bail!(
                "{what}:{line}: column `time`: {time} does not come after {}",
                prev.time
            );
        }
        out.push(Sample {
            time,
            free_ram_bytes: ram,
            cpu_budget: cpu,
        });
    }
    if out.is_empty() {
        bail!("{what}: the trace has a header but no samples");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str) -> TraceSpec {
        TraceSpec {
            kind: kind.into(),
            name: None,
            steps: 100,
            period: 20,
            ram: Some([1000, 2000]),
            cpu: Some([0.5, 1.0]),
            noise: 0.0,
            dt: 0.1,
            path: None,
        }
    }

    #[test]
    fn synthetic_traces_are_seeded_and_in_range() {
        let d = Path::new(".");
        let sq = spec("square").samples(1, [0, 0], d).unwrap();
        assert_eq!(sq.len(), 100);
        assert_eq!((sq[0].free_ram_bytes, sq[0].cpu_budget), (2000, 1.0));
        assert_eq!((sq[10].free_ram_bytes, sq[10].cpu_budget), (1000, 0.5));
        assert!((sq[10].time - 1.0).abs() < 1e-12);
        for k in ["sine", "random_walk"] {
            let mut s = spec(k);
            s.noise = 0.1;
            let a = s.samples(7, [0, 0], d).unwrap();
            assert_eq!(a, s.samples(7, [0, 0], d).unwrap(), "{k}");
            assert_ne!(a, s.samples(8, [0, 0], d).unwrap(), "{k}");
            assert!(a.iter().all(|x| (1000..=2000).contains(&x.free_ram_bytes)
                && (0.5..=1.0).contains(&x.cpu_budget)));
        }
        // Default RAM range: the one given by the ladder.
        let mut s = spec("square");
        s.ram = None;
        assert_eq!(s.samples(1, [10, 20], d).unwrap()[0].free_ram_bytes, 20);
    }

    #[test]
    fn csv_rows_parse_and_bad_rows_are_located() {
        let ok = "# device log\ntime, free_ram_bytes, cpu_budget\n0.0,1000,1\n\n0.5,800,0.25\n";
        let s = parse_csv(ok, "t.csv").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].time, s[1].free_ram_bytes, s[1].cpu_budget),
            (0.5, 800, 0.25)
        );
        let err = |t: &str| parse_csv(t, "t.csv").unwrap_err().to_string();
        let h = "time,free_ram_bytes,cpu_budget\n";
        assert!(err("a,b\n").contains("t.csv:1: header is `a,b`"));
        let e = err(&format!("{h}0,100,1\n1,lots,1\n"));
        assert!(
            e.contains("t.csv:3: column `free_ram_bytes`: `lots`"),
            "{e}"
        );
        let e = err(&format!("{h}0,100,1.5\n"));
        assert!(
            e.contains("t.csv:2: column `cpu_budget`: 1.5 is outside (0, 1]"),
            "{e}"
        );
        let e = err(&format!("{h}0,100\n"));
        assert!(e.contains("t.csv:2: 2 fields, expected 3"), "{e}");
        let e = err(&format!("{h}1,100,1\n1,100,1\n"));
        assert!(
            e.contains("t.csv:3: column `time`: 1 does not come after 1"),
            "{e}"
        );
        let e = err(&format!("{h}x,100,1\n"));
        assert!(
            e.contains("t.csv:2: column `time`: `x` is not a number"),
            "{e}"
        );
        assert!(err(h).contains("no samples"));
        assert!(err("").contains("empty trace"));
        let e = err(&format!("{h}0,-5,1\n"));
        assert!(e.contains("column `free_ram_bytes`: `-5`"), "{e}");
    }
}

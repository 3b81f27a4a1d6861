//! The switching policy of a ladder and its replay on a resource trace. A policy ranks the
//! variants by preference and says when each one is *met* by a resource sample; before each
//! inference it picks the first met variant in preference order, where moving up (to a variant
//! preferred over the current one) needs the condition met with a margin (`hysteresis`) and, with
//! `min_dwell`, at least that many steps since the last switch; staying or moving down needs
//! it met plainly. So a resource oscillating around one threshold causes one switch, not one
//! per step. When nothing is met: the cheapest variant (`fit`) or the last rung (`thresholds`).
//!
//! - `fit`: variants by accuracy (best first); a variant is met when its RAM need (peak
//!   activations, plus weights with `weights_in_ram`) is ≤ free RAM·(1 − m) and, with a
//!   deadline, its latency / cpu_budget ≤ deadline·(1 − m).
//! - `thresholds`: rungs written in the TOML, in preference order, each a variant with
//!   `min_free_ram_bytes` and `min_cpu_budget`; met when free RAM ≥ min·(1 + m) and cpu budget
//!   ≥ min·(1 + m).
//!
//! `cpu_budget` is the share of the processor the inference gets (0 < b ≤ 1): a variant's
//! latency under it is `latency_ms / b`. A deadline miss is a step whose latency under the
//! budget exceeds `deadline_ms`; a memory violation is a step whose variant needs more RAM
//! than is free. Expected accuracy averages each step's variant's measured accuracy;
//! effective accuracy counts a missed or violating step as wrong.

use super::front::Variant;
use super::trace::Sample;
use serde::{Deserialize, Serialize};

/// One rung of a `thresholds` policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// Variant name (as in the ladder's table).
    pub variant: String,
    #[serde(default)]
    pub min_free_ram_bytes: u64,
    #[serde(default)]
    pub min_cpu_budget: f64,
}

/// The `policy` table of a ladder stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// `fit` or `thresholds`.
    #[serde(default = "fit")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<f64>,
    #[serde(default = "tenth")]
    pub hysteresis: f64,
    #[serde(default)]
    pub min_dwell: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<Rung>,
    /// Weights count against free RAM too (off: weights live in flash).
    #[serde(default)]
    pub weights_in_ram: bool,
}

fn fit() -> String {
    "fit".into()
}
fn tenth() -> f64 {
    0.1
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            kind: fit(),
            deadline_ms: None,
            hysteresis: tenth(),
            min_dwell: 0,
            rungs: Vec::new(),
            weights_in_ram: false,
        }
    }
}

impl PolicySpec {
    /// Checks the table alone: (path below `policy`, message).
    pub fn validate(&self) -> Result<(), (Vec<String>, String)> {
        let err = |k: &str, m: String| Err((vec![k.to_string()], m));
        match self.kind.as_str() {
            "fit" if !self.rungs.is_empty() => {
                return err("rungs", "rungs belong to `kind = \"thresholds\"`".into());
            }
            "fit" => {}
            "thresholds" if self.rungs.is_empty() => {
                return err(
                    "rungs",
                    "a thresholds policy needs at least one rung".into(),
                );
            }
            "thresholds" => {
                for (i, r) in self.rungs.iter().enumerate() {
                    if !(r.min_cpu_budget >= 0.0 && r.min_cpu_budget <= 1.0) {
                        return Err((
                            vec!["rungs".into(), i.to_string(), "min_cpu_budget".into()],
                            format!("must be in [0, 1], got {}", r.min_cpu_budget),
                        ));
                    }
                }
            }
            k => {
                return err(
                    "kind",
                    format!("unknown policy kind `{k}` (known: fit, thresholds)"),
                );
            }
        }
        if !(0.0..1.0).contains(&self.hysteresis) {
            return err(
                "hysteresis",
                format!("must be in [0, 1), got {}", self.hysteresis),
            );
        }
        if let Some(d) = self.deadline_ms
            && !(d > 0.0 && d.is_finite())
        {
            return err(
                "deadline_ms",
                format!("must be a positive number of ms, got {d}"),
            );
        }
        Ok(())
    }

    /// RAM a variant needs under this policy.
    pub fn ram_of(&self, v: &Variant) -> u64 {
        v.peak_activation_bytes
            + if self.weights_in_ram {
                v.weight_bytes
            } else {
                0
            }
    }
}

/// The condition of one preference position.
#[derive(Clone, Debug, PartialEq)]
enum Rule {
    Fit { ram: u64, latency_ms: f64 },
    Threshold { min_ram: u64, min_cpu: f64 },
}

/// A policy bound to a ladder: preference order of variant indices and their conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub order: Vec<usize>,
    rules: Vec<Rule>,
    fallback: usize,
    deadline_ms: Option<f64>,
    hysteresis: f64,
    min_dwell: usize,
}

impl Policy {
    /// Binds `spec` to `ladder`; an unknown rung variant is an error naming the known ones.
    pub fn new(spec: &PolicySpec, ladder: &[Variant]) -> Result<Self, String> {
        if ladder.is_empty() {
            return Err("the ladder has no variant".into());
        }
        let (order, rules, fallback) =
            if spec.kind == "thresholds" {
                let mut order = Vec::new();
                let mut rules = Vec::new();
                for (i, r) in spec.rungs.iter().enumerate() {
                    let k = ladder.iter().position(|v| v.name == r.variant).ok_or_else(|| {
                    format!(
                        "policy.rungs.{i}: no variant `{}` in the ladder (its variants: {})",
                        r.variant,
                        ladder.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })?;
                    order.push(k);
                    rules.push(Rule::Threshold {
                        min_ram: r.min_free_ram_bytes,
                        min_cpu: r.min_cpu_budget,
                    });
                }
                let last = order.len() - 1;
                (order, rules, last)
            } else {
                let mut order: Vec<usize> = (0..ladder.len()).collect();
                order.sort_by(|&a, &b| {
                    ladder[b]
                        .accuracy
                        .total_cmp(&ladder[a].accuracy)
                        .then(ladder[a].latency_ms.total_cmp(&ladder[b].latency_ms))
                        .then(a.cmp(&b))
                });
                let rules = order
                    .iter()
                    .map(|&k| Rule::Fit {
                        ram: spec.ram_of(&ladder[k]),
                        latency_ms: ladder[k].latency_ms,
                    })
                    .collect();
                let cheapest = (0..order.len())
                    .min_by(|&a, &b| {
                        let (va, vb) = (&ladder[order[a]], &ladder[order[b]]);
                        spec.ram_of(va)
                            .cmp(&spec.ram_of(vb))
                            .then(va.latency_ms.total_cmp(&vb.latency_ms))
                    })
                    .unwrap_or(0);
                (order, rules, cheapest)
            };
        Ok(Self {
            order,
            rules,
            fallback,
            deadline_ms: spec.deadline_ms,
            hysteresis: spec.hysteresis,
            min_dwell: spec.min_dwell,
        })
    }

    fn met(&self, pos: usize, s: &Sample, margin: f64) -> bool {
        match self.rules[pos] {
            Rule::Fit { ram, latency_ms } => {
                ram as f64 <= s.free_ram_bytes as f64 * (1.0 - margin)
                    && self
                        .deadline_ms
                        .is_none_or(|d| latency_ms / s.cpu_budget <= d * (1.0 - margin))
            }
            Rule::Threshold { min_ram, min_cpu } => {
                s.free_ram_bytes as f64 >= min_ram as f64 * (1.0 + margin)
                    && s.cpu_budget >= min_cpu * (1.0 + margin)
            }
        }
    }

    /// Preference position chosen for sample `s`, given the current position and the steps
    /// since the last switch.
    pub fn choose(&self, current: Option<usize>, since_switch: usize, s: &Sample) -> usize {
        for p in 0..self.order.len() {
            let up = current.is_some_and(|c| p < c);
            if up && since_switch < self.min_dwell {
                continue;
            }
            if self.met(p, s, if up { self.hysteresis } else { 0.0 }) {
                return p;
            }
        }
        self.fallback
    }

    /// The variant index chosen at every step of `trace`.
    pub fn run(&self, trace: &[Sample]) -> Vec<usize> {
        let mut cur: Option<usize> = None;
        let mut since = 0usize;
        let mut out = Vec::with_capacity(trace.len());
        for s in trace {
            let p = self.choose(cur, since, s);
            if cur.is_some_and(|c| c != p) {
                since = 0;
            }
            since += 1;
            cur = Some(p);
            out.push(self.order[p]);
        }
        out
    }
}

impl Policy {
    /// The policy as the C dispatcher runs it ([`whittle_export::c_ladder`]).
    pub fn dispatch(&self) -> whittle_export::c_ladder::Dispatch {
        use whittle_export::c_ladder::Rule as C;
        whittle_export::c_ladder::Dispatch {
            order: self.order.clone(),
            rules: self
                .rules
                .iter()
                .map(|r| match *r {
                    Rule::Fit { ram, latency_ms } => C::Fit { ram, latency_ms },
                    Rule::Threshold { min_ram, min_cpu } => C::Threshold { min_ram, min_cpu },
                })
                .collect(),
            fallback: self.fallback,
            deadline_ms: self.deadline_ms,
            hysteresis: self.hysteresis,
            min_dwell: self.min_dwell,
        }
    }
}

/// What a sequence of variant choices achieves on a trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The fixed variant, or None for the policy.
    pub variant: Option<String>,
    pub steps: usize,
    pub switches: usize,
    pub deadline_misses: usize,
    pub memory_violations: usize,
    pub accuracy: f64,
    pub effective_accuracy: f64,
    /// Steps spent on each ladder variant (ladder order).
    pub steps_per_variant: Vec<usize>,
}

/// Scores `choice` (a ladder index per step) on `trace`.
pub fn outcome(
    spec: &PolicySpec,
    ladder: &[Variant],
    choice: &[usize],
    trace: &[Sample],
    variant: Option<String>,
) -> Outcome {
    let mut o = Outcome {
        variant,
        steps: trace.len(),
        switches: choice.windows(2).filter(|w| w[0] != w[1]).count(),
        deadline_misses: 0,
        memory_violations: 0,
        accuracy: 0.0,
        effective_accuracy: 0.0,
        steps_per_variant: vec![0; ladder.len()],
    };
    for (&k, s) in choice.iter().zip(trace) {
        let v = &ladder[k];
        o.steps_per_variant[k] += 1;
        let miss = spec
            .deadline_ms
            .is_some_and(|d| v.latency_ms / s.cpu_budget > d);
        let violation = spec.ram_of(v) > s.free_ram_bytes;
        o.deadline_misses += miss as usize;
        o.memory_violations += violation as usize;
        o.accuracy += v.accuracy;
        if !miss && !violation {
            o.effective_accuracy += v.accuracy;
        }
    }
    let n = trace.len().max(1) as f64;
    o.accuracy /= n;
    o.effective_accuracy /= n;
    o
}

#[cfg(test)]
mod tests {
    use super::super::front::point;
    use super::*;

    fn s(ram: u64, cpu: f64) -> Sample {
        Sample {
            time: 0.0,
            free_ram_bytes: ram,
            cpu_budget: cpu,
        }
    }

    /// A (0.6, 1 ms, 100 B), B (0.8, 2 ms, 200 B), C (0.9, 4 ms, 400 B), cheapest first.
    fn ladder() -> Vec<Variant> {
        vec![
            point("A", 0.6, 1.0, 1000, 100),
            point("B", 0.8, 2.0, 2000, 200),
            point("C", 0.9, 4.0, 4000, 400),
        ]
    }

    fn spec() -> PolicySpec {
        PolicySpec {
            deadline_ms: Some(5.0),
            ..Default::default()
        }
    }

    #[test]
    fn replay_of_a_hand_computed_five_step_trace() {
        let (l, sp) = (ladder(), spec());
        let p = Policy::new(&sp, &l).unwrap();
        // t0: C fits (400 ≤ 500, 4 ms ≤ 5).  t1: C needs 400 > 300 → down to B.
        // t2: moving up to C needs 400 ≤ 430·0.9 = 387: no, B stays.
        // t3: C at cpu 0.5 takes 8 ms > 4.5; B takes 4 ms ≤ 5: stays.
        // t4: B at cpu 0.3 takes 6.7 ms > 5 → A (3.3 ms).
        let trace = [
            s(500, 1.0),
            s(300, 1.0),
            s(430, 1.0),
            s(1000, 0.5),
            s(1000, 0.3),
        ];
        let c = p.run(&trace);
        assert_eq!(c, [2, 1, 1, 1, 0]);
        let o = outcome(&sp, &l, &c, &trace, None);
        assert_eq!(
            (o.switches, o.deadline_misses, o.memory_violations),
            (2, 0, 0)
        );
        assert!((o.accuracy - 3.9 / 5.0).abs() < 1e-12);
        assert!((o.effective_accuracy - 3.9 / 5.0).abs() < 1e-12);
        assert_eq!(o.steps_per_variant, [1, 3, 1]);
        // Fixed C: t1 violates memory, t3 (8 ms) and t4 (13.3 ms) miss the deadline.
        let o = outcome(&sp, &l, &[2; 5], &trace, Some("C".into()));
        assert_eq!(
            (o.switches, o.deadline_misses, o.memory_violations),
            (0, 2, 1)
        );
        assert!((o.accuracy - 0.9).abs() < 1e-12);
        assert!((o.effective_accuracy - 0.9 * 2.0 / 5.0).abs() < 1e-12);
        // Fixed B misses t4 only; fixed A never fails.
        let o = outcome(&sp, &l, &[1; 5], &trace, None);
        assert_eq!((o.deadline_misses, o.memory_violations), (1, 0));
        assert!((o.effective_accuracy - 0.8 * 4.0 / 5.0).abs() < 1e-12);
        let o = outcome(&sp, &l, &[0; 5], &trace, None);
        assert_eq!((o.deadline_misses, o.memory_violations), (0, 0));
        // Nothing fits (free RAM 50): the cheapest variant, counted as a violation.
        assert_eq!(p.run(&[s(50, 1.0)]), [0]);
    }

    #[test]
    fn hysteresis_does_not_flap_on_an_oscillating_trace() {
        let l = ladder();
        // Free RAM alternates 410 / 390 around C's 400 bytes, 40 steps.
        let trace: Vec<Sample> = (0..40)
            .map(|t| s(if t % 2 == 0 { 410 } else { 390 }, 1.0))
            .collect();
        let with = Policy::new(&spec(), &l).unwrap().run(&trace);
        let o = outcome(&spec(), &l, &with, &trace, None);
        assert_eq!(o.switches, 1, "{with:?}");
        assert_eq!(o.memory_violations, 0);
        assert!(with[1..].iter().all(|&k| k == 1));
        // Without hysteresis it flaps every step.
        let none = PolicySpec {
            hysteresis: 0.0,
            ..spec()
        };
        let without = Policy::new(&none, &l).unwrap().run(&trace);
        assert_eq!(outcome(&none, &l, &without, &trace, None).switches, 39);
        // A minimum dwell bounds the flapping too: an upgrade at most every 5 steps.
        let dwell = PolicySpec {
            min_dwell: 5,
            ..none
        };
        let d = Policy::new(&dwell, &l).unwrap().run(&trace);
        let sw = outcome(&dwell, &l, &d, &trace, None).switches;
        assert!(sw <= 2 * 40 / 5 && sw > 1, "{sw}: {d:?}");
        // After a big rise the policy does move up.
        let up = Policy::new(&spec(), &l)
            .unwrap()
            .run(&[s(390, 1.0), s(1000, 1.0)]);
        assert_eq!(up, [1, 2]);
    }

    #[test]
    fn thresholds_policy_follows_its_rungs() {
        let l = ladder();
        let sp = PolicySpec {
            kind: "thresholds".into(),
            rungs: vec![
                Rung {
                    variant: "C".into(),
                    min_free_ram_bytes: 450,
                    min_cpu_budget: 0.8,
                },
                Rung {
                    variant: "B".into(),
                    min_free_ram_bytes: 250,
                    min_cpu_budget: 0.4,
                },
                Rung {
                    variant: "A".into(),
                    min_free_ram_bytes: 0,
                    min_cpu_budget: 0.0,
                },
            ],
            hysteresis: 0.1,
            ..Default::default()
        };
        sp.validate().unwrap();
        let p = Policy::new(&sp, &l).unwrap();
        // 500/0.9 → C; 300/0.9 → B; 480/0.9 (C needs 495, 0.88) → B; 600/0.3 → A;
        // 600/0.5 (B needs 275 and 0.44) → B.
        let trace = [
            s(500, 0.9),
            s(300, 0.9),
            s(480, 0.9),
            s(600, 0.3),
            s(600, 0.5),
        ];
        assert_eq!(p.run(&trace), [2, 1, 1, 0, 1]);
        let bad = PolicySpec {
            rungs: vec![Rung {
                variant: "Z".into(),
                min_free_ram_bytes: 0,
                min_cpu_budget: 0.0,
            }],
            ..sp.clone()
        };
        let e = Policy::new(&bad, &l).unwrap_err();
        assert!(e.contains("no variant `Z`") && e.contains("A, B, C"), "{e}");
        let e = PolicySpec {
            kind: "greedy".into(),
            ..sp
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.0, ["kind"]);
    }
}

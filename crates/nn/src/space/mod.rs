//! Narrow search spaces around reference models and their sampling laws (`004` §3.1, §4).
//!
//! A space ([`SpaceConfig`]) is a list of integer [`Variable`]s with absolute bounds (a range
//! of channels or block repeats, a list of kernel size options, an expansion ratio), a
//! validity rule, and a builder that turns one value per variable into a network: a
//! [`Graph`] for the analytic costs (no weights are made) and the `model` table a `train`
//! stage reads. The reference model is a point of its space ([`SpaceConfig::reference`]).
//!
//! A sampling [`Law`] is one uniform law per variable between a lower and an upper limit
//! (inside the absolute bounds); [`Law::sample`] draws until the validity rule holds. The
//! genetic design of laws is in [`ga`], spectral clustering of laws in [`cluster`], the
//! analytic costs in [`cost`], the latency fit in [`predict`].

pub mod cluster;
pub mod cost;
pub mod families;
pub mod ga;
pub mod predict;

#[cfg(test)]
mod tests;

pub use cost::{Costs, Metric};
pub use families::{PlainCnnSpace, ResNetSpace, Space, SpaceConfig};

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The values a variable may take: a range of integers or a list of options, ascending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Domain {
    /// Every integer in `[min, max]`.
    Range { min: u32, max: u32 },
    /// These values only (e.g. kernel sizes 1, 3, 5, 7), ascending.
    Options(Vec<u32>),
}

impl Domain {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Domain::Range { min, max } => (max - min + 1) as usize,
            Domain::Options(o) => o.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th value (ascending).
    pub fn value(&self, i: usize) -> u32 {
        match self {
            Domain::Range { min, .. } => min + i as u32,
            Domain::Options(o) => o[i],
        }
    }

    /// Index range `[lo, hi]` of the values within `[a, b]`, if any.
    pub fn index_range(&self, a: u32, b: u32) -> Option<[usize; 2]> {
        let idx: Vec<usize> = (0..self.len())
            .filter(|&i| (a..=b).contains(&self.value(i)))
            .collect();
        Some([*idx.first()?, *idx.last()?])
    }
}

/// One variable of a space: a name (`c1`, `k2`, `n3`, `e`) and its absolute bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Variable {
    pub name: String,
    pub domain: Domain,
    /// What it sets, for messages and reports.
    pub doc: String,
}

/// A sampling law: for each variable of the space (in order) the index limits `[lo, hi]` of
/// its uniform law within the variable's domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Law {
    pub limits: Vec<[usize; 2]>,
}

impl Law {
    /// The widest law: every variable uniform over its whole domain.
    pub fn full(vars: &[Variable]) -> Law {
        Law {
            limits: vars.iter().map(|v| [0, v.domain.len() - 1]).collect(),
        }
    }

    /// A law written as `{ name = [lo, hi], … }` in variable values; variables left out keep
    /// their whole domain. Errors name the variable.
    pub fn from_values(
        vars: &[Variable],
        written: &BTreeMap<String, [u32; 2]>,
    ) -> Result<Law, String> {
        for k in written.keys() {
            if !vars.iter().any(|v| &v.name == k) {
                let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
                return Err(format!(
                    "law: unknown variable `{k}`; this space has: {}",
                    names.join(", ")
                ));
            }
        }
        let mut limits = vec![];
        for v in vars {
            let Some(&[a, b]) = written.get(&v.name) else {
                limits.push([0, v.domain.len() - 1]);
                continue;
            };
            if a > b {
                return Err(format!(
                    "law: `{}` = [{a}, {b}]: the lower limit is above the upper",
                    v.name
                ));
            }
            let r = v.domain.index_range(a, b).ok_or_else(|| {
                format!(
                    "law: `{}` = [{a}, {b}] holds no value of the variable's bounds {}",
                    v.name,
                    describe(&v.domain)
                )
            })?;
            limits.push(r);
        }
        Ok(Law { limits })
    }

    /// The law in variable values, `{ name: [lo, hi] }` (the inverse of [`Law::from_values`]).
    pub fn to_values(&self, vars: &[Variable]) -> BTreeMap<String, [u32; 2]> {
        vars.iter()
            .zip(&self.limits)
            .map(|(v, &[a, b])| (v.name.clone(), [v.domain.value(a), v.domain.value(b)]))
            .collect()
    }

    /// One value per variable, uniform within the limits, not yet checked for validity.
    pub fn draw(&self, vars: &[Variable], rng: &mut impl Rng) -> Vec<u32> {
        vars.iter()
            .zip(&self.limits)
            .map(|(v, &[a, b])| v.domain.value(rng.random_range(a..=b)))
            .collect()
    }

    /// A valid candidate of `space`: draws until the space's validity rule holds, at most
    /// [`MAX_DRAWS`] times (an error then: the law yields almost no valid models).
    pub fn sample(&self, space: &Space, rng: &mut impl Rng) -> Result<Vec<u32>, String> {
        self.sample_counting(space, rng).map(|(x, _)| x)
    }

    /// [`Law::sample`] with the number of draws it took (1 when the first was valid).
    pub fn sample_counting(
        &self,
        space: &Space,
        rng: &mut impl Rng,
    ) -> Result<(Vec<u32>, usize), String> {
        let vars = space.variables();
        for i in 0..MAX_DRAWS {
            let x = self.draw(vars, rng);
            if space.check(&x).is_ok() {
                return Ok((x, i + 1));
            }
        }
        Err(format!(
            "law {:?} drew no valid model of the space in {MAX_DRAWS} tries",
            self.to_values(vars)
        ))
    }
}

/// Draws per sample before a law is given up as yielding no valid models.
pub const MAX_DRAWS: usize = 1000;

fn describe(d: &Domain) -> String {
    match d {
        Domain::Range { min, max } => format!("[{min}, {max}]"),
        Domain::Options(o) => format!("{o:?}"),
    }
}

/// `counts[i]` valid candidates from each law `laws[i]` in turn, drawn from one stream seeded
/// with `seed`: (law index, values) pairs in drawing order.
pub fn sample_many(
    space: &Space,
    laws: &[Law],
    counts: &[usize],
    seed: u64,
) -> Result<Vec<(usize, Vec<u32>)>, String> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(counts.iter().sum());
    for (i, (law, &n)) in laws.iter().zip(counts).enumerate() {
        for _ in 0..n {
            out.push((i, law.sample(space, &mut rng)?));
        }
    }
    Ok(out)
}

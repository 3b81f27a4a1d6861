//! Signs that a training run diverged, checked once per epoch by the training loop (and by
//! any loop with a per-epoch history): a non-finite loss, a mean epoch loss that grew by
//! orders of magnitude over the loss of the untrained network, or a classifier that ends no
//! better than chance while its training loss did not fall. Accuracy at chance alone does not
//! tell a diverged run from one that is only short or starved of data (two epochs on 48
//! clips end at chance with a falling loss); a run whose loss also failed to improve on the
//! untrained network's made things worse, which is what divergence means.

use serde::{Deserialize, Serialize};

/// An epoch's mean training loss above this multiple of the initial loss (the first batch,
/// before any update) counts as diverged. A run that learns never comes near it.
pub const GROWTH: f64 = 1e3;
/// Floor of the initial loss in the growth test, so a network that starts almost perfect
/// (loss ≈ 0) is not flagged for ordinary noise.
pub const GROWTH_FLOOR: f64 = 1e-3;

/// What to do when a run diverges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDivergence {
    /// Fail on a non-finite loss ([`crate::train::TrainError::Diverged`]); report the other
    /// signs in [`crate::TrainResult::diverged`] only (what [`crate::train`] does).
    #[default]
    Report,
    /// Fail on any sign ([`crate::train::TrainError::Divergence`]).
    Fail,
    /// Stop training at a diverged loss, finish (best weights, evaluation) and report it in
    /// [`crate::TrainResult::diverged`].
    Allow,
}

/// One sign of divergence. Epochs are counted from 1 in messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Divergence {
    /// A batch loss was NaN or infinite (`epoch` from 0).
    NonFinite { epoch: u64, batch: usize, loss: f64 },
    /// The mean loss of an epoch (from 0) exceeded [`GROWTH`] × the initial loss.
    Exploded { epoch: u64, loss: f64, initial: f64 },
    /// The final accuracy on `split` is not better than chance (1 / `classes`) and the last
    /// epoch's training loss is not below the initial one.
    Chance {
        accuracy: f64,
        classes: usize,
        split: String,
        samples: usize,
        initial: f64,
        last: f64,
    },
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Divergence::NonFinite { epoch, batch, loss } => write!(
                f,
                "diverged at epoch {}: loss {loss} (batch {})",
                epoch + 1,
                batch + 1
            ),
            Divergence::Exploded {
                epoch,
                loss,
                initial,
            } => write!(
                f,
                "diverged at epoch {}: loss {loss:.3e}, over {GROWTH:.0}× the initial loss {initial:.4}",
                epoch + 1
            ),
            Divergence::Chance {
                accuracy,
                classes,
                split,
                samples,
                initial,
                last,
            } => write!(
                f,
                "ended at chance accuracy {:.1} % ({classes} classes, chance {:.1} %, on {samples} {split} samples) with a training loss that did not fall ({initial:.4} → {last:.4})",
                100.0 * accuracy,
                100.0 / *classes as f64
            ),
        }
    }
}

/// The loss test of one epoch: `loss` (mean training loss of epoch `epoch`, from 0) against
/// `initial` (the first batch loss of the run).
pub fn check_loss(epoch: u64, loss: f64, initial: f64) -> Option<Divergence> {
    let diverged = !loss.is_finite() || loss > GROWTH * initial.max(GROWTH_FLOOR);
    diverged.then_some(Divergence::Exploded {
        epoch,
        loss,
        initial,
    })
}

/// Highest accuracy that still counts as chance for `classes` classes on `samples` samples:
/// 1/classes plus one sample, and at least 1/classes × 1.1. A network that predicts one class
/// for everything scores exactly 1/classes on a balanced split; the margin of one sample
/// absorbs an unbalanced split's rounding (e.g. 25 samples in 12 classes) and a lucky guess,
/// while any network that learned something clears it by many samples.
pub fn chance_ceiling(classes: usize, samples: usize) -> f64 {
    let chance = 1.0 / classes.max(1) as f64;
    let one = 1.0 / samples.max(1) as f64;
    chance + one.max(0.1 * chance)
}

/// The accuracy test at the end of a run (classifiers with ≥ 2 classes only): `accuracy` on
/// `samples` of `split`, `initial` the first batch loss, `last` the last epoch's mean loss.
pub fn check_chance(
    accuracy: f64,
    classes: usize,
    split: &str,
    samples: usize,
    initial: f64,
    last: f64,
) -> Option<Divergence> {
    let at_chance = classes >= 2 && accuracy <= chance_ceiling(classes, samples);
    let no_progress = !(last < initial);
    (at_chance && no_progress).then(|| Divergence::Chance {
        accuracy,
        classes,
        split: split.to_string(),
        samples,
        initial,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_growth_and_chance_thresholds() {
        assert!(check_loss(0, 2.4, 2.48).is_none());
        assert!(check_loss(2, f64::INFINITY, 2.48).is_some());
        assert!(check_loss(2, f64::NAN, 2.48).is_some());
        assert!(check_loss(1, 2_480.0, 2.48).is_none());
        assert!(check_loss(1, 2_481.0, 2.48).is_some());
        // an almost perfect start is compared with the floor: 1e-3 × 1e3 = 1
        assert!(check_loss(1, 0.5, 1e-9).is_none());
        // 12 classes on 240 samples: 1/12 + max(1/240, 1/120) = 0.0917
        assert!((chance_ceiling(12, 240) - (1.0 / 12.0 + 1.0 / 120.0)).abs() < 1e-12);
        // 12 classes on 24 samples: one sample (1/24) above chance still counts as chance
        assert!((chance_ceiling(12, 24) - 3.0 / 24.0).abs() < 1e-12);
        assert!(check_chance(3.0 / 24.0, 12, "validation", 24, 2.5, 2.6).is_some());
        assert!(check_chance(4.0 / 24.0, 12, "validation", 24, 2.5, 2.6).is_none());
        assert!(check_chance(0.5, 1, "validation", 24, 2.5, 2.6).is_none());
        // at chance but still learning (a short run): not diverged
        assert!(check_chance(1.0 / 24.0, 12, "validation", 24, 2.5, 2.4).is_none());
        assert!(check_chance(1.0 / 24.0, 12, "validation", 24, 2.5, f64::NAN).is_some());
        let msg = check_chance(1.0 / 12.0, 12, "validation", 240, 2.5, 2.5)
            .unwrap()
            .to_string();
        assert_eq!(
            msg,
            "ended at chance accuracy 8.3 % (12 classes, chance 8.3 %, on 240 validation samples) with a training loss that did not fall (2.5000 → 2.5000)"
        );
        assert_eq!(
            check_loss(2, f64::INFINITY, 2.5).unwrap().to_string(),
            "diverged at epoch 3: loss inf, over 1000× the initial loss 2.5000"
        );
    }
}

//! PIT (Pruning In Time, spec §3): masked layers with trainable channel (α), receptive-field
//! (β) and dilation (γ) masks, the size/MAC cost regulariser, the search loop with separate
//! optimizers for weights and masks, and export to a physically smaller network.

pub mod export;
pub mod masks;
pub mod model;
pub mod plan;
pub mod search;

pub use export::{Keep, LayerChange, export};
pub use model::{Cost, LayerCost, PitModel};
pub use search::{SearchConfig, SearchResult, search};

use crate::model::Model;
use anyhow::Result;

impl PitModel {
    /// The physically smaller network the current binary masks describe, with per-layer
    /// before/after. In eval mode it computes the masked network's function.
    pub fn export(&self) -> Result<(Model, Vec<LayerChange>)> {
        let masks = self.channel_masks()?;
        let time = (0..self.model().graph().nodes.len())
            .map(|i| self.time_mask_of(i))
            .collect::<Result<Vec<_>>>()?;
        let keep = Keep::from_masks(&masks, &time)?;
        // Scores for structural adjustments: the continuous |α| (ones for fixed groups).
        let scores = self.alpha_values()?;
        export(self.model(), self.plan(), &keep, &scores)
    }
}

#[cfg(test)]
mod tests;

//! Data sets for whittle: built-in synthetic keyword and image sets, the real Speech Commands
//! and CIFAR-10 loaders, the MFCC front end, splits and normalisation.
//!
//! Entry points: [`build`] (parameters + seed → [`Dataset`]), [`save`] / [`load`]
//! (`data.safetensors` + `dataset.json`). Keyword items are MFCCs stored (N, 49, 10) =
//! (clips, frames, coefficients): a (49, 10) one-channel image for DS-CNN, or transposed to
//! 10 channels × 49 steps for a TCN. Image items are (N, 3, 32, 32), RGB planes in [0, 1]
//! before normalisation.

pub mod cifar;
pub mod dataset;
pub mod features;
pub mod mfcc;
pub mod params;
pub mod seed;
pub mod source;
pub mod speech_commands;
pub mod store;
pub mod synth_images;
pub mod synth_kws;
pub mod wav;

use std::path::Path;

use anyhow::Result;

pub use dataset::{Dataset, NormStats, Split};
pub use mfcc::{Mfcc, MfccParams};
pub use params::{DatasetSpec, FeatureSpec, FetchParams};
pub use store::{load, save};

/// Version of the data-producing code: bump it whenever the same parameters and seed would
/// give different arrays (the `fetch` stage kind should put it in its `version()`).
pub const DATA_VERSION: &str = "1";

/// Progress callback: (phase, done, total), e.g. ("download", bytes, total bytes) or
/// ("train", clips, clips). Called on the calling thread only.
pub type Progress<'a> = &'a dyn Fn(&str, u64, u64);

/// Builds the data set described by `params` (resolved first) from `seed`. Downloads (URL
/// sources) are kept in `downloads`; archives are unpacked into a temporary folder inside it
/// that is removed afterwards.
pub fn build(
    params: &FetchParams,
    seed: u64,
    downloads: &Path,
    progress: Progress,
) -> Result<Dataset> {
    let params = params.clone().resolve()?;
    let mut ds = match &params.dataset {
        DatasetSpec::SyntheticKws(p) => synth_kws::build(p, &params.mfcc(), seed, progress)?,
        DatasetSpec::SyntheticImages(p) => synth_images::build(p, seed, progress)?,
        DatasetSpec::SpeechCommands(p) => {
            speech_commands::build(p, &params.mfcc(), seed, downloads, progress)?
        }
        DatasetSpec::Cifar10(p) => cifar::build(p, seed, downloads, progress)?,
    };
    if params.normalize {
        let axis = ds.input_shape.len() - if params.dataset.is_audio() { 1 } else { 3 };
        ds.normalize(axis)?;
    }
    ds.description = serde_json::json!({
        "params": serde_json::to_value(&params)?,
        "seed": seed,
        "source": ds.description,
    });
    Ok(ds)
}

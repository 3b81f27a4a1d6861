//! Data sets for whittle: built-in synthetic keyword, image, machine-sound and visual-wake-words
//! sets, the real Speech Commands, CIFAR-10, DCASE 2020 task 2 (ToyADMOS / MIMII) and MLPerf
//! Tiny visual wake words (`person/`, `non_person/` PNG / JPEG) loaders, the MFCC and log-mel
//! front ends, splits and normalisation.
//!
//! Entry points: [`build`] (parameters + seed → [`Dataset`]), [`save`] / [`load`]
//! (`data.safetensors` + `dataset.json`). Keyword items are MFCCs stored (N, 49, 10) =
//! (clips, frames, coefficients): a (49, 10) one-channel image for DS-CNN, or transposed to
//! 10 channels × 49 steps for a TCN. Image items are (N, 3, 32, 32), RGB planes in [0, 1]
//! before normalisation; visual-wake-words items (`synthetic_vww`, `vww`) are (N, 3, size,
//! size), size 96 by default, classes `non_person` (0) and `person` (1), images resized with
//! the same code ([`vww::to_planes`]). Machine-sound items ([`Task::AnomalyDetection`]: `synthetic_machine`,
//! `dcase2020`) are log-mel windows (N, 5, 128) = 640 values (frames × mel bands, MLPerf
//! Tiny's autoencoder input), with per item the clip and machine ID it came from
//! ([`Split::clip`], [`Split::group`]) and `y` = 0 normal / 1 anomalous; training and
//! validation hold normal clips only; normalisation is per mel band.

pub mod cifar;
pub mod dataset;
pub mod dcase;
pub mod features;
pub mod logmel;
pub mod mfcc;
pub mod params;
pub mod seed;
pub mod source;
pub mod speech_commands;
pub mod store;
pub mod synth_images;
pub mod synth_kws;
pub mod synth_machine;
pub mod synth_vww;
pub mod vww;
pub mod wav;

use std::path::Path;

use anyhow::Result;

pub use dataset::{ClipRange, Dataset, NormStats, Split, Task};
pub use logmel::{LogMel, LogMelParams};
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
        DatasetSpec::SyntheticMachine(p) => {
            synth_machine::build(p, &params.log_mel(), seed, progress)?
        }
        DatasetSpec::Dcase2020(p) => dcase::build(p, &params.log_mel(), seed, downloads, progress)?,
        DatasetSpec::SyntheticVww(p) => synth_vww::build(p, seed, progress)?,
        DatasetSpec::Vww(p) => vww::build(p, seed, downloads, progress)?,
    };
    if params.normalize {
        let audio = params.dataset.is_audio() || params.dataset.is_anomaly_detection();
        let axis = ds.input_shape.len() - if audio { 1 } else { 3 };
        ds.normalize(axis)?;
    }
    ds.description = serde_json::json!({
        "params": serde_json::to_value(&params)?,
        "seed": seed,
        "source": ds.description,
    });
    Ok(ds)
}

//! The parameters of a `fetch` stage: which data set (with its own settings), the audio
//! features and whether to normalise. All tables deny unknown keys; omitted keys take the
//! defaults, and [`FetchParams::resolve`] fills and checks everything so that writing a
//! default explicitly gives the same resolved value (the engine hashes it).
//!
//! TOML forms accepted for `dataset`: a bare name (`dataset = "synthetic_kws"`) or a table
//! with a `kind` (`dataset = { kind = "speech_commands", source = "…", sha256 = "…" }`).
//!
//! Features: keyword sources take `features = { kind = "mfcc", … }` (the default), the
//! machine-sound (anomaly-detection) sources `synthetic_machine` and `dcase2020` take
//! `features = { kind = "log_mel", … }` (the default); image sources take none.

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer, Serialize};

use crate::cifar::Cifar10Params;
use crate::dcase::DcaseParams;
use crate::logmel::LogMelParams;
use crate::mfcc::MfccParams;
use crate::speech_commands::SpeechCommandsParams;
use crate::synth_images::SyntheticImagesParams;
use crate::synth_kws::SyntheticKwsParams;
use crate::synth_machine::SyntheticMachineParams;
use crate::synth_vww::SyntheticVwwParams;
use crate::vww::VwwParams;

/// Which data set to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[serde(remote = "Self")]
pub enum DatasetSpec {
    SyntheticKws(SyntheticKwsParams),
    SpeechCommands(SpeechCommandsParams),
    SyntheticImages(SyntheticImagesParams),
    Cifar10(Cifar10Params),
    /// Built-in synthetic machine sounds (anomaly detection).
    SyntheticMachine(SyntheticMachineParams),
    /// DCASE 2020 task 2 / ToyADMOS / MIMII folder layout (anomaly detection).
    Dcase2020(DcaseParams),
    /// Built-in synthetic person / non-person images (visual wake words).
    SyntheticVww(SyntheticVwwParams),
    /// MLPerf Tiny visual wake words folder layout (`person/`, `non_person/` images).
    Vww(VwwParams),
}

impl Default for DatasetSpec {
    fn default() -> Self {
        DatasetSpec::SyntheticKws(SyntheticKwsParams::default())
    }
}

impl Serialize for DatasetSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        DatasetSpec::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for DatasetSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DatasetSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a data set name (synthetic_kws, speech_commands, synthetic_images, cifar10, synthetic_machine, dcase2020, synthetic_vww, vww) or a table with `kind`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DatasetSpec, E> {
                let map =
                    serde::de::value::MapDeserializer::<_, E>::new(std::iter::once(("kind", v)));
                DatasetSpec::deserialize(map)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                a: A,
            ) -> Result<DatasetSpec, A::Error> {
                DatasetSpec::deserialize(serde::de::value::MapAccessDeserializer::new(a))
            }
        }
        d.deserialize_any(V)
    }
}

impl DatasetSpec {
    /// The `kind` name.
    pub fn name(&self) -> &'static str {
        match self {
            DatasetSpec::SyntheticKws(_) => "synthetic_kws",
            DatasetSpec::SpeechCommands(_) => "speech_commands",
            DatasetSpec::SyntheticImages(_) => "synthetic_images",
            DatasetSpec::Cifar10(_) => "cifar10",
            DatasetSpec::SyntheticMachine(_) => "synthetic_machine",
            DatasetSpec::Dcase2020(_) => "dcase2020",
            DatasetSpec::SyntheticVww(_) => "synthetic_vww",
            DatasetSpec::Vww(_) => "vww",
        }
    }

    /// True for the machine-sound (audio → log-mel windows) anomaly-detection sources.
    pub fn is_anomaly_detection(&self) -> bool {
        matches!(
            self,
            DatasetSpec::SyntheticMachine(_) | DatasetSpec::Dcase2020(_)
        )
    }

    /// True for the keyword-spotting (audio → MFCC) sources.
    pub fn is_audio(&self) -> bool {
        matches!(
            self,
            DatasetSpec::SyntheticKws(_) | DatasetSpec::SpeechCommands(_)
        )
    }
}

/// Feature extraction for audio sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureSpec {
    Mfcc(MfccParams),
    /// Log-mel windows (anomaly detection, MLPerf Tiny).
    LogMel(LogMelParams),
}

/// Everything a `fetch` stage needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchParams {
    #[serde(default)]
    pub dataset: DatasetSpec,
    /// Audio features (audio sources only; defaults to the spec's MFCC for keyword sources and
    /// to MLPerf Tiny's log-mel windows for machine sounds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureSpec>,
    /// Per-channel normalisation with training-split statistics (MFCC: per coefficient;
    /// log-mel windows: per mel band).
    #[serde(default = "yes")]
    pub normalize: bool,
}

fn yes() -> bool {
    true
}

impl Default for FetchParams {
    fn default() -> Self {
        Self {
            dataset: DatasetSpec::default(),
            features: None,
            normalize: true,
        }
    }
}

impl FetchParams {
    /// Fills defaults (MFCC for audio) and checks every value; returns the resolved parameters.
    pub fn resolve(mut self) -> Result<Self> {
        if self.dataset.is_audio() {
            let f = self
                .features
                .get_or_insert(FeatureSpec::Mfcc(MfccParams::default()));
            let FeatureSpec::Mfcc(m) = f else {
                bail!(
                    "features: {} takes `kind = \"mfcc\"` features",
                    self.dataset.name()
                );
            };
            crate::mfcc::Mfcc::new(m)?;
        } else if self.dataset.is_anomaly_detection() {
            let f = self
                .features
                .get_or_insert(FeatureSpec::LogMel(LogMelParams::default()));
            let FeatureSpec::LogMel(m) = f else {
                bail!(
                    "features: {} takes `kind = \"log_mel\"` features",
                    self.dataset.name()
                );
            };
            crate::logmel::LogMel::new(m)?;
        } else if self.features.is_some() {
            bail!(
                "features: only audio data sets take features; {} has none",
                self.dataset.name()
            );
        }
        match &self.dataset {
            DatasetSpec::SyntheticKws(p) => p.validate()?,
            DatasetSpec::SpeechCommands(p) => p.validate()?,
            DatasetSpec::Cifar10(p) => p.validate()?,
            DatasetSpec::SyntheticImages(p) => p.validate()?,
            DatasetSpec::SyntheticMachine(p) => p.validate()?,
            DatasetSpec::Dcase2020(p) => p.validate()?,
            DatasetSpec::SyntheticVww(p) => p.validate()?,
            DatasetSpec::Vww(p) => p.validate()?,
        }
        Ok(self)
    }

    /// The MFCC settings (defaults if unset or not MFCC).
    pub fn mfcc(&self) -> MfccParams {
        match &self.features {
            Some(FeatureSpec::Mfcc(m)) => m.clone(),
            _ => MfccParams::default(),
        }
    }

    /// The log-mel window settings (defaults if unset or not log-mel).
    pub fn log_mel(&self) -> LogMelParams {
        match &self.features {
            Some(FeatureSpec::LogMel(m)) => m.clone(),
            _ => LogMelParams::default(),
        }
    }
}

//! The `fetch` stage kind: builds train / validation / test sets (synthetic or real, with
//! features and normalisation) and stores them as `data.safetensors` + `dataset.json`.
//! Every preprocessing parameter is part of the resolved parameters, so of the node key.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};
use whittle_data::{DatasetSpec, FetchParams, source};
use whittle_engine::{ParamError, RunContext, StageKind, from_params};

pub struct Fetch;

impl StageKind for Fetch {
    fn name(&self) -> &'static str {
        "fetch"
    }

    fn version(&self) -> &'static str {
        whittle_data::DATA_VERSION
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let p: FetchParams = from_params(params)?;
        let p = p
            .resolve()
            .map_err(|e| ParamError::new(Vec::<String>::new(), format!("{e:#}")))?;
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn threads(&self, _resolved: &Value) -> usize {
        2
    }

    /// The downloaded archive of a URL source (`downloads/<sha256>-<file name>`).
    fn shared_files(&self, resolved: &Value, _inputs: &[(&str, &str)]) -> Vec<String> {
        let Ok(p) = serde_json::from_value::<FetchParams>(resolved.clone()) else {
            return Vec::new();
        };
        let (source, sha) = match &p.dataset {
            DatasetSpec::SpeechCommands(d) => (&d.source, &d.sha256),
            DatasetSpec::Cifar10(d) => (&d.source, &d.sha256),
            DatasetSpec::Dcase2020(d) => (&d.source, &d.sha256),
            DatasetSpec::Vww(d) => (&d.source, &d.sha256),
            DatasetSpec::SyntheticKws(_)
            | DatasetSpec::SyntheticImages(_)
            | DatasetSpec::SyntheticMachine(_)
            | DatasetSpec::SyntheticVww(_) => return Vec::new(),
        };
        match sha {
            Some(sha) if source::is_url(source) => {
                let p = source::download_path(source, sha, Path::new("downloads"));
                vec![p.to_string_lossy().into_owned()]
            }
            _ => Vec::new(),
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: FetchParams = serde_json::from_value(ctx.params.clone())?;
        let downloads = crate::common::downloads_dir(ctx);
        let progress = |phase: &str, done: u64, total: u64| {
            ctx.progress.set_message(phase);
            ctx.progress.set_length(total);
            ctx.progress.set_position(done);
        };
        let ds = crate::common::with_threads(ctx.threads, || {
            whittle_data::build(&p, ctx.seed, &downloads, &progress)
        })?;
        whittle_data::save(&ds, ctx.out_dir)?;
        let n = ds.classes.len();
        Ok(json!({
            "dataset": p.dataset.name(),
            "classes": ds.classes,
            "input_shape": ds.input_shape,
            "train": ds.train.len(),
            "val": ds.val.len(),
            "test": ds.test.len(),
            "train_per_class": ds.train.counts(n),
        }))
    }
}

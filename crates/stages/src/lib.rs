//! Stage kinds of whittle, one module per kind, registered with the engine. This is the only
//! crate where engine, data and nn meet.

pub mod assistants;
pub mod calibrate;
pub mod common;
pub mod distill;
pub mod export;
pub mod fetch;
pub mod finetune;
pub mod import;
pub mod int8;
pub mod ladder;
pub mod latency;
pub mod mcu;
pub mod memory;
pub mod model_spec;
pub mod packed;
pub mod prune;
pub mod qat;
pub mod quantize;
pub mod recipe;
pub mod search;
pub mod select;
pub mod shipped;
pub mod space;
pub mod task;
pub mod to_export;
pub mod train;

/// Every stage kind whittle knows: the engine's built-ins (`command`) plus this crate's kinds.
pub fn registry() -> whittle_engine::Registry {
    let mut r = whittle_engine::Registry::with_builtins();
    r.register(fetch::Fetch);
    r.register(train::Train);
    r.register(import::Import);
    r.register(distill::Distill);
    r.register(search::Search);
    r.register(prune::Prune);
    r.register(finetune::Finetune);
    r.register(quantize::Quantize);
    r.register(qat::Qat);
    r.register(calibrate::Calibrate);
    r.register(export::Export);
    r.register(space::SpaceStage);
    r.register(select::Select);
    r.register(ladder::Ladder);
    r
}

#[cfg(test)]
mod export_ops_tests;
#[cfg(test)]
mod pruned_export_tests;
#[cfg(test)]
mod stage_tests;

//! Stage kinds of whittle, one module per kind, registered with the engine. This is the only
//! crate where engine, data and nn meet.

pub mod common;
pub mod distill;
pub mod fetch;
pub mod finetune;
pub mod model_spec;
pub mod prune;
pub mod recipe;
pub mod search;
pub mod train;

/// Every stage kind whittle knows: the engine's built-ins (`command`) plus this crate's kinds.
pub fn registry() -> whittle_engine::Registry {
    let mut r = whittle_engine::Registry::with_builtins();
    r.register(fetch::Fetch);
    r.register(train::Train);
    r.register(distill::Distill);
    r.register(search::Search);
    r.register(prune::Prune);
    r.register(finetune::Finetune);
    r
}

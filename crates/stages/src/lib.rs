//! Stage kinds of whittle, one module per kind, registered with the engine. This is the only
//! crate where engine, data and nn meet.

mod common;
pub mod fetch;

/// Every stage kind whittle knows: the engine's built-ins (`command`) plus this crate's kinds.
pub fn registry() -> whittle_engine::Registry {
    let mut r = whittle_engine::Registry::with_builtins();
    r.register(fetch::Fetch);
    r
}

//! Stage kinds of whittle, one module per kind, registered with the engine.

/// Every stage kind whittle knows: the engine's built-ins (`command`) plus this crate's kinds.
pub fn registry() -> whittle_engine::Registry {
    whittle_engine::Registry::with_builtins()
}

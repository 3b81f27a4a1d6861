//! Stage kinds of whittle, one module per kind, registered with the engine.

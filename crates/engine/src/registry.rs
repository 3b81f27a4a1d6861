//! The registry of stage kinds: maps a `kind = "..."` name to its implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::stage::StageKind;

/// Known stage kinds by name. [`Registry::with_builtins`] holds the engine's own kinds
/// (`command`); other crates add theirs with [`Registry::register`].
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn StageKind>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the engine's built-in kinds (`command`).
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register(crate::command::CommandKind);
        r
    }

    /// Add (or replace) a kind under its [`StageKind::name`].
    pub fn register(&mut self, kind: impl StageKind + 'static) -> &mut Self {
        self.kinds.insert(kind.name(), Arc::new(kind));
        self
    }

    /// Add an already shared kind.
    pub fn register_arc(&mut self, kind: Arc<dyn StageKind>) -> &mut Self {
        self.kinds.insert(kind.name(), kind);
        self
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StageKind>> {
        self.kinds.get(name)
    }

    /// Names of all kinds, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.names())
            .finish()
    }
}

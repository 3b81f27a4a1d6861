//! Architectures beyond the fixed presets of [`crate::config`]: a network written node by node
//! ([`node_list`]) and the CIFAR presets of `002` ([`cifar`]).

pub mod cifar;
pub mod node_list;

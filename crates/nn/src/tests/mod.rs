//! Unit tests of the crate, one file per concern.

mod archs;
mod cifar_archs;
mod counts;
mod grads;
mod interp;
mod models;
mod new_ops;
mod node_list;
mod ops;
mod optim;
mod training;

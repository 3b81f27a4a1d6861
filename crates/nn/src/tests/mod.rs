//! Unit tests of the crate, one file per concern.

mod archs;
mod cifar_archs;
mod counts;
mod grads;
mod interp;
mod models;
mod node_list;
mod new_ops;
mod ops;
mod optim;
mod training;

//! Unit tests of the crate, one file per concern.

mod counts;
mod grads;
mod interp;
mod models;
mod ops;
mod optim;
mod training;

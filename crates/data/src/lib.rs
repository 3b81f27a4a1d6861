//! Data sets for whittle: built-in synthetic keyword and image sets, the real Speech Commands
//! and CIFAR-10 loaders, the MFCC front end, splits and normalisation.

pub mod mfcc;

pub use mfcc::{Mfcc, MfccParams};

//! The training loop, optimizer and schedule, evaluation, checkpoints and metrics.
//!
//! The trainer knows only `autodidact_core::objective::{Objective, BatchStream}`; it never
//! names a concrete objective or model. Depends on `autodidact-core`, burn, and
//! `autodidact-models` for its CPU kernels (the optimizer's update).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod probe;
pub mod schedule;
pub mod signals;
pub mod trainer;

pub use error::{Result, TrainError};

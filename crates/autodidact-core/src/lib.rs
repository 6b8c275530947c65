//! The shared vocabulary of autodidact: batch types, the `Objective` trait and seeds.
//!
//! Every other crate depends on this one; it depends only on burn. Keeping the traits here
//! lets data pipelines, objectives and the trainer evolve independently: the trainer knows
//! only [`objective::Objective`], the data crate only produces [`batch`] types.
#![warn(missing_docs)]

pub mod alloc;
pub mod batch;
pub mod eval;
pub mod fsutil;
pub mod objective;
pub mod seed;

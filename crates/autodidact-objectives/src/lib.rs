//! Self-supervised objectives: losses as pure tensor functions, and objectives that compose
//! an encoder, a head and a loss behind `autodidact_core::objective::Objective`.
//!
//! Depends on `autodidact-core` and `autodidact-models`; the trainer depends on none of the
//! concrete objectives here.
#![warn(missing_docs)]

pub mod classify;
pub mod image;
pub mod losses;
pub mod mae;
pub mod mlm;
pub mod simclr;
pub mod simcse;

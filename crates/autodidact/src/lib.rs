//! autodidact: self-supervised pretraining of compact specialist models on unlabeled data.
//!
//! This facade re-exports the workspace crates under one name for library users; see
//! `examples/` for a pretraining run written against it.
#![warn(missing_docs)]

pub use autodidact_core as core;
pub use autodidact_data as data;
pub use autodidact_models as models;
pub use autodidact_objectives as objectives;
pub use autodidact_train as train;
pub use burn;

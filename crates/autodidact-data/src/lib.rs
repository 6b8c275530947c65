//! Data for self-supervised pretraining: text corpora, subword tokenizers, token shards,
//! packed sequences with seeded resumable sampling, MLM masking, and labeled text for
//! fine-tuning.
//!
//! This crate never touches a device or a model: it produces host-side batches
//! (`autodidact_core::batch`). It may depend only on `autodidact-core`.
#![warn(missing_docs)]

pub mod error;
pub mod labeled;
pub mod mlm;
pub mod shards;
pub mod source;
pub mod tokenizer;

pub use error::{DataError, Result};

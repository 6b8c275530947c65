//! Data for self-supervised pretraining: text corpora, subword tokenizers, token shards,
//! packed sequences with seeded resumable sampling, MLM masking, labeled text for
//! fine-tuning, and image sets with torchvision-style multi-view augmentation.
//!
//! This crate never touches a device or a model: it produces host-side batches
//! (`autodidact_core::batch`). It may depend only on `autodidact-core`.
#![warn(missing_docs)]

pub mod augment;
pub mod error;
mod fast_wordpiece;
pub mod images;
pub mod labeled;
pub mod mlm;
pub mod shards;
pub mod source;
pub mod tokenizer;

pub use error::{DataError, Result};

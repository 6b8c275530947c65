//! Encoders and heads: a BERT-style transformer and its masked-language-model head.
//!
//! Models are burn modules with `Config::init(device)` constructors and typed inputs; they
//! know nothing of losses or training. Depends only on burn.
#![warn(missing_docs)]

pub mod bert;
pub mod error;
pub mod hf;

pub use error::ModelError;

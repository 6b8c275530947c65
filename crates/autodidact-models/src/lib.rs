//! Encoders and heads: a BERT-style transformer and its masked-language-model head; a small
//! ResNet and a ViT for images, with the MAE decoder and the projection heads of contrastive methods.
//!
//! Models are burn modules with `Config::init(device)` constructors and typed inputs; they
//! know nothing of losses or training. Depends only on burn.
#![warn(missing_docs)]

pub mod bert;
pub mod cpu;
pub mod error;
pub mod heads;
pub mod hf;
pub mod mae;
pub mod resnet;
pub mod vit;

pub use error::ModelError;

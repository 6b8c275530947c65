//! Error type of this crate.

use std::path::PathBuf;

/// Errors from building, importing or exporting models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A hyper-parameter is invalid.
    #[error("model.{field}: {message}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// A HuggingFace `config.json` is malformed or describes a model we cannot run.
    #[error("{}: {field}: {message}", path.display())]
    HfConfig {
        /// The `config.json`.
        path: PathBuf,
        /// The offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A weights file is malformed or does not fit the model.
    #[error("{}: {message}", path.display())]
    Weights {
        /// The `.safetensors` file.
        path: PathBuf,
        /// What is wrong (lists the offending tensors).
        message: String,
    },
}

impl ModelError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), error: source }
    }

    pub(crate) fn weights(path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        Self::Weights { path: path.to_path_buf(), message: message.to_string() }
    }
}

//! Error type of this crate.

use std::path::PathBuf;

/// Errors from reading corpora and image sets, training or loading tokenizers, and token
/// shards.
///
/// Every variant that concerns a file names it: the user must be able to act on the message.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The corpus path does not exist.
    #[error("corpus path {0} does not exist")]
    MissingPath(PathBuf),
    /// The corpus path holds no readable text at all.
    #[error("corpus {path} is empty: {detail}")]
    EmptyCorpus {
        /// The corpus root.
        path: PathBuf,
        /// What was found (e.g. how many files were skipped).
        detail: String,
    },
    /// An I/O error on a specific file.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A JSONL line that is not valid JSON or lacks the text field.
    #[error("{path}:{line}: {message}")]
    Jsonl {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Training, loading or saving a tokenizer failed.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file (or the corpus it was trained on).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A shard set or its index is malformed.
    #[error("token shards {path}: {message}")]
    Shards {
        /// The shard directory or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An image file or image set that cannot be read: a malformed IDX file, a corrupt or
    /// truncated image, images that disagree in size or channels.
    #[error("{path}: {message}")]
    Image {
        /// The file (or folder) at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A parameter that does not fit the data (e.g. sequence length, mask ratio).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), error: source }
    }

    pub(crate) fn image(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Image { path: path.into(), message: message.into() }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, DataError>;

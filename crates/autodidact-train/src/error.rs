//! Error type of this crate.

use std::path::PathBuf;

/// Errors from training, evaluation and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// An I/O error on a file of the run directory.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A checkpoint could not be written or read.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The loss or the gradient norm became NaN or infinite.
    #[error("non-finite {what} ({value}) at step {step}; the last checkpoint is kept intact")]
    NonFinite {
        /// `"loss"` or `"gradient norm"`.
        what: &'static str,
        /// The value seen.
        value: f64,
        /// The optimizer step at which it happened.
        step: u64,
    },
    /// More steps were skipped for non-finite values than the run allows.
    #[error("{skipped} steps skipped for a non-finite loss or gradient by step {step}, more than train.max_skipped_steps allows: the run diverged (lower the learning rate, or clip gradients); the last checkpoint is kept intact")]
    TooManySkipped {
        /// Steps skipped so far.
        skipped: u64,
        /// The optimizer step of the last skip.
        step: u64,
    },
    /// SIGINT or SIGTERM stopped the run after a step; a checkpoint of that step was written.
    #[error("stopped by a signal after step {step}; checkpoint written to {}", checkpoint.display())]
    Interrupted {
        /// Steps completed.
        step: u64,
        /// The checkpoint directory written on the way out.
        checkpoint: PathBuf,
    },
    /// A periodic evaluation during training failed.
    #[error("evaluation at step {step}: {message}")]
    Evaluation {
        /// The step.
        step: u64,
        /// What went wrong.
        message: String,
    },
    /// The data pipeline stopped (its thread panicked or ended early).
    #[error("the data pipeline stopped unexpectedly at batch {0}")]
    DataPipeline(u64),
    /// The training data could not be read.
    #[error("reading the training data: {0}")]
    Data(String),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), error: source }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::Checkpoint { path: path.into(), message: message.to_string() }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, TrainError>;

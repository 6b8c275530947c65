//! Error type of this crate.

/// Errors from building or loading models.
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
}

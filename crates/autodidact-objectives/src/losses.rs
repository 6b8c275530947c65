//! Losses as pure tensor functions: they take predictions and targets, never models.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy between `logits` and integer `labels`, with optional label smoothing
/// (Szegedy et al. 2016, §7): the target distribution is `(1 - ε)·one_hot + ε/V`.
///
/// For MLM the rows are the masked positions only (Devlin et al. 2019, §3.1: "the final
/// hidden vectors corresponding to the mask tokens are fed into an output softmax"), which
/// is PyTorch's `F.cross_entropy(logits, labels, ignore_index=-100)` after gathering.
///
/// # Shapes
/// - `logits`: `[rows, classes]`
/// - `labels`: `[rows]`, values in `0..classes`
/// - output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>, label_smoothing: f64) -> Tensor<1> {
    let [rows, _] = logits.dims();
    let log_probs = log_softmax(logits, 1); // (N, V)
    let nll = log_probs.clone().gather(1, labels.reshape([rows, 1])).mean().neg();
    if label_smoothing == 0.0 {
        return nll;
    }
    let uniform = log_probs.mean().neg(); // mean over rows and classes of -log p
    nll * (1.0 - label_smoothing) + uniform * label_smoothing
}

/// Number of rows whose arg-max equals the label, as a float scalar.
///
/// # Shapes
/// - `logits`: `[rows, classes]`, `labels`: `[rows]`, output: `[1]`
pub fn correct_count(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [rows, _] = logits.dims();
    logits.argmax(1).reshape([rows]).equal(labels).int().sum().float()
}

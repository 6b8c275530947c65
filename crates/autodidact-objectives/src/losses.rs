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

/// InfoNCE over in-batch pairs (van den Oord et al. 2018), in the form unsupervised SimCSE
/// uses (Gao et al. 2021, eq. 1): row `i` of `z1` must pick its positive, row `i` of `z2`,
/// among all `N` rows of `z2` by cosine similarity over `temperature`; the other `N − 1` are
/// its negatives. Returns the mean loss and the similarity logits (for retrieval accuracy).
///
/// # Shapes
/// - `z1`, `z2`: `[N, dim]`
/// - output: loss `[1]`, logits `[N, N]`
pub fn info_nce(z1: Tensor<2>, z2: Tensor<2>, temperature: f64) -> (Tensor<1>, Tensor<2>) {
    let [n, _] = z1.dims();
    let logits = l2_normalize(z1).matmul(l2_normalize(z2).transpose()) / temperature; // (N, N)
    let labels = Tensor::<1, Int>::arange(0..n as i64, &logits.device());
    (cross_entropy(logits.clone(), labels, 0.0), logits)
}

/// Rows scaled to unit L2 norm (with PyTorch `F.normalize`'s `eps = 1e-8` floor).
///
/// # Shapes
/// - `x`: `[rows, dim]`, output: the same
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-8); // (rows, 1)
    x / norm
}

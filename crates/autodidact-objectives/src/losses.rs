//! Losses as pure tensor functions: they take predictions and targets, never models.

use autodidact_models::cpu;
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
    cpu::cross_entropy(logits, labels, label_smoothing).mean()
}

/// 1 for each row whose arg-max equals its label, 0 otherwise.
///
/// # Shapes
/// - `logits`: `[rows, classes]`, `labels`: `[rows]`, output: `[rows]`
pub fn hits(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [rows, _] = logits.dims();
    logits.argmax(1).reshape([rows]).equal(labels).float()
}

/// Number of rows whose arg-max equals the label, as a float scalar.
///
/// # Shapes
/// - `logits`: `[rows, classes]`, `labels`: `[rows]`, output: `[1]`
pub fn correct_count(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    hits(logits, labels).sum()
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

/// NT-Xent, SimCLR's normalized temperature-scaled cross-entropy (Chen et al. 2020, eq. 1):
/// each of the `2N` views must pick its partner (row `i` of `z1` ↔ row `i` of `z2`) among the
/// other `2N − 1` views of the batch by cosine similarity over `temperature`, so every anchor
/// has `2N − 2` negatives; the loss is the mean over all `2N` anchors. Returns the loss and
/// the similarity logits with the self-similarities masked out (for retrieval accuracy;
/// their labels are [`nt_xent_labels`]).
///
/// # Shapes
/// - `z1`, `z2`: `[N, dim]`
/// - output: loss `[1]`, logits `[2N, 2N]`
pub fn nt_xent(z1: Tensor<2>, z2: Tensor<2>, temperature: f64) -> (Tensor<1>, Tensor<2>) {
    let [n, _] = z1.dims();
    let device = z1.device();
    let z = l2_normalize(Tensor::cat(vec![z1, z2], 0)); // (2N, D)
    let self_mask = Tensor::<2, Int>::eye(2 * n, &device).bool();
    // A large finite negative rather than -inf keeps the backward pass free of NaNs.
    let logits = (z.clone().matmul(z.transpose()) / temperature).mask_fill(self_mask, -1e9); // (2N, 2N)
    (cross_entropy(logits.clone(), nt_xent_labels(n, &device), 0.0), logits)
}

/// The partner of each of the `2N` views in [`nt_xent`]'s logits: `i ↦ i + N`, `i + N ↦ i`.
///
/// # Shapes
/// - output: `[2N]`
pub fn nt_xent_labels(n: usize, device: &burn::tensor::Device) -> Tensor<1, Int> {
    let n = n as i64;
    Tensor::<1, Int>::arange(0..2 * n, device).add_scalar(n).remainder_scalar(2 * n)
}

/// MAE's reconstruction loss (He et al. 2021, §3 and the official `forward_loss` with
/// `norm_pix_loss=True`): mean squared error between predicted and true pixels, the targets
/// normalized per patch by their mean and (unbiased) variance when `norm_pix`, averaged over
/// the pixels of a patch and then over the masked patches only.
///
/// # Shapes
/// - `pred`, `target`: `[batch, patches, patch_dim]` (target from `vit::patchify`)
/// - `mask`: `[batch, patches]`, 1 for masked patches
/// - output: `[1]`
pub fn mae_loss(pred: Tensor<3>, target: Tensor<3>, mask: Tensor<2>, norm_pix: bool) -> Tensor<1> {
    let [b, l, p] = target.dims();
    let target = if norm_pix {
        let mean = target.clone().mean_dim(2); // (B, L, 1)
        let centered = target - mean;
        let var = centered.clone().square().sum_dim(2) / (p.max(2) - 1) as f64;
        centered / (var + 1e-6).sqrt()
    } else {
        target
    };
    let per_patch = (pred - target).square().mean_dim(2).reshape([b, l]); // (B, L)
    (per_patch * mask.clone()).sum() / mask.sum()
}

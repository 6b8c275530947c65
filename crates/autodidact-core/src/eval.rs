//! Evaluation on frozen features and predictions: k-nearest-neighbour classification,
//! accuracy, macro-F1 and confusion matrices. Plain host arithmetic, shared by every modality.

use rayon::prelude::*;

/// Predicts classes by a weighted k-nearest-neighbour vote on cosine similarity (Wu et al.
/// 2018, §3.4, as used by DINO and solo-learn): each of the `k` most similar training
/// examples votes for its class with weight `exp(similarity / temperature)`. Queries are
/// scored in parallel; the result does not depend on the number of threads.
///
/// # Shapes
/// - `train`: `[n_train * dim]` row-major, `train_labels`: `[n_train]`
/// - `query`: `[n_query * dim]`, output: `[n_query]`
pub fn knn_predict(train: &[f32], train_labels: &[usize], query: &[f32], dim: usize, num_classes: usize, k: usize, temperature: f64) -> Vec<usize> {
    let normalize = |rows: &[f32]| -> Vec<f32> {
        rows.chunks_exact(dim)
            .flat_map(|r| {
                let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                r.iter().map(move |v| v / norm)
            })
            .collect()
    };
    let (train, query) = (normalize(train), normalize(query));
    let k = k.min(train_labels.len()).max(1);
    query
        .par_chunks_exact(dim)
        .map(|q| {
            let mut sims: Vec<(f32, usize)> = train.chunks_exact(dim).zip(train_labels).map(|(t, &l)| (dot(t, q), l)).collect();
            sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            let mut votes = vec![0.0f64; num_classes];
            for &(s, l) in &sims[..k] {
                votes[l] += (f64::from(s) / temperature).exp();
            }
            (0..num_classes).max_by(|&a, &b| votes[a].total_cmp(&votes[b]).then(b.cmp(&a))).unwrap_or(0)
        })
        .collect()
}

/// Dot product accumulated in eight independent lanes, which the compiler turns into SIMD
/// (one running `f32` sum is a chain of dependent adds it may not reorder).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `confusion[truth][predicted]` counts.
pub fn confusion_matrix(truth: &[usize], predicted: &[usize], num_classes: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; num_classes]; num_classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        m[t][p] += 1;
    }
    m
}

/// Fraction of correct predictions (0 for no examples).
pub fn accuracy(confusion: &[Vec<usize>]) -> f64 {
    let total: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..confusion.len()).map(|i| confusion[i][i]).sum();
    if total == 0 { 0.0 } else { correct as f64 / total as f64 }
}

/// Unweighted mean over classes of F1 = 2·precision·recall / (precision + recall), as
/// scikit-learn's `f1_score(average="macro")` (a class never predicted nor present scores 0).
pub fn macro_f1(confusion: &[Vec<usize>]) -> f64 {
    let n = confusion.len();
    if n == 0 {
        return 0.0;
    }
    let f1 = |c: usize| {
        let tp = confusion[c][c] as f64;
        let predicted: usize = (0..n).map(|t| confusion[t][c]).sum();
        let actual: usize = confusion[c].iter().sum();
        let denom = predicted as f64 + actual as f64;
        if denom == 0.0 { 0.0 } else { 2.0 * tp / denom }
    };
    (0..n).map(f1).sum::<f64>() / n as f64
}

//! Evaluation on frozen features and predictions: k-nearest-neighbour classification,
//! accuracy, macro-F1, confusion matrices and McNemar's paired test. Plain host arithmetic,
//! shared by every modality.

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

/// Two classifiers scored on the same examples: where exactly one of them is right, and how
/// likely so lopsided a split is if both were equally accurate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedTest {
    /// Examples the first classifier gets right and the second wrong.
    pub only_first: usize,
    /// Examples the second classifier gets right and the first wrong.
    pub only_second: usize,
    /// Two-sided p-value of McNemar's exact test.
    pub p_value: f64,
}

/// McNemar's test (McNemar 1947) in its exact form, as statsmodels'
/// `mcnemar(table, exact=True)`: under equal accuracy each of the `n` discordant examples
/// (one classifier right, the other wrong) is equally likely to favour either, so the
/// smaller count `k` is Binomial(n, 1/2) and `p = min(1, 2 · P(X ≤ k))`. Pairing makes
/// it much sharper than comparing two accuracies, whose sampling errors include all the
/// examples both get right or both get wrong.
///
/// # Shapes
/// - `truth`, `first`, `second`: `[n_examples]` class indices
pub fn mcnemar(truth: &[usize], first: &[usize], second: &[usize]) -> PairedTest {
    assert!(truth.len() == first.len() && truth.len() == second.len(), "mcnemar: {} labels, {} and {} predictions", truth.len(), first.len(), second.len());
    let (mut only_first, mut only_second) = (0, 0);
    for ((t, a), b) in truth.iter().zip(first).zip(second) {
        match (a == t, b == t) {
            (true, false) => only_first += 1,
            (false, true) => only_second += 1,
            _ => {}
        }
    }
    let n = only_first + only_second;
    // ln P(X = i) = ln C(n, i) − n ln 2, summed for i ≤ k in log space (n may be thousands).
    let mut log_term = -(n as f64) * std::f64::consts::LN_2;
    let mut terms = Vec::with_capacity(only_first.min(only_second) + 1);
    for i in 0..=only_first.min(only_second) {
        terms.push(log_term);
        log_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_tail = max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln();
    PairedTest { only_first, only_second, p_value: (2.0 * log_tail.exp()).min(1.0) }
}

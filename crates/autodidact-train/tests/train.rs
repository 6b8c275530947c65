//! Evaluation helpers against oracle cases.

use autodidact_train::probe::{ProbeConfig, Standardizer, linear_probe};
use burn::tensor::Device;

/// Four well-separated Gaussian-ish clusters in 6 dimensions (deterministic jitter), with an
/// uninformative constant-offset feature of huge scale that standardization must tame.
fn clusters(n_per: usize, offset: usize) -> (Vec<f32>, Vec<usize>) {
    let dim = 6;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for c in 0..4 {
        for i in 0..n_per {
            let k = (i + offset) as f32;
            for j in 0..dim {
                let centre = if j == c { 3.0 } else { 0.0 };
                let jitter = ((k * 1.7 + j as f32 * 2.3 + c as f32).sin()) * 0.8;
                x.push(if j == 5 { 1000.0 + jitter } else { centre + jitter });
            }
            y.push(c);
        }
    }
    (x, y)
}

#[test]
fn linear_probe_separates_separable_clusters() {
    let (train, train_y) = clusters(50, 0);
    let (test, test_y) = clusters(20, 1000);
    let predicted = linear_probe(&train, &train_y, &test, 6, 4, &ProbeConfig::default(), &Device::flex());
    let correct = predicted.iter().zip(&test_y).filter(|(p, t)| p == t).count();
    assert_eq!(correct, test_y.len(), "{predicted:?}");
}

#[test]
fn standardizer_gives_zero_mean_unit_variance() {
    let (train, _) = clusters(10, 0);
    let z = Standardizer::fit(&train, 6).apply(&train);
    for j in 0..6 {
        let col: Vec<f64> = z.chunks_exact(6).map(|r| f64::from(r[j])).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3, "feature {j}: mean {mean} var {var}");
    }
}

//! Linear probe: multinomial logistic regression on frozen, standardized features, the
//! standard linear evaluation of self-supervised encoders (Chen et al. 2020, §B.6; Kolesnikov
//! et al. 2019), fitted full-batch so the result depends only on the features.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// How the probe is fitted.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// L2 penalty `λ/2 · ‖W‖²` added to the mean cross-entropy.
    pub l2: f64,
    /// Full-batch Adam iterations.
    pub steps: usize,
    /// Adam learning rate (cosine-decayed to zero).
    pub lr: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self { l2: 1e-4, steps: 500, lr: 0.05 }
    }
}

/// Per-feature mean and standard deviation of the training features, applied to any set.
#[derive(Debug, Clone)]
pub struct Standardizer {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Standardizer {
    /// Statistics of `rows` (`[n * dim]`, row-major); constant features get unit scale.
    pub fn fit(rows: &[f32], dim: usize) -> Self {
        let n = (rows.len() / dim.max(1)).max(1) as f64;
        let mut mean = vec![0.0f64; dim];
        let mut sq = vec![0.0f64; dim];
        for r in rows.chunks_exact(dim) {
            for (j, &v) in r.iter().enumerate() {
                mean[j] += f64::from(v);
                sq[j] += f64::from(v) * f64::from(v);
            }
        }
        let mean: Vec<f64> = mean.iter().map(|m| m / n).collect();
        let std = sq.iter().zip(&mean).map(|(s, m)| ((s / n - m * m).max(0.0).sqrt().max(1e-6)) as f32).collect();
        Self { mean: mean.into_iter().map(|m| m as f32).collect(), std }
    }

    /// `(x − mean) / std` per feature.
    pub fn apply(&self, rows: &[f32]) -> Vec<f32> {
        let dim = self.mean.len();
        rows.chunks_exact(dim).flat_map(|r| r.iter().enumerate().map(|(j, &v)| (v - self.mean[j]) / self.std[j])).collect()
    }
}

/// Fits a logistic-regression probe on standardized `train` features and predicts `test`.
///
/// # Shapes
/// - `train`: `[n_train * dim]` row-major, `train_labels`: `[n_train]`
/// - `test`: `[n_test * dim]`, output: `[n_test]` predicted classes
pub fn linear_probe(train: &[f32], train_labels: &[usize], test: &[f32], dim: usize, num_classes: usize, cfg: &ProbeConfig, device: &Device) -> Vec<usize> {
    let standardizer = Standardizer::fit(train, dim);
    let n = train_labels.len();
    let ad = device.clone().autodiff();
    let x = Tensor::<2>::from_data(TensorData::new(standardizer.apply(train), [n, dim]), &ad);
    let y = Tensor::<1, Int>::from_data(TensorData::new(train_labels.iter().map(|&l| l as i64).collect::<Vec<_>>(), [n]), &ad).reshape([n, 1]);
    let mut probe = LinearConfig::new(dim, num_classes).with_initializer(Initializer::Zeros).init(&ad);
    let mut optim = AdamConfig::new().init();
    for step in 0..cfg.steps {
        let nll = log_softmax(probe.forward(x.clone()), 1).gather(1, y.clone()).mean().neg();
        let loss = nll + probe.weight.val().square().sum() * (cfg.l2 / 2.0);
        let grads = GradientsParams::from_grads(loss.backward(), &probe);
        let lr = cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / cfg.steps as f64).cos());
        probe = optim.step(lr, probe, grads);
    }
    let probe: Linear = probe.valid();
    let m = test.len() / dim.max(1);
    let t = Tensor::<2>::from_data(TensorData::new(standardizer.apply(test), [m, dim]), device);
    probe.forward(t).argmax(1).reshape([m]).into_data().try_into_vec_as::<i64>().unwrap_or_default().into_iter().map(|c| c as usize).collect()
}

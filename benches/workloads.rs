//! The training workloads autodidact is benchmarked on, shared by the criterion benches
//! (`benches/train_step.rs`) and the side-by-side driver against PyTorch
//! (`examples/bench_workload.rs`, run by `scripts/bench-vs-pytorch.sh`).
//!
//! A step is what the trainer does per optimizer step without logging: forward, loss read
//! back to the host, backward, AdamW (decay on matrices only, as `build_optimizer`).
//! Inputs are synthetic and generated before timing; `scripts/bench/torch_bench.py` builds
//! the same models, shapes and inputs in PyTorch.

#![allow(dead_code)]

use std::time::Instant;

use autodidact::burn::module::Module;
use autodidact::burn::optim::{GradientsParams, ModuleOptimizer};
use autodidact::burn::tensor::Device;
use autodidact::core::batch::{ImageBatch, MlmBatch};
use autodidact::core::objective::Objective;
use autodidact::models::bert::BertConfig;
use autodidact::models::heads::{ImageEncoderConfig, ProjectionHead};
use autodidact::models::mae::{Mae, MaeDecoderConfig};
use autodidact::models::resnet::ResNetConfig;
use autodidact::models::vit::{VitConfig, VitPool};
use autodidact::objectives::mae::MaskedAutoencoder;
use autodidact::objectives::mlm::Mlm;
use autodidact::objectives::simclr::SimClr;
use autodidact::train::optim::build_optimizer;
use autodidact::train::trainer::{AdamWSettings, prepare_model};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Batches generated per workload and cycled through.
const DISTINCT_BATCHES: usize = 4;

/// A benchmarked workload, by the name the scripts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// MLM: BERT h128, 2 layers, 4 heads, FFN 512, vocab 8192, seq 128, batch 32.
    MlmSmall,
    /// MLM: BERT h256, 4 layers, 4 heads, FFN 1024, vocab 8192, seq 128, batch 32.
    MlmBase,
    /// SimCLR: ResNet-18 layout width 16, 32×32×3, batch 256 (512 views), projection 128.
    SimclrResnet,
    /// MAE: ViT dim 192, depth 4, 3 heads, patch 4 on 32×32×3; decoder 96×2; 75% masked; batch 256.
    MaeVit,
}

impl Workload {
    /// All workloads, in table order.
    pub const ALL: [Workload; 4] = [Workload::MlmSmall, Workload::MlmBase, Workload::SimclrResnet, Workload::MaeVit];

    /// The name used on command lines and in result tables.
    pub fn name(self) -> &'static str {
        match self {
            Workload::MlmSmall => "mlm-small",
            Workload::MlmBase => "mlm-base",
            Workload::SimclrResnet => "simclr-resnet",
            Workload::MaeVit => "mae-vit",
        }
    }

    /// Parses [`Workload::name`].
    pub fn parse(name: &str) -> Option<Workload> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// What one step processes: (count, unit).
    pub fn items_per_step(self) -> (usize, &'static str) {
        match self {
            Workload::MlmSmall | Workload::MlmBase => (BATCH_MLM * SEQ, "tokens"),
            Workload::SimclrResnet | Workload::MaeVit => (BATCH_IMAGES, "images"),
        }
    }
}

const SEQ: usize = 128;
const BATCH_MLM: usize = 32;
const VOCAB: usize = 8192;
const BATCH_IMAGES: usize = 256;
const IMAGE: usize = 32;

/// Measured step times of one workload.
#[derive(Debug, Clone)]
pub struct StepTimes {
    /// Seconds per step, warm-up excluded.
    pub seconds: Vec<f64>,
    /// Trainable parameters (BatchNorm running statistics excluded).
    pub params: usize,
}

/// A BERT config of the benchmark shapes.
pub fn bert_config(hidden: usize, layers: usize, ffn: usize) -> BertConfig {
    BertConfig {
        vocab_size: VOCAB,
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        intermediate_size: ffn,
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        max_position_embeddings: SEQ,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
    }
}

/// MLM batches: ids uniform over the non-special vocabulary, 15% of positions masked
/// (replaced by `[MASK]` = 4), no padding.
pub fn mlm_batches(rows: usize, seq: usize, vocab: usize, seed: u64) -> Vec<MlmBatch> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..DISTINCT_BATCHES)
        .map(|_| {
            let n = rows * seq;
            let ids: Vec<u32> = (0..n).map(|_| rng.random_range(5..vocab as u32)).collect();
            let masked_positions: Vec<u32> = (0..n as u32).filter(|_| rng.random_bool(0.15)).collect();
            let masked_labels = masked_positions.iter().map(|&p| ids[p as usize]).collect();
            let mut input_ids = ids;
            for &p in &masked_positions {
                input_ids[p as usize] = 4;
            }
            MlmBatch { batch_size: rows, seq_len: seq, token_type_ids: vec![0; n], attention_mask: vec![1; n], input_ids, masked_positions, masked_labels }
        })
        .collect()
}

/// Image batches of `views` views per image, pixels uniform in [-1, 1).
pub fn image_batches(images: usize, views: usize, channels: usize, side: usize, seed: u64) -> Vec<ImageBatch> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..DISTINCT_BATCHES)
        .map(|_| {
            let pixels = (0..images * views * channels * side * side).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            ImageBatch { batch_size: images, views, channels, height: side, width: side, pixels, labels: Vec::new() }
        })
        .collect()
}

/// The SimCLR objective of [`Workload::SimclrResnet`] with ResNet `width` and `blocks`.
pub fn simclr(width: usize, blocks: Vec<usize>, projection: usize, device: &Device) -> SimClr {
    let encoder = ImageEncoderConfig::Resnet(ResNetConfig { in_channels: 3, width, blocks });
    let dim = encoder.feature_dim();
    let encoder = encoder.init(device).expect("valid ResNet config");
    SimClr::new(encoder, ProjectionHead::new(dim, dim, projection, device), 0.5)
}

/// The MAE objective of [`Workload::MaeVit`] with encoder `dim` and `depth`.
pub fn mae(side: usize, dim: usize, depth: usize, heads: usize, decoder: MaeDecoderConfig, device: &Device) -> MaskedAutoencoder {
    let vit = VitConfig { image_size: side, patch_size: 4, in_channels: 3, dim, depth, heads, mlp_ratio: 4, pool: VitPool::Cls };
    MaskedAutoencoder::new(Mae::init(&vit, &decoder, device).expect("valid MAE config"), 0.75, true)
}

/// One objective with its optimizer and its batches: what a training step needs.
pub struct Stepper<O: Objective> {
    model: Option<O>,
    optimizer: ModuleOptimizer,
    batches: Vec<O::Batch>,
    device: Device,
    next: usize,
}

impl<O: Objective> Stepper<O> {
    /// `objective` built on the autodiff `device`; `batches` are cycled.
    pub fn new(objective: O, batches: Vec<O::Batch>, device: &Device) -> Self {
        let model = prepare_model(objective, 0, device);
        let optimizer = build_optimizer(&AdamWSettings { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 });
        Self { model: Some(model), optimizer, batches, device: device.clone(), next: 0 }
    }

    /// Trainable parameters of the model.
    pub fn params(&self) -> usize {
        self.model.as_ref().map_or(0, trainable_params)
    }

    /// One training step; returns the loss.
    pub fn step(&mut self) -> f32 {
        let model = self.model.take().expect("model present between steps");
        let out = model.forward(&self.batches[self.next % self.batches.len()], &self.device);
        self.next += 1;
        let loss = out.loss.clone().into_scalar::<f32>();
        assert!(loss.is_finite(), "non-finite loss {loss} at step {}", self.next);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        self.model = Some(self.optimizer.step(1e-4, model, grads));
        // Wait for the update (lazy backends) before the caller stops the clock.
        self.device.sync().expect("device sync");
        loss
    }
}

/// Runs `warmup + steps` training steps of `objective` on `batches` (cycled) on an
/// autodiff `device`; returns the times of the last `steps`.
pub fn time_steps<O: Objective>(objective: O, batches: Vec<O::Batch>, device: &Device, warmup: usize, steps: usize) -> StepTimes {
    let mut stepper = Stepper::new(objective, batches, device);
    let mut seconds = Vec::with_capacity(steps);
    for s in 0..warmup + steps {
        let start = Instant::now();
        stepper.step();
        if s >= warmup {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    StepTimes { seconds, params: stepper.params() }
}

/// Parameters the optimizer updates (burn's `num_params` also counts BatchNorm running
/// statistics, which PyTorch keeps as buffers).
fn trainable_params<M: Module>(model: &M) -> usize {
    use autodidact::burn::module::ModuleVisitor;
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &autodidact::burn::module::Param<autodidact::burn::tensor::Tensor<D>>) {
            if param.val().is_require_grad() {
                self.0 += param.lazy_shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

/// Runs workload `w` on `device` (made autodiff here).
pub fn run(w: Workload, device: &Device, warmup: usize, steps: usize) -> StepTimes {
    let device = device.clone().autodiff();
    device.seed(0);
    match w {
        Workload::MlmSmall | Workload::MlmBase => {
            let config = if w == Workload::MlmSmall { bert_config(128, 2, 512) } else { bert_config(256, 4, 1024) };
            time_steps(Mlm::init(&config, 0.0, &device), mlm_batches(BATCH_MLM, SEQ, VOCAB, 1), &device, warmup, steps)
        }
        Workload::SimclrResnet => time_steps(simclr(16, vec![2, 2, 2, 2], 128, &device), image_batches(BATCH_IMAGES, 2, 3, IMAGE, 2), &device, warmup, steps),
        Workload::MaeVit => {
            let decoder = MaeDecoderConfig { dim: 96, depth: 2, heads: 3 };
            time_steps(mae(IMAGE, 192, 4, 3, decoder, &device), image_batches(BATCH_IMAGES, 1, 3, IMAGE, 3), &device, warmup, steps)
        }
    }
}

/// Best fp32 GEMM rate of `device` in GFLOP/s: 2048 × 2048 matrices, best of 10 after a
/// warm-up (the machine-peak reference of the MFU column, beside PyTorch's own).
pub fn gemm_peak(device: &Device) -> f64 {
    use autodidact::burn::tensor::{Distribution, Tensor};
    const N: usize = 2048;
    let a = Tensor::<2>::random([N, N], Distribution::Default, device);
    let b = Tensor::<2>::random([N, N], Distribution::Default, device);
    let run = || {
        let start = Instant::now();
        let c = a.clone().matmul(b.clone());
        device.sync().expect("device sync");
        drop(c);
        start.elapsed().as_secs_f64()
    };
    run();
    let best = (0..10).map(|_| run()).fold(f64::INFINITY, f64::min);
    2.0 * (N as f64).powi(3) / best / 1e9
}

/// Median of `v` (upper median for even lengths).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

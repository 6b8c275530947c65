//! One training step (forward, backward, AdamW) per objective, on the default CPU backend,
//! at sizes that keep the whole bench to a few minutes on 2 cores. The full-size
//! workloads compared with PyTorch are in `scripts/bench-vs-pytorch.sh`.
//!
//! ```text
//! cargo bench -p autodidact --bench train_step
//! RAYON_NUM_THREADS=1 cargo bench -p autodidact --bench train_step -- mlm
//! ```

#![allow(missing_docs)] // criterion_group! generates undocumented functions

#[path = "workloads.rs"]
mod workloads;

use std::time::Duration;

use autodidact::burn::tensor::Device;
use autodidact::core::batch::ClassificationBatch;
use autodidact::models::bert::Pooling;
use autodidact::models::mae::MaeDecoderConfig;
use autodidact::objectives::classify::SequenceClassifier;
use autodidact::objectives::mlm::Mlm;
use autodidact::objectives::simcse::{PairViews, SimCse};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use workloads::{Stepper, bert_config, image_batches, mae, mlm_batches, simclr};

const SEQ: usize = 128;
const ROWS: usize = 8;

fn bench<O: autodidact::core::objective::Objective>(c: &mut Criterion, name: &str, throughput: Throughput, objective: O, batches: Vec<O::Batch>, device: &Device) {
    let mut stepper = Stepper::new(objective, batches, device);
    stepper.step(); // warm-up: first-touch allocations
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(throughput);
    group.bench_function(name, |b| b.iter(|| stepper.step()));
    group.finish();
}

fn train_steps(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    device.seed(0);
    let bert = bert_config(128, 2, 512);
    let tokens = Throughput::Elements((ROWS * SEQ) as u64);
    bench(c, "mlm", tokens.clone(), Mlm::init(&bert, 0.0, &device), mlm_batches(ROWS, SEQ, bert.vocab_size, 1), &device);
    bench(c, "simcse", tokens.clone(), SimCse::new(bert.init(&device), 0.05, Pooling::Cls, PairViews::Dropout), mlm_batches(ROWS, SEQ, bert.vocab_size, 2), &device);
    let classify: Vec<ClassificationBatch> = mlm_batches(ROWS, SEQ, bert.vocab_size, 3)
        .into_iter()
        .map(|b| ClassificationBatch { batch_size: b.batch_size, seq_len: b.seq_len, labels: (0..b.batch_size as u32).map(|i| i % 4).collect(), input_ids: b.input_ids, token_type_ids: b.token_type_ids, attention_mask: b.attention_mask })
        .collect();
    bench(c, "finetune", tokens, SequenceClassifier::new(bert.init(&device), 4, Pooling::Cls, 0.1, false, &device), classify, &device);
    let images = 32;
    bench(c, "simclr", Throughput::Elements(images as u64), simclr(8, vec![1, 1, 1], 32, &device), image_batches(images, 2, 3, 32, 4), &device);
    let decoder = MaeDecoderConfig { dim: 32, depth: 1, heads: 2 };
    bench(c, "mae", Throughput::Elements(images as u64), mae(32, 64, 2, 2, decoder, &device), image_batches(images, 1, 3, 32, 5), &device);
}

criterion_group!(benches, train_steps);
criterion_main!(benches);

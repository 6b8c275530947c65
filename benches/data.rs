//! Data-pipeline throughput: tokenizing and sharding a corpus (MB/s of text), SimCLR
//! augmentation (images/s), and the batch samplers the trainer's data thread runs (MLM
//! sequences/s, augmented image batches/s). The trainer must never wait for these; its
//! `data_wait_fraction` in `summary.json` shows whether it did.
//!
//! ```text
//! cargo bench -p autodidact --bench data
//! ```

#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use autodidact::core::objective::BatchStream;
use autodidact::data::augment::{Augment, ImageBatches};
use autodidact::data::images::ImageSet;
use autodidact::data::mlm::{MlmBatches, MlmMasker, PackedSequences, Views};
use autodidact::data::shards::{self, ShardOptions, TokenStream};
use autodidact::data::source::{TextFormat, TextSource};
use autodidact::data::tokenizer::{TextTokenizer, TokenizerKind, TokenizerTrainSpec};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/corpus/gutenberg");

fn corpus() -> (TextSource, TextTokenizer, u64) {
    let source = TextSource::open(Path::new(CORPUS), TextFormat::Auto, "text").expect("embedded corpus");
    let bytes = source.chunks().map(|c| c.text.len() as u64).sum();
    let spec = TokenizerTrainSpec { kind: TokenizerKind::WordPiece, vocab_size: 8192, lowercase: true, min_frequency: 2 };
    let (tokenizer, _) = TextTokenizer::train(&source, &spec).expect("tokenizer trains");
    (source, tokenizer, bytes)
}

/// Tokenize and shard the embedded corpus into a fresh directory (what `pretrain` does
/// before its first step), in MB/s of decompressed text.
fn sharding(c: &mut Criterion) {
    let (source, tokenizer, bytes) = corpus();
    let mut group = c.benchmark_group("corpus");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Bytes(bytes));
    group.bench_function("tokenize_and_shard", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |dir| shards::build_or_reuse(&source, &tokenizer, &dir.path().join("shards"), &ShardOptions::default()).expect("shards build"),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Random u8 images, `n` of `side`×`side`×`channels`.
fn images(n: usize, side: usize, channels: usize) -> ImageSet {
    let mut rng = StdRng::seed_from_u64(0);
    let pixels = (0..n * side * side * channels).map(|_| rng.random::<u8>()).collect();
    ImageSet::from_raw(side, side, channels, pixels, None).expect("valid image set")
}

/// The SimCLR recipe on one 32×32 RGB image per iteration.
fn augmentation(c: &mut Criterion) {
    let set = images(64, 32, 3);
    let augment = Augment::simclr((32, 32), 3, vec![0.5; 3], vec![0.25; 3]);
    let mut out = vec![0.0f32; augment.view_len(3)];
    let mut rng = StdRng::seed_from_u64(1);
    let mut group = c.benchmark_group("augment");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("simclr_32x32x3", |b| {
        b.iter(|| {
            i = (i + 1) % set.len();
            augment.apply(set.image(i), 32, 32, 3, &mut rng, &mut out);
        })
    });
    group.finish();
}

/// The batch streams the trainer's data thread pulls from.
fn samplers(c: &mut Criterion) {
    let (source, tokenizer, _) = corpus();
    let dir = tempfile::tempdir().expect("temp dir");
    let index = shards::build_or_reuse(&source, &tokenizer, dir.path(), &ShardOptions::default()).expect("shards build");
    let stream = TokenStream::open(dir.path(), &index, &index.train).expect("train split opens");
    let special = tokenizer.special();
    let sequences = PackedSequences::new(stream, 128, special.cls, "train").expect("sequences");
    let masker = MlmMasker::new(special, tokenizer.vocab_size(), 0.15, 0.8, 0.1).expect("masker");
    let mut batches = MlmBatches::new(sequences, Views::Masked(masker), 32, 0);
    let mut group = c.benchmark_group("sampler");
    group.throughput(Throughput::Elements(32));
    let mut k = 0;
    group.bench_function("mlm_batch_32x128", |b| {
        b.iter(|| {
            k += 1;
            batches.train_batch(k).expect("shards readable")
        })
    });

    let set = Arc::new(images(1024, 32, 3));
    let augment = Augment::simclr((32, 32), 3, vec![0.5; 3], vec![0.25; 3]);
    let mut stream = ImageBatches::new(set, (0..1024).collect(), augment, 2, 256, 0).expect("image batches");
    group.throughput(Throughput::Elements(256));
    group.sample_size(10);
    let mut k = 0;
    group.bench_function("simclr_batch_256x2_32x32x3", |b| {
        b.iter(|| {
            k += 1;
            stream.train_batch(k).expect("in-memory images")
        })
    });
    group.finish();
}

criterion_group!(benches, sharding, augmentation, samplers);
criterion_main!(benches);

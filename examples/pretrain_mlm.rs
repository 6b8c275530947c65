//! Masked-language-model pretraining with the library API, no CLI or config file:
//! corpus → tokenizer → token shards → batches → BERT + MLM objective → trainer.
//!
//! ```text
//! cargo run --release --example pretrain_mlm [CORPUS_DIR]
//! ```

use std::path::PathBuf;

use anyhow::Result;
use autodidact::burn::tensor::Device;
use autodidact::data::mlm::{MlmBatches, MlmData, MlmMasker, PackedSequences, Views};
use autodidact::data::shards::{self, ShardOptions, TokenStream};
use autodidact::data::source::{TextFormat, TextSource};
use autodidact::data::tokenizer::{TextTokenizer, TokenizerKind, TokenizerTrainSpec};
use autodidact::models::bert::BertConfig;
use autodidact::objectives::mlm::Mlm;
use autodidact::train::schedule::{Decay, LrSchedule};
use autodidact::train::trainer::{AdamWSettings, NonFinitePolicy, RunDir, TrainConfig, prepare_model, train};

fn main() -> Result<()> {
    let corpus = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| "assets/corpus/gutenberg/carroll-alice.txt.gz".into());
    let run_dir = PathBuf::from("runs/example-mlm");
    std::fs::create_dir_all(&run_dir)?;
    let (seed, seq_len, batch_size) = (0, 64, 32);

    // 1. Corpus and tokenizer: a WordPiece vocabulary trained on the corpus itself.
    let source = TextSource::open(&corpus, TextFormat::Auto, "text")?;
    let spec = TokenizerTrainSpec { kind: TokenizerKind::WordPiece, vocab_size: 1000, lowercase: true, min_frequency: 2 };
    let (tokenizer, _) = TextTokenizer::train(&source, &spec)?;
    tokenizer.save(&run_dir.join("tokenizer.json"))?;

    // 2. Tokenize once into memory-mapped shards with a 5% held-out split.
    let shard_dir = run_dir.join("shards");
    let index = shards::build_or_reuse(&source, &tokenizer, &shard_dir, &ShardOptions { heldout_fraction: 0.05, seed, ..Default::default() })?;

    // 3. Packed sequences, dynamic 15% masking (80/10/10), seeded batches.
    let special = tokenizer.special();
    let masker = MlmMasker::new(special, tokenizer.vocab_size(), 0.15, 0.8, 0.1)?;
    let batches = |split| -> Result<MlmBatches> {
        let seqs = PackedSequences::new(TokenStream::open(&shard_dir, &index, split)?, seq_len, special.cls, "split")?;
        Ok(MlmBatches::new(seqs, Views::Masked(masker.clone()), batch_size, seed))
    };
    let data = MlmData { train: batches(&index.train)?, heldout: batches(&index.heldout)?, eval_batches: 4 };

    // 4. A small BERT with its tied MLM head, on burn's flex CPU backend with autodiff.
    let device = Device::flex().autodiff();
    let bert = BertConfig {
        vocab_size: tokenizer.vocab_size(),
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 128,
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        max_position_embeddings: seq_len,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
    };
    bert.validate()?;
    let objective = prepare_model(Mlm::init(&bert, 0.0, &device), seed, &device);

    // 5. Train: AdamW, warm-up then cosine decay, global-norm clipping, checkpoints.
    let steps = 200;
    let cfg = TrainConfig {
        seed,
        max_steps: steps,
        grad_accum: 1,
        adamw: AdamWSettings { beta1: 0.9, beta2: 0.999, eps: 1e-6, weight_decay: 0.01 },
        schedule: LrSchedule { peak: 5e-3, min_lr: 1e-4, warmup_steps: 20, total_steps: steps, decay: Decay::Cosine },
        clip_grad_norm: Some(1.0),
        log_every: 20,
        eval_every: 100,
        checkpoint_every: 0,
        early_stopping: None,
        keep_last: 1,
        prefetch: 4,
        progress: true,
        on_nonfinite: NonFinitePolicy::Stop,
        max_skipped_steps: 0,
        handle_signals: true,
    };
    let (_model, summary) = train(objective, data, &device, &RunDir { root: run_dir.clone() }, &cfg, false)?;
    println!(
        "held-out loss {:.3} -> {:.3}, masked-token accuracy {:.1}%, {:.0} tokens/s; run in {}",
        summary.initial_eval_loss.unwrap_or(f64::NAN),
        summary.final_eval["eval_loss"],
        100.0 * summary.final_eval["eval_accuracy"],
        summary.tokens_per_s,
        run_dir.display()
    );
    Ok(())
}

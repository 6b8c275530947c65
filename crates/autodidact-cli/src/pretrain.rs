//! `autodidact pretrain`: corpus → tokenizer → shards → model → trainer → summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use autodidact_core::batch::MlmBatch;
use autodidact_data::mlm::{CropViews, MlmBatches, MlmData, MlmMasker, PackedSequences, Views};
use autodidact_data::shards::{self, ShardIndex, ShardOptions, TokenStream};
use autodidact_data::source::TextSource;
use autodidact_data::tokenizer::{TextTokenizer, TokenizerTrainSpec};
use autodidact_objectives::mlm::Mlm;
use autodidact_models::bert::BertConfig;
use autodidact_objectives::simcse::{PairViews, SimCse};
use autodidact_train::params::with_stable_ids;
use autodidact_train::trainer::{RunDir, TrainSummary, prepare_model, train};
use burn::tensor::Device;
use serde_json::json;

use crate::config::{Backend, Config, ObjectiveSection};
use crate::init::Pretrained;

/// [`autodidact_core::fsutil::write_atomic`] with the path in the error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    autodidact_core::fsutil::write_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// The resolved model config of a run (HF `BertConfig` names), so that a run directory is
/// self-contained for `export` whatever `model.init_from` pointed to.
pub const MODEL_CONFIG_FILE: &str = "model_config.json";

/// Reads a run's resolved model config.
///
/// # Errors
/// Missing or malformed file.
pub fn read_model_config(run_dir: &Path) -> Result<BertConfig> {
    let path = run_dir.join(MODEL_CONFIG_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {} (is {} a run directory?)", path.display(), run_dir.display()))?;
    let config: BertConfig = serde_json::from_slice(&bytes).with_context(|| format!("{}: malformed", path.display()))?;
    config.validate()?;
    Ok(config)
}

/// What `pretrain` was asked to do.
pub struct PretrainArgs {
    /// The validated config.
    pub config: Config,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Continue from the newest checkpoint in `run_dir`.
    pub resume: bool,
    /// Backend override.
    pub backend: Backend,
    /// Show the progress bar.
    pub progress: bool,
}

/// Picks the device for a backend.
///
/// # Errors
/// `wgpu` requested in a build without the `wgpu` feature.
pub fn device_for(backend: Backend) -> Result<Device> {
    Ok(match backend {
        Backend::Flex => Device::flex(),
        #[allow(deprecated)]
        Backend::Ndarray => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(not(feature = "wgpu"))]
        Backend::Wgpu => bail!("this build has no GPU support: rebuild with `cargo build --release -p autodidact-cli --features wgpu`"),
    })
}

/// Runs pretraining and writes `summary.json`; returns the summary.
///
/// # Errors
/// Any data, model, training or I/O error, with context.
pub fn run(args: PretrainArgs) -> Result<serde_json::Value> {
    let PretrainArgs { config, run_dir, resume, backend, progress } = args;
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    let resolved = toml::to_string_pretty(&config).context("cannot serialize the resolved config")?;
    write_atomic(&run_dir.join("config.toml"), resolved.as_bytes())?;

    // Tokenizer: the run's own copy wins (resume), then the pretrained model's, then a
    // configured file, then training.
    let source = TextSource::open(&config.data.path, config.data.format, &config.data.text_field).context("data.path")?;
    let tokenizer_path = run_dir.join("tokenizer.json");
    let t = config.tokenizer();
    let mut prep = Preparation::default();
    let resuming = resume && tokenizer_path.exists();
    // Weights (and tokenizer) from `init_from`, unless resuming, when the run has its own.
    let pretrained = match &config.model.init_from {
        Some(dir) if !resuming => Some(Pretrained::open(dir).context("model.init_from")?),
        _ => None,
    };
    let tokenizer = if resuming {
        TextTokenizer::load(&tokenizer_path)?
    } else if let Some(p) = &pretrained {
        p.tokenizer.clone()
    } else if let Some(path) = &t.path {
        TextTokenizer::load(path).context("tokenizer.path")?
    } else {
        eprintln!("training a {:?} tokenizer (vocab {}) on {} file(s) ...", t.kind, t.vocab_size, source.num_files());
        let spec = TokenizerTrainSpec { kind: t.kind, vocab_size: t.vocab_size, lowercase: t.lowercase, min_frequency: t.min_frequency };
        let start = Instant::now();
        let trained = TextTokenizer::train(&source, &spec)?.0;
        prep.tokenizer_s = Some(start.elapsed().as_secs_f64());
        trained
    };
    tokenizer.save(&tokenizer_path)?;
    let vocab_size = tokenizer.vocab_size();

    let opts = ShardOptions { heldout_fraction: config.data.heldout_fraction, seed: config.run.seed, ..ShardOptions::default() };
    let shard_dir = run_dir.join("shards");
    eprintln!("tokenizing the corpus into {} ...", shard_dir.display());
    let start = Instant::now();
    let (index, built) = shards::prepare(&source, &tokenizer, &shard_dir, &opts)?;
    let mb = index.source.bytes as f64 / 1e6;
    let tokens = index.train.tokens + index.heldout.tokens;
    if built {
        let s = start.elapsed().as_secs_f64();
        prep.shards_s = Some(s);
        eprintln!("{mb:.1} MB of text, {tokens} tokens: tokenized and sharded in {s:.1} s ({:.1} MB/s)", mb / s.max(1e-9));
    } else {
        eprintln!("{mb:.1} MB of text, {tokens} tokens: shards reused (same corpus files, tokenizer and split)");
    }
    for skipped in &index.source.files_skipped {
        eprintln!("warning: skipped unreadable file {skipped}");
    }

    let special = tokenizer.special();
    let seq_len = config.data.seq_len;
    let seed = config.run.seed;
    // MLM masks packed sequences of seq_len; SimCSE uses them whole, or samples regions
    // of crop_region tokens and crops two views of seq_len from each.
    let (views, packed_len) = match &config.objective {
        ObjectiveSection::Mlm(mlm) => (Views::Masked(MlmMasker::new(special, vocab_size, mlm.mask_ratio, mlm.mask_token_prob, mlm.random_token_prob)?), seq_len),
        ObjectiveSection::Simcse(c) => match c.views {
            PairViews::Dropout => (Views::Whole, seq_len),
            PairViews::Crops => (Views::Crops(CropViews { seq_len, sep: special.sep, pad: special.pad }), c.crop_region(seq_len) + 1),
        },
    };
    let batches = |name: &str, s| -> Result<MlmBatches> {
        let stream = TokenStream::open(&shard_dir, &index, s)?;
        let seqs = PackedSequences::new(stream, packed_len, special.cls, name)?;
        Ok(MlmBatches::new(seqs, views.clone(), config.train.batch_size, seed))
    };
    let data = MlmData {
        train: batches("training", &index.train)?,
        heldout: batches("held-out", &index.heldout)?,
        eval_batches: config.train.eval_batches,
    };
    let baseline = match views {
        Views::Masked(_) => Some(unigram_baseline(&index, &data.heldout.eval_batches(config.train.eval_batches)?, &special.all())),
        Views::Whole | Views::Crops(_) => None,
    };

    let device = device_for(backend)?.autodiff();
    let bert = config.bert_config(vocab_size)?;
    bert.validate()?;
    if vocab_size > bert.vocab_size {
        bail!("the tokenizer has {vocab_size} tokens but the model (model.init_from config.json) only {}", bert.vocab_size);
    }
    let bert_json = serde_json::to_vec_pretty(&bert)?;
    write_atomic(&run_dir.join(MODEL_CONFIG_FILE), &bert_json)?;
    let unit = match views {
        Views::Crops(_) => format!("regions of {} tokens (two crops of {seq_len} from each)", packed_len - 1),
        Views::Masked(_) | Views::Whole => format!("sequences of {seq_len} tokens"),
    };
    let sizes = format!("{} training and {} held-out {unit}; backend {backend:?}", data.train.num_sequences(), data.heldout.num_sequences());
    let run = RunDir { root: run_dir.clone() };
    let train_cfg = config.train_config(progress);
    let (summary, import) = match &config.objective {
        ObjectiveSection::Mlm(mlm) => {
            let mut objective = prepare_model(Mlm::init(&bert, mlm.label_smoothing, &device), seed, &device);
            let mut import = None;
            if let Some(p) = &pretrained {
                let (model, report) = p.load_masked_lm(objective.model)?;
                objective = with_stable_ids(Mlm::from_model(model, mlm.label_smoothing));
                import = Some(report);
            }
            announce(&objective, import.as_ref(), &sizes);
            (train(objective, data, &device, &run, &train_cfg, resume)?.1, import)
        }
        ObjectiveSection::Simcse(c) => {
            let mut objective = prepare_model(SimCse::new(bert.init(&device), c.temperature, c.pooling, c.views), seed, &device);
            let mut import = None;
            if let Some(p) = &pretrained {
                let (encoder, report) = p.load_encoder(&bert, &device)?;
                objective = with_stable_ids(SimCse::new(encoder, c.temperature, c.pooling, c.views));
                import = Some(report);
            }
            announce(&objective, import.as_ref(), &sizes);
            (train(objective, data, &device, &run, &train_cfg, resume)?.1, import)
        }
    };
    let mut report = summary_json(&config, &run_dir, &summary, &index, &prep, baseline.as_ref(), backend);
    if let Some(import) = import {
        report["init_from"] = import;
    }
    let bytes = serde_json::to_vec_pretty(&report)?;
    write_atomic(&run_dir.join("summary.json"), &bytes)?;
    Ok(report)
}

fn announce<M: burn::module::Module>(objective: &M, import: Option<&serde_json::Value>, sizes: &str) {
    if let Some(import) = import {
        eprintln!("initialized from {import}");
    }
    eprintln!("model: {} parameters; data: {sizes}", objective.num_params());
}

/// Unigram baselines on the evaluation targets: the accuracy of always predicting the most
/// frequent training token (on all targets and on the replaced ones, as
/// `eval_context_accuracy`), and the cross-entropy of the (add-one smoothed) training
/// unigram distribution.
struct Baseline {
    accuracy: f64,
    context_accuracy: f64,
    loss: f64,
}

fn unigram_baseline(index: &ShardIndex, eval: &[MlmBatch], specials: &[u32]) -> Baseline {
    let counts = &index.train_counts;
    let total: f64 = counts.iter().sum::<u64>() as f64 + counts.len() as f64;
    let top = (0..counts.len() as u32).filter(|t| !specials.contains(t)).max_by_key(|&t| counts[t as usize]).unwrap_or(0);
    let (mut hits, mut nll, mut n) = (0usize, 0.0, 0usize);
    let (mut replaced_hits, mut replaced) = (0usize, 0usize);
    for batch in eval {
        for (label, was_replaced) in batch.masked_labels.iter().zip(batch.replaced_targets()) {
            let hit = usize::from(*label == top);
            hits += hit;
            replaced_hits += hit * usize::from(was_replaced);
            replaced += usize::from(was_replaced);
            let c = counts.get(*label as usize).copied().unwrap_or(0) as f64 + 1.0;
            nll -= (c / total).ln();
            n += 1;
        }
    }
    Baseline { accuracy: hits as f64 / n.max(1) as f64, context_accuracy: replaced_hits as f64 / replaced.max(1) as f64, loss: nll / n.max(1) as f64 }
}

/// Wall times of data preparation in this process.
#[derive(Debug, Default)]
struct Preparation {
    /// Tokenizer training, when this run trained one.
    tokenizer_s: Option<f64>,
    /// Tokenizing and sharding the corpus, unless the shards were reused.
    shards_s: Option<f64>,
}

fn summary_json(config: &Config, run_dir: &Path, s: &TrainSummary, index: &ShardIndex, prep: &Preparation, baseline: Option<&Baseline>, backend: Backend) -> serde_json::Value {
    json!({
        "run": config.run.name,
        "run_dir": run_dir,
        "backend": format!("{backend:?}").to_lowercase(),
        "objective": s.objective,
        "steps": s.steps,
        "num_params": s.num_params,
        "examples_seen": s.examples_seen,
        "tokens_seen": s.tokens_seen,
        "wall_time_s": s.wall_time_s,
        "tokens_per_s": s.tokens_per_s,
        "data_wait_fraction": s.data_wait_fraction,
        "skipped_steps": s.skipped_steps,
        "initial_eval_loss": s.initial_eval_loss,
        "final_eval": s.final_eval,
        "eval_loss_drop": s.eval_loss_drop,
        "unigram_baseline": baseline.map(|b| json!({"eval_accuracy": b.accuracy, "eval_context_accuracy": b.context_accuracy, "eval_loss": b.loss})),
        "last_checkpoint": s.last_checkpoint,
        "corpus": {
            "files_read": index.source.files_read,
            "files_skipped": index.source.files_skipped,
            "documents": index.source.documents,
            "invalid_utf8_documents": index.source.invalid_utf8_documents,
            "bad_jsonl_lines": index.source.bad_lines,
            "bytes": index.source.bytes,
            "tokenizer_training_s": prep.tokenizer_s,
            "sharding_s": prep.shards_s,
            "train_tokens": index.train.tokens,
            "heldout_tokens": index.heldout.tokens,
            "vocab_size": index.vocab_size,
        },
    })
}

//! `autodidact export`: a run's checkpoint as a HuggingFace model directory.
//!
//! The directory is built under a temporary name, read back and checked (config, every
//! tensor bit for bit, the tokenizer's encodings), fsynced, and only then renamed into place.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use autodidact_data::labeled::Encoded;
use autodidact_data::tokenizer::TextTokenizer;
use autodidact_models::bert::{BertForMaskedLM, BertInput};
use autodidact_models::hf::{self, HfArchitecture};
use autodidact_objectives::mlm::Mlm;
use autodidact_train::checkpoint::{self, Checkpoints};
use burn::tensor::{Device, Tensor};

/// Texts the export is checked on, and the parity sample is computed for: sentences, a
/// pair (token types 0 and 1) and a short input (padding).
const SAMPLE: [(&str, Option<&str>); 4] = [
    ("The quick brown fox jumps over the lazy dog.", None),
    ("It was the best of times, it was the worst of times.", Some("Call me Ishmael, said the stranger at the door.")),
    ("Alice was beginning to get very tired of sitting by her sister on the bank.", None),
    ("Hello!", None),
];

/// What `export` was asked to do.
pub struct ExportArgs {
    /// The run directory.
    pub run_dir: PathBuf,
    /// A checkpoint directory of the run; default: its newest valid one.
    pub checkpoint: Option<PathBuf>,
    /// Where to write the model directory.
    pub out: PathBuf,
    /// `BertModel` (encoder only) instead of `BertForMaskedLM`.
    pub encoder_only: bool,
    /// Replace `out` if it exists.
    pub overwrite: bool,
    /// Also write inputs and this model's outputs on a fixed sample, for
    /// `scripts/reference/hf_export_check.py`.
    pub parity_sample: Option<PathBuf>,
}

/// Exports and returns the checkpoint directory used.
///
/// # Errors
/// No valid checkpoint, an existing `out` without `overwrite`, I/O failure, or a
/// read-back that differs from what was written.
pub fn run(args: &ExportArgs) -> Result<PathBuf> {
    if args.out.exists() && !args.overwrite {
        bail!("{} already exists: pass --overwrite to replace it", args.out.display());
    }
    let tokenizer = TextTokenizer::load(&args.run_dir.join("tokenizer.json"))?;
    let bert = if args.run_dir.join(crate::pretrain::MODEL_CONFIG_FILE).exists() || !args.run_dir.join("config.toml").exists() {
        crate::pretrain::read_model_config(&args.run_dir)?
    } else {
        // Runs written before model_config.json existed: resolve the model from config.toml.
        crate::config::load(&args.run_dir.join("config.toml"), &[])?.bert_config(tokenizer.vocab_size())?
    };
    let ckpt = match &args.checkpoint {
        Some(dir) => dir.clone(),
        None => {
            let (latest, warnings) = Checkpoints::new(args.run_dir.join("checkpoints")).latest_valid();
            for w in warnings {
                eprintln!("warning: {w}");
            }
            latest.with_context(|| format!("no valid checkpoint in {}/checkpoints", args.run_dir.display()))?.path
        }
    };
    checkpoint::verify(&ckpt)?;
    let device = Device::flex();
    let mut objective = Mlm::init(&bert, 0.0, &device);
    checkpoint::load_weights(&ckpt.join(checkpoint::MODEL_FILE), &mut objective)?;
    let model = objective.model;
    let architecture = if args.encoder_only { HfArchitecture::BertModel } else { HfArchitecture::BertForMaskedLM };

    autodidact_core::fsutil::write_dir_atomic(
        &args.out,
        |dir| -> Result<()> {
            let config_json = serde_json::to_vec_pretty(&hf::config_json(&bert, architecture, tokenizer.special().pad))?;
            std::fs::write(dir.join(hf::CONFIG_FILE), config_json)?;
            hf::save_weights(&model, architecture, &dir.join(hf::WEIGHTS_FILE))?;
            for (name, bytes) in tokenizer.hf_files(bert.max_position_embeddings)? {
                std::fs::write(dir.join(name), bytes)?;
            }
            verify_export(dir, &model, &tokenizer, architecture).context("the exported files do not read back as written")
        },
        |p, e| anyhow::Error::new(e).context(format!("cannot write {}", p.display())),
    )?;
    if let Some(path) = &args.parity_sample {
        write_parity_sample(path, &model, &tokenizer, architecture, &device)?;
    }
    Ok(ckpt)
}

/// Reads an export back the way `init_from` does and compares it with its source.
fn verify_export(dir: &Path, model: &BertForMaskedLM, tokenizer: &TextTokenizer, architecture: HfArchitecture) -> Result<()> {
    let config = hf::read_config(dir)?;
    let device = Device::flex();
    let (back, report) = hf::load_weights(BertForMaskedLM::init(&config, &device), &hf::weights_path(dir)?)?;
    ensure!(report.architecture == architecture, "written as {:?}, read back as {:?}", architecture, report.architecture);
    // A bare encoder has no head to compare.
    let differing: Vec<String> = hf::differing_tensors(model, &back).into_iter().filter(|n| architecture == HfArchitecture::BertForMaskedLM || !n.starts_with("cls.")).collect();
    ensure!(differing.is_empty(), "tensors differ after the round trip: {}", differing.join(", "));
    let reloaded = TextTokenizer::load_hf_dir(dir)?;
    ensure!(reloaded.encode_for_model(&SAMPLE)? == tokenizer.encode_for_model(&SAMPLE)?, "the exported tokenizer encodes differently");
    Ok(())
}

/// Writes the sample inputs and this model's outputs (MLM logits, or the last hidden
/// states for an encoder export) as safetensors, with the texts in the metadata.
fn write_parity_sample(path: &Path, model: &BertForMaskedLM, tokenizer: &TextTokenizer, architecture: HfArchitecture, device: &Device) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let sample = Encoded::pairs(tokenizer, &SAMPLE, &[0; SAMPLE.len()], model.bert.max_positions())?.batch(&(0..SAMPLE.len()).collect::<Vec<_>>());
    let (ids, types, mask, batch, seq) = (&sample.input_ids, &sample.token_type_ids, &sample.attention_mask, sample.batch_size, sample.seq_len);
    let input = BertInput::from_host(ids, types, mask, batch, seq, device);
    let (name, output): (&str, Tensor<3>) = match architecture {
        HfArchitecture::BertForMaskedLM => ("logits", model.forward(input)),
        HfArchitecture::BertModel => ("last_hidden_state", model.bert.forward(input)),
    };
    let out_shape = output.dims().to_vec();
    let out_bytes: Vec<u8> = output.into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?.iter().flat_map(|v| v.to_le_bytes()).collect();
    let as_i64 = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|&x| i64::from(x).to_le_bytes()).collect() };
    let mask32: Vec<u32> = mask.iter().map(|&m| u32::from(m)).collect();
    let tensors = [("input_ids", as_i64(ids)), ("token_type_ids", as_i64(types)), ("attention_mask", as_i64(&mask32))];
    let mut views = Vec::new();
    for (n, bytes) in &tensors {
        views.push((n.to_string(), TensorView::new(Dtype::I64, vec![batch, seq], bytes)?));
    }
    views.push((name.to_string(), TensorView::new(Dtype::F32, out_shape, &out_bytes)?));
    let texts = serde_json::to_string(&SAMPLE.iter().map(|(a, b)| serde_json::json!([a, b])).collect::<Vec<_>>())?;
    let metadata = std::collections::HashMap::from([("texts".to_string(), texts)]);
    let bytes = safetensors::serialize(views, Some(metadata))?;
    crate::pretrain::write_atomic(path, &bytes)
}

//! `autodidact embed`: one vector per input text from a trained encoder, in input order.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use autodidact_data::labeled::Encoded;
use autodidact_models::bert::{BertInput, Pooling};
use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::init::Pretrained;

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedFormat {
    /// safetensors with one tensor `embeddings` `[n, hidden]` (f32).
    Safetensors,
    /// NumPy `.npy`, `[n, hidden]` float32.
    Npy,
}

/// What `embed` was asked to do.
pub struct EmbedArgs {
    /// A run (pretraining or fine-tuning) or HuggingFace directory.
    pub model_dir: PathBuf,
    /// Texts: one per line (`.txt`) or one JSON object per line (`.jsonl`, `text_field`).
    pub input: PathBuf,
    /// JSON field of the text.
    pub text_field: String,
    /// Output file.
    pub out: PathBuf,
    /// Output format (default from the extension: `.npy` → npy, else safetensors).
    pub format: Option<EmbedFormat>,
    /// Pooling.
    pub pooling: Pooling,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Tokens per text (default: the encoder's maximum).
    pub max_seq_len: Option<usize>,
    /// Show a progress bar.
    pub progress: bool,
}

/// Reads the input texts in order.
fn read_texts(path: &Path, text_field: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {} (UTF-8 text expected)", path.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl" || e == "ndjson");
    let mut texts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !jsonl {
            texts.push(line.to_string());
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}:{}: malformed JSON", path.display(), i + 1))?;
        match value.get(text_field).and_then(|v| v.as_str()) {
            Some(t) => texts.push(t.to_string()),
            None => bail!("{}:{}: no string field {text_field:?}", path.display(), i + 1),
        }
    }
    if texts.is_empty() {
        bail!("{}: no texts", path.display());
    }
    Ok(texts)
}

/// Embeds every text and writes the matrix; returns `(texts, dim)`.
///
/// # Errors
/// Unreadable model or input, or an unwritable output.
pub fn run(args: &EmbedArgs) -> Result<(usize, usize)> {
    let pretrained = Pretrained::open(&args.model_dir)?;
    let texts = read_texts(&args.input, &args.text_field)?;
    let device = Device::flex();
    let (encoder, _) = pretrained.load_encoder(&pretrained.config, &device)?;
    let encoder = encoder.valid();
    let max_len = args.max_seq_len.unwrap_or(pretrained.config.max_position_embeddings).min(pretrained.config.max_position_embeddings);
    let encoded = Encoded::new(&pretrained.tokenizer, &texts, &vec![0; texts.len()], max_len)?;
    let indices: Vec<usize> = (0..texts.len()).collect();
    let bar = ProgressBar::with_draw_target(Some(texts.len() as u64), if args.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} texts  ETA {eta}") {
        bar.set_style(style);
    }
    let mut values: Vec<f32> = Vec::with_capacity(texts.len() * pretrained.config.hidden_size);
    for batch in encoded.batches(&indices, args.batch_size.max(1)) {
        let input = BertInput::from_host(&batch.input_ids, &batch.token_type_ids, &batch.attention_mask, batch.batch_size, batch.seq_len, &device);
        let mask = input.attention_mask.clone();
        let pooled = args.pooling.pool(encoder.forward(input), mask);
        values.extend(pooled.into_data().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?);
        bar.inc(batch.batch_size as u64);
    }
    bar.finish_and_clear();
    let (n, dim) = (texts.len(), pretrained.config.hidden_size);
    let format = args.format.unwrap_or(if args.out.extension().is_some_and(|e| e == "npy") { EmbedFormat::Npy } else { EmbedFormat::Safetensors });
    let bytes = match format {
        EmbedFormat::Safetensors => {
            let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, dim], &data)?;
            safetensors::serialize([("embeddings", view)], None)?
        }
        EmbedFormat::Npy => {
            let mut out = Vec::new();
            use npyz::WriterBuilder;
            let mut writer = npyz::WriteOptions::new().default_dtype().shape(&[n as u64, dim as u64]).writer(&mut out).begin_nd()?;
            writer.extend(values.iter().copied())?;
            writer.finish()?;
            out
        }
    };
    crate::pretrain::write_atomic(&args.out, &bytes)?;
    Ok((n, dim))
}

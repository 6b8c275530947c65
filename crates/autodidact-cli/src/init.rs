//! Where a pretrained encoder comes from (`init_from`): an autodidact run directory or a
//! HuggingFace BERT directory. Either gives a config, a tokenizer and weights.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use autodidact_data::tokenizer::TextTokenizer;
use autodidact_models::bert::{BertConfig, BertForMaskedLM, BertModel};
use autodidact_models::hf;
use autodidact_train::checkpoint::{self, Checkpoints};
use burn::tensor::Device;
use serde_json::{Value, json};

use crate::pretrain::MODEL_CONFIG_FILE;

/// Where the encoder of each objective lives in its checkpoints (`Mlm`: `model.bert`;
/// `SimCse` and `SequenceClassifier`: `bert`).
const ENCODER_PREFIXES: [&str; 2] = ["model.bert", "bert"];

/// A pretrained model directory.
pub struct Pretrained {
    dir: PathBuf,
    /// The encoder's architecture.
    pub config: BertConfig,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// For a run: the checkpoint used (its best, else its newest valid one).
    checkpoint: Option<PathBuf>,
}

/// Is `dir` an autodidact run (rather than a HuggingFace directory)?
fn is_run(dir: &Path) -> bool {
    dir.join(MODEL_CONFIG_FILE).is_file()
}

/// The model config of a run or HuggingFace directory.
///
/// # Errors
/// Neither kind of directory, or a malformed config.
pub fn read_config(dir: &Path) -> Result<BertConfig> {
    if is_run(dir) { crate::pretrain::read_model_config(dir) } else { Ok(hf::read_config(dir)?) }
}

impl Pretrained {
    /// Opens a run or HuggingFace directory.
    ///
    /// # Errors
    /// Missing config, tokenizer or (for a run) checkpoint.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = read_config(dir)?;
        if !is_run(dir) {
            let tokenizer = TextTokenizer::load_hf_dir(dir)?;
            return Ok(Self { dir: dir.to_path_buf(), config, tokenizer, checkpoint: None });
        }
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
        let checkpoints = Checkpoints::new(dir.join("checkpoints"));
        let checkpoint = match checkpoints.best() {
            Some(best) => best,
            None => {
                let (latest, warnings) = checkpoints.latest_valid();
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                latest.with_context(|| format!("{}: the run has no valid checkpoint", dir.display()))?.path
            }
        };
        checkpoint::verify(&checkpoint)?;
        Ok(Self { dir: dir.to_path_buf(), config, tokenizer, checkpoint: Some(checkpoint) })
    }

    /// Loads the encoder and MLM head into `model` (built from [`Pretrained::config`]); a
    /// source without a head leaves it initialized. Returns a report for `summary.json`.
    ///
    /// # Errors
    /// Unreadable or misfitting weights.
    pub fn load_masked_lm(&self, mut model: BertForMaskedLM) -> Result<(BertForMaskedLM, Value)> {
        let Some(ckpt) = &self.checkpoint else {
            let (model, report) = hf::load_weights(model, &hf::weights_path(&self.dir)?)?;
            return Ok((model, json!({ "dir": self.dir, "format": "huggingface", "report": report })));
        };
        let weights = ckpt.join(checkpoint::MODEL_FILE);
        if checkpoint::load_prefixed(&weights, "model", &mut model)? {
            return Ok((model, json!({ "dir": self.dir, "format": "autodidact", "checkpoint": ckpt })));
        }
        let (bert, prefix) = self.load_run_encoder(model.bert, &weights)?;
        model.bert = bert;
        Ok((model, json!({ "dir": self.dir, "format": "autodidact", "checkpoint": ckpt, "encoder": prefix, "initialized": "cls (MLM head)" })))
    }

    /// Loads the encoder (without any head) into a model built from `config` (this source's
    /// architecture, possibly with other dropout). Returns a report for `summary.json`.
    ///
    /// # Errors
    /// Unreadable or misfitting weights.
    pub fn load_encoder(&self, config: &BertConfig, device: &Device) -> Result<(BertModel, Value)> {
        match &self.checkpoint {
            None => {
                let (model, report) = self.load_masked_lm(BertForMaskedLM::init(config, device))?;
                Ok((model.bert, report))
            }
            Some(ckpt) => {
                let (bert, prefix) = self.load_run_encoder(config.init(device), &ckpt.join(checkpoint::MODEL_FILE))?;
                Ok((bert, json!({ "dir": self.dir, "format": "autodidact", "checkpoint": ckpt, "encoder": prefix })))
            }
        }
    }

    fn load_run_encoder(&self, mut bert: BertModel, weights: &Path) -> Result<(BertModel, &'static str)> {
        for prefix in ENCODER_PREFIXES {
            if checkpoint::load_prefixed(weights, prefix, &mut bert)? {
                return Ok((bert, prefix));
            }
        }
        bail!("{}: no encoder tensors (looked under {ENCODER_PREFIXES:?})", weights.display())
    }
}

//! The user-facing TOML config: raw serde structs with `deny_unknown_fields`, `--set`
//! overrides, and validation into typed values. Every error names the file and the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use autodidact_data::labeled::LabeledFormat;
use autodidact_data::source::TextFormat;
use autodidact_data::tokenizer::TokenizerKind;
use autodidact_models::bert::{BertConfig, Pooling};
use autodidact_models::heads::ImageEncoderConfig;
use autodidact_objectives::simcse::PairViews;
use autodidact_train::schedule::{Decay, LrSchedule};
use autodidact_train::trainer::{AdamWSettings, EarlyStopping, NonFinitePolicy, TrainConfig};
use serde::{Deserialize, Serialize};

/// A whole config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Run identity and placement.
    pub run: RunSection,
    /// Corpus.
    pub data: DataSection,
    /// Tokenizer (absent with `model.init_from`, whose tokenizer is used).
    #[serde(default)]
    pub tokenizer: Option<TokenizerSection>,
    /// Encoder.
    pub model: ModelSection,
    /// Objective.
    pub objective: ObjectiveSection,
    /// Optimization and logging.
    pub train: TrainSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Run name: the run directory is `<output_dir>/<name>`.
    pub name: String,
    /// Seed of every random stream.
    #[serde(default)]
    pub seed: u64,
    /// Parent of run directories (relative to the working directory); default `runs`.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// `flex` (default), `ndarray` or `wgpu`.
    #[serde(default)]
    pub backend: Backend,
}

/// Compute backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn's flex CPU backend (the faster CPU backend here).
    #[default]
    Flex,
    /// burn's ndarray CPU backend.
    Ndarray,
    /// GPU through wgpu (build with `--features wgpu`).
    Wgpu,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// A file or directory of `.txt`/`.jsonl` (optionally `.gz`), relative to the config file.
    pub path: PathBuf,
    /// `auto`, `txt` or `jsonl`.
    #[serde(default)]
    pub format: TextFormat,
    /// JSON field holding the text in `.jsonl` files.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// Fraction of the corpus held out for evaluation.
    #[serde(default = "default_heldout")]
    pub heldout_fraction: f64,
    /// Tokens per training sequence (including `[CLS]`).
    pub seq_len: usize,
}

fn default_text_field() -> String {
    "text".into()
}
fn default_heldout() -> f64 {
    0.02
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSection {
    /// Load this `tokenizer.json` (relative to the config file) instead of training one.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `wordpiece` or `bpe`.
    #[serde(default)]
    pub kind: TokenizerKind,
    /// Vocabulary size to train.
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Lowercase and strip accents (WordPiece).
    #[serde(default = "yes")]
    pub lowercase: bool,
    /// Minimum frequency of a merge.
    #[serde(default = "default_min_frequency")]
    pub min_frequency: u64,
}

impl Default for TokenizerSection {
    fn default() -> Self {
        Self { path: None, kind: TokenizerKind::WordPiece, vocab_size: default_vocab(), lowercase: true, min_frequency: default_min_frequency() }
    }
}

fn default_vocab() -> usize {
    8192
}
fn default_min_frequency() -> u64 {
    2
}
fn yes() -> bool {
    true
}

/// BERT hyper-parameters (HF `BertConfig` names); `vocab_size` comes from the tokenizer.
/// With `init_from`, the architecture comes from that directory's `config.json` and only the
/// dropout probabilities may be set here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A HuggingFace BERT directory (`config.json`, `model.safetensors`, `tokenizer.json` or
    /// `vocab.txt`) to continue pretraining from; relative to the config file.
    pub init_from: Option<PathBuf>,
    pub hidden_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub type_vocab_size: Option<usize>,
    pub hidden_dropout_prob: Option<f64>,
    pub attention_probs_dropout_prob: Option<f64>,
    pub initializer_range: Option<f64>,
    pub layer_norm_eps: Option<f64>,
}

impl ModelSection {
    /// The architecture fields that are set, by name (they conflict with `init_from`).
    fn architecture_fields_set(&self) -> Vec<&'static str> {
        let usizes = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        let floats = [("initializer_range", self.initializer_range), ("layer_norm_eps", self.layer_norm_eps)];
        usizes.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| *k).chain(floats.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| *k)).collect()
    }
}


/// HF's default dropout on hidden states and attention probabilities.
const DEFAULT_DROPOUT: f64 = 0.1;

/// The pretraining objective: `[objective] type = "..."`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ObjectiveSection {
    /// Masked language modelling.
    Mlm(MlmSection),
    /// Unsupervised SimCSE (dropout as augmentation, in-batch negatives).
    Simcse(SimCseSection),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimCseSection {
    /// Softmax temperature of the InfoNCE loss (Gao et al. 2021 use 0.05).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// `cls` or `mean`.
    #[serde(default)]
    pub pooling: Pooling,
    /// Where the two views come from: `dropout` (SimCSE: the same sequence twice) or
    /// `crops` (two random crops of one document, Izacard et al. 2022).
    #[serde(default)]
    pub views: PairViews,
    /// With `views = "crops"`: tokens per sampled region, the crops of an example lying
    /// in one document of its region (default `4 * (data.seq_len - 1)`).
    #[serde(default)]
    pub crop_region: Option<usize>,
}

impl SimCseSection {
    /// Tokens per region that two crops are taken from.
    pub fn crop_region(&self, seq_len: usize) -> usize {
        self.crop_region.unwrap_or(4 * (seq_len - 1))
    }
}

fn default_temperature() -> f64 {
    0.05
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlmSection {
    /// Fraction of tokens chosen for prediction.
    #[serde(default = "default_mask_ratio")]
    pub mask_ratio: f64,
    /// Of those, the fraction replaced by `[MASK]`.
    #[serde(default = "default_mask_prob")]
    pub mask_token_prob: f64,
    /// Of those, the fraction replaced by a random token.
    #[serde(default = "default_random_prob")]
    pub random_token_prob: f64,
    /// Label smoothing of the cross-entropy.
    #[serde(default)]
    pub label_smoothing: f64,
}

impl MlmSection {
    fn validate(&self) -> Result<()> {
        let m = self;
        if !(m.mask_ratio > 0.0 && m.mask_ratio <= 1.0) {
            bail!("objective.mask_ratio: {} must be in (0, 1]", m.mask_ratio);
        }
        for (k, v) in [("mask_token_prob", m.mask_token_prob), ("random_token_prob", m.random_token_prob), ("label_smoothing", m.label_smoothing)] {
            if !(0.0..=1.0).contains(&v) {
                bail!("objective.{k}: {v} must be in [0, 1]");
            }
        }
        if m.mask_token_prob + m.random_token_prob > 1.0 {
            bail!("objective.mask_token_prob + random_token_prob: {} exceeds 1", m.mask_token_prob + m.random_token_prob);
        }
        Ok(())
    }
}

fn default_mask_ratio() -> f64 {
    0.15
}
fn default_mask_prob() -> f64 {
    0.8
}
fn default_random_prob() -> f64 {
    0.1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub batch_size: usize,
    #[serde(default = "one")]
    pub grad_accum: u64,
    pub max_steps: u64,
    pub lr: f64,
    #[serde(default)]
    pub min_lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    /// Step at which the decay ends (default: `max_steps`); set it to extend a run later
    /// without changing its schedule.
    #[serde(default)]
    pub decay_steps: Option<u64>,
    #[serde(default)]
    pub decay: Decay,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables.
    #[serde(default = "default_clip")]
    pub clip_grad_norm: f64,
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    #[serde(default)]
    pub eval_every: u64,
    #[serde(default = "default_eval_batches")]
    pub eval_batches: usize,
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Stop after this many evaluations without improvement; keep the best model.
    #[serde(default)]
    pub early_stopping_patience: Option<u64>,
    /// The evaluation metric early stopping watches (`eval_loss`, `eval_accuracy`, ...).
    #[serde(default = "default_stopping_metric")]
    pub early_stopping_metric: String,
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// `stop` (default) or `skip` a step whose loss or gradient norm is NaN or infinite.
    #[serde(default)]
    pub on_nonfinite: NonFinitePolicy,
    /// With `on_nonfinite = "skip"`: fail once more steps than this were skipped.
    #[serde(default = "default_max_skipped_steps")]
    pub max_skipped_steps: u64,
}

fn default_max_skipped_steps() -> u64 {
    10
}

impl RunSection {
    fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name == "." || self.name == ".." {
            bail!("run.name: {:?} must be a non-empty name without path separators", self.name);
        }
        Ok(())
    }

    /// The run directory: `<output_dir>/<name>`, the CLI's `--output-dir` winning.
    pub fn run_dir(&self, output_dir: Option<&Path>) -> PathBuf {
        let parent = output_dir.map(Path::to_path_buf).or_else(|| self.output_dir.clone()).unwrap_or_else(|| PathBuf::from("runs"));
        parent.join(&self.name)
    }
}

impl TrainSection {
    fn validate(&self) -> Result<()> {
        let tr = self;
        for (k, v) in [("batch_size", tr.batch_size as u64), ("grad_accum", tr.grad_accum), ("max_steps", tr.max_steps), ("eval_batches", tr.eval_batches as u64)] {
            if v == 0 {
                bail!("train.{k}: must be greater than 0");
            }
        }
        if !(tr.lr > 0.0 && tr.lr.is_finite()) {
            bail!("train.lr: {} must be a positive number", tr.lr);
        }
        if !(0.0..=tr.lr).contains(&tr.min_lr) {
            bail!("train.min_lr: {} must be in [0, train.lr]", tr.min_lr);
        }
        let decay_steps = tr.decay_steps.unwrap_or(tr.max_steps);
        if tr.warmup_steps > decay_steps {
            bail!("train.warmup_steps: {} exceeds the decay length ({decay_steps} steps)", tr.warmup_steps);
        }
        for (k, v) in [("beta1", tr.beta1), ("beta2", tr.beta2)] {
            if !(0.0..1.0).contains(&v) {
                bail!("train.{k}: {v} must be in [0, 1)");
            }
        }
        if !(tr.eps > 0.0 && tr.weight_decay >= 0.0 && tr.clip_grad_norm >= 0.0) {
            bail!("train.eps must be positive; train.weight_decay and train.clip_grad_norm must be non-negative");
        }
        if !self.early_stopping_metric.starts_with("eval_") {
            bail!("train.early_stopping_metric: {:?} is not an evaluation metric (eval_loss, eval_accuracy, ...)", self.early_stopping_metric);
        }
        if self.early_stopping_patience == Some(0) {
            bail!("train.early_stopping_patience: must be at least 1 evaluation");
        }
        Ok(())
    }

    /// The trainer's typed config.
    pub fn train_config(&self, seed: u64, progress: bool) -> TrainConfig {
        let t = self;
        TrainConfig {
            seed,
            max_steps: t.max_steps,
            grad_accum: t.grad_accum,
            adamw: AdamWSettings { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weight_decay: t.weight_decay },
            schedule: LrSchedule { peak: t.lr, min_lr: t.min_lr, warmup_steps: t.warmup_steps, total_steps: t.decay_steps.unwrap_or(t.max_steps), decay: t.decay },
            clip_grad_norm: (t.clip_grad_norm > 0.0).then_some(t.clip_grad_norm),
            log_every: t.log_every,
            eval_every: t.eval_every,
            checkpoint_every: t.checkpoint_every,
            early_stopping: t.early_stopping_patience.map(|patience| EarlyStopping { metric: t.early_stopping_metric.clone(), patience }),
            keep_last: t.keep_last,
            prefetch: t.prefetch,
            progress,
            on_nonfinite: t.on_nonfinite,
            max_skipped_steps: t.max_skipped_steps,
            handle_signals: true,
        }
    }
}

fn default_stopping_metric() -> String {
    "eval_loss".into()
}

fn one() -> u64 {
    1
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-6
}
fn default_clip() -> f64 {
    1.0
}
fn default_log_every() -> u64 {
    10
}
fn default_eval_batches() -> usize {
    16
}
fn default_keep_last() -> usize {
    2
}
fn default_prefetch() -> usize {
    4
}

/// Reads a config file, applies `--set key=value` overrides, parses and validates it, and
/// makes its relative paths absolute (relative to the file's directory).
///
/// # Errors
/// Unreadable file, TOML syntax, unknown keys, wrong types, invalid values: all name the file
/// and the key.
pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
    let mut config: Config = parse(path, overrides)?;
    let base = path.parent().unwrap_or(Path::new("."));
    config.data.path = absolute(base, &config.data.path);
    if let Some(t) = config.tokenizer.as_mut() {
        t.path = t.path.as_deref().map(|p| absolute(base, p));
    }
    config.model.init_from = config.model.init_from.as_deref().map(|p| absolute(base, p));
    config.validate().map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok(config)
}

/// Reads a TOML file, applies `--set` overrides and deserializes it; errors name the file.
fn parse<T: serde::de::DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    for o in overrides {
        apply_override(&mut table, o).with_context(|| format!("{}: --set {o}", path.display()))?;
    }
    T::deserialize(toml::Value::Table(table)).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
}

/// A resumed run keeps the model and objective its checkpoints were written for. Refuses an
/// `asked` config (file plus `--set` overrides, already loaded) that changes them (other than
/// `model.init_from`, which a resumed run ignores), before anything in the run directory is
/// rewritten. `T` is the config schema.
///
/// # Errors
/// The run's `config.toml` cannot be read, or the configs differ in shape.
pub fn check_resume<T: serde::de::DeserializeOwned + Serialize>(run_dir: &Path, asked: &T) -> Result<()> {
    let table = |config: &T| -> Result<toml::Table> {
        match toml::Value::try_from(config).context("cannot serialize the config")? {
            toml::Value::Table(t) => Ok(t),
            _ => bail!("the config is not a table"),
        }
    };
    let saved = table(&parse::<T>(&run_dir.join("config.toml"), &[])?)?;
    let asked = table(asked)?;
    for section in ["model", "objective"] {
        let empty = toml::Table::new();
        let section_of = |t: &toml::Table| t.get(section).and_then(toml::Value::as_table).cloned().unwrap_or_else(|| empty.clone());
        let (old, new) = (section_of(&saved), section_of(&asked));
        let mut keys: Vec<&String> = old.keys().chain(new.keys()).filter(|k| *k != "init_from").collect();
        keys.sort();
        keys.dedup();
        if let Some(key) = keys.into_iter().find(|k| old.get(*k) != new.get(*k)) {
            let show = |v: Option<&toml::Value>| v.map_or_else(|| "unset".to_string(), ToString::to_string);
            bail!(
                "{section}.{key}: the run in {} was trained with {} and its checkpoints have that shape; a resumed run cannot change it to {} (start a new run, e.g. with model.init_from = {:?})",
                run_dir.display(),
                show(old.get(key)),
                show(new.get(key)),
                run_dir.display()
            );
        }
    }
    Ok(())
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Sets a dotted key (`train.lr=1e-3`) in the raw table. The value is parsed as TOML
/// (`3`, `1e-3`, `true`, `"x"`, `[1, 2]`), falling back to a bare string.
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, value) = assignment.split_once('=').ok_or_else(|| anyhow!("expected key=value"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts.split_last().ok_or_else(|| anyhow!("empty key"))?;
    let mut node = table;
    for (i, part) in parents.iter().enumerate() {
        let entry = node.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| anyhow!("{} is not a table", parts[..=i].join(".")))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

impl Config {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first invalid value, as `section.key: what is wrong`.
    pub fn validate(&self) -> Result<()> {
        self.run.validate()?;
        let d = &self.data;
        if !(0.0..1.0).contains(&d.heldout_fraction) || d.heldout_fraction == 0.0 {
            bail!("data.heldout_fraction: {} must be in (0, 1)", d.heldout_fraction);
        }
        if d.seq_len < 8 {
            bail!("data.seq_len: {} is too short (at least 8)", d.seq_len);
        }
        if self.model.init_from.is_some() {
            if let Some(field) = self.model.architecture_fields_set().first() {
                bail!("model.{field}: the architecture comes from model.init_from (its config.json); remove model.{field}");
            }
            if self.tokenizer.is_some() {
                bail!("tokenizer: the tokenizer comes from model.init_from; remove the [tokenizer] section");
            }
        }
        let t = self.tokenizer();
        if t.path.is_none() && !(autodidact_data::tokenizer::MIN_VOCAB_SIZE..=1 << 24).contains(&t.vocab_size) {
            bail!("tokenizer.vocab_size: {} is out of range ({}..={})", t.vocab_size, autodidact_data::tokenizer::MIN_VOCAB_SIZE, 1 << 24);
        }
        // Model fields: validated by the model crate with a placeholder vocabulary.
        let bert = self.bert_config(t.vocab_size.max(1))?;
        bert.validate()?;
        if d.seq_len > bert.max_position_embeddings {
            bail!("data.seq_len: {} is larger than model.max_position_embeddings ({}): the model has no position for the extra tokens", d.seq_len, bert.max_position_embeddings);
        }
        match &self.objective {
            ObjectiveSection::Mlm(m) => m.validate()?,
            ObjectiveSection::Simcse(c) => {
                if !(c.temperature > 0.0 && c.temperature.is_finite()) {
                    bail!("objective.temperature: {} must be positive", c.temperature);
                }
                match c.views {
                    PairViews::Dropout if bert.hidden_dropout_prob == 0.0 && bert.attention_probs_dropout_prob == 0.0 => {
                        bail!("objective.type = \"simcse\": dropout is its only augmentation; set model.hidden_dropout_prob > 0 (SimCSE uses 0.1) or objective.views = \"crops\"");
                    }
                    PairViews::Crops if c.crop_region(d.seq_len) < d.seq_len - 1 => {
                        bail!("objective.crop_region: {} is shorter than one crop (data.seq_len - 1 = {})", c.crop_region(d.seq_len), d.seq_len - 1);
                    }
                    _ => {}
                }
            }
        }
        self.train.validate()
    }

    /// The tokenizer section, or its defaults.
    pub fn tokenizer(&self) -> TokenizerSection {
        self.tokenizer.clone().unwrap_or_default()
    }

    /// The model config: from `model.init_from`'s `config.json` (its own vocabulary size),
    /// else from the fields here with a tokenizer of `vocab_size`.
    ///
    /// # Errors
    /// An unreadable or unsupported `config.json`, or a required field missing.
    pub fn bert_config(&self, vocab_size: usize) -> Result<BertConfig> {
        let m = &self.model;
        let mut config = match &m.init_from {
            Some(dir) => crate::init::read_config(dir).context("model.init_from")?,
            None => {
                let need = |field: &str, v: Option<usize>| v.ok_or_else(|| anyhow!("model.{field}: required (or set model.init_from)"));
                BertConfig {
                    vocab_size,
                    hidden_size: need("hidden_size", m.hidden_size)?,
                    num_hidden_layers: need("num_hidden_layers", m.num_hidden_layers)?,
                    num_attention_heads: need("num_attention_heads", m.num_attention_heads)?,
                    intermediate_size: need("intermediate_size", m.intermediate_size)?,
                    hidden_dropout_prob: DEFAULT_DROPOUT,
                    attention_probs_dropout_prob: DEFAULT_DROPOUT,
                    max_position_embeddings: m.max_position_embeddings.unwrap_or(512),
                    type_vocab_size: m.type_vocab_size.unwrap_or(2),
                    initializer_range: m.initializer_range.unwrap_or(0.02),
                    layer_norm_eps: m.layer_norm_eps.unwrap_or(1e-12),
                }
            }
        };
        config.hidden_dropout_prob = m.hidden_dropout_prob.unwrap_or(config.hidden_dropout_prob);
        config.attention_probs_dropout_prob = m.attention_probs_dropout_prob.unwrap_or(config.attention_probs_dropout_prob);
        Ok(config)
    }

    /// The trainer's typed config.
    pub fn train_config(&self, progress: bool) -> TrainConfig {
        self.train.train_config(self.run.seed, progress)
    }

    /// The run directory.
    pub fn run_dir(&self, output_dir: Option<&Path>) -> PathBuf {
        self.run.run_dir(output_dir)
    }
}

/// A `finetune` config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Run identity and placement.
    pub run: RunSection,
    /// Labeled data and its splits.
    pub data: LabeledDataSection,
    /// Encoder source and classification head.
    pub model: ClassifierSection,
    /// Optimization, evaluation on the validation split, early stopping.
    pub train: TrainSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabeledDataSection {
    /// A folder of class folders, a `.csv` or a `.jsonl` file, relative to the config file.
    pub path: PathBuf,
    /// `auto`, `folders`, `csv` or `jsonl`.
    #[serde(default)]
    pub format: LabeledFormat,
    /// CSV column / JSON field of the text.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// CSV column / JSON field of the label.
    #[serde(default = "default_label_field")]
    pub label_field: String,
    /// A separate test file or folder; without it, `test_fraction` of `path` is held out.
    pub test_path: Option<PathBuf>,
    /// Fraction of each class for validation (early stopping).
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Fraction of each class for the test split (ignored with `test_path`).
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Fraction of the training labels kept (per class, at least one), for few-label runs.
    #[serde(default = "default_label_fraction")]
    pub label_fraction: f64,
    /// Tokens per example, `[CLS]` and `[SEP]` included; longer texts are truncated.
    #[serde(default = "default_max_seq_len")]
    pub max_seq_len: usize,
}

fn default_label_field() -> String {
    "label".into()
}
fn default_validation_fraction() -> f64 {
    0.1
}
fn default_test_fraction() -> f64 {
    0.2
}
fn default_label_fraction() -> f64 {
    1.0
}
fn default_max_seq_len() -> usize {
    128
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSection {
    /// The encoder: an autodidact run directory or a HuggingFace BERT directory. Its
    /// architecture and tokenizer are used.
    pub init_from: PathBuf,
    /// Keep the architecture and tokenizer of `init_from` but start from random weights:
    /// the from-scratch baseline.
    #[serde(default)]
    pub random_init: bool,
    /// `cls` or `mean`.
    #[serde(default)]
    pub pooling: Pooling,
    /// Train only the classifier on frozen features (a linear probe).
    #[serde(default)]
    pub freeze_encoder: bool,
    /// Dropout before the classifier.
    #[serde(default = "default_classifier_dropout")]
    pub classifier_dropout: f64,
    /// Encoder dropout (default: the encoder's own; 0 when frozen).
    pub hidden_dropout_prob: Option<f64>,
    /// Attention dropout (default: the encoder's own; 0 when frozen).
    pub attention_probs_dropout_prob: Option<f64>,
}

fn default_classifier_dropout() -> f64 {
    0.1
}

/// Reads and validates a `finetune` config; relative paths become absolute.
///
/// # Errors
/// As [`load`], plus unreadable `model.init_from`.
pub fn load_finetune(path: &Path, overrides: &[String]) -> Result<FinetuneConfig> {
    let mut config: FinetuneConfig = parse(path, overrides)?;
    let base = path.parent().unwrap_or(Path::new("."));
    config.data.path = absolute(base, &config.data.path);
    config.data.test_path = config.data.test_path.as_deref().map(|p| absolute(base, p));
    config.model.init_from = absolute(base, &config.model.init_from);
    config.validate().map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok(config)
}

impl FinetuneConfig {
    fn validate(&self) -> Result<()> {
        self.run.validate()?;
        let d = &self.data;
        for (k, v) in [("validation_fraction", d.validation_fraction), ("test_fraction", d.test_fraction)] {
            if !(0.0..0.9).contains(&v) {
                bail!("data.{k}: {v} must be in [0, 0.9)");
            }
        }
        if d.validation_fraction == 0.0 {
            bail!("data.validation_fraction: must be positive (the validation split drives early stopping and model selection)");
        }
        if d.test_path.is_none() && d.validation_fraction + d.test_fraction >= 0.9 {
            bail!("data.validation_fraction + data.test_fraction: {} leaves too little for training (must be below 0.9)", d.validation_fraction + d.test_fraction);
        }
        if d.test_path.is_none() && d.test_fraction == 0.0 {
            bail!("data.test_fraction: must be positive without data.test_path");
        }
        if !(d.label_fraction > 0.0 && d.label_fraction <= 1.0) {
            bail!("data.label_fraction: {} must be in (0, 1]", d.label_fraction);
        }
        let m = &self.model;
        for (k, v) in [("classifier_dropout", Some(m.classifier_dropout)), ("hidden_dropout_prob", m.hidden_dropout_prob), ("attention_probs_dropout_prob", m.attention_probs_dropout_prob)] {
            if v.is_some_and(|p| !(0.0..1.0).contains(&p)) {
                bail!("model.{k}: {v:?} must be in [0, 1)");
            }
        }
        let bert = crate::init::read_config(&m.init_from).context("model.init_from")?;
        if d.max_seq_len < 8 || d.max_seq_len > bert.max_position_embeddings {
            bail!("data.max_seq_len: {} must be in 8..={} (the encoder's max_position_embeddings)", d.max_seq_len, bert.max_position_embeddings);
        }
        self.train.validate()
    }

    /// The encoder config: `init_from`'s, with this file's dropout (none when frozen).
    ///
    /// # Errors
    /// Unreadable `init_from`.
    pub fn bert_config(&self) -> Result<BertConfig> {
        let m = &self.model;
        let mut c = crate::init::read_config(&m.init_from).context("model.init_from")?;
        let frozen = |p: f64| if m.freeze_encoder { 0.0 } else { p };
        c.hidden_dropout_prob = m.hidden_dropout_prob.unwrap_or(frozen(c.hidden_dropout_prob));
        c.attention_probs_dropout_prob = m.attention_probs_dropout_prob.unwrap_or(frozen(c.attention_probs_dropout_prob));
        Ok(c)
    }
}

/// A `pretrain` config for images (`objective.type = "simclr"` or `"mae"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    /// Run identity and placement.
    pub run: RunSection,
    /// Images.
    pub data: ImageDataSection,
    /// View generation (default: the objective's recipe).
    #[serde(default)]
    pub augment: AugmentSection,
    /// Encoder (`arch = "resnet"` or `"vit"`); `in_channels` and ViT `image_size` come from
    /// the data when left out.
    pub model: ImageEncoderConfig,
    /// Objective.
    pub objective: VisionObjective,
    /// Optimization and logging.
    pub train: TrainSection,
    /// Frozen-feature evaluation (kNN, linear probe) on the labeled test set.
    #[serde(default)]
    pub eval: FrozenEvalSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDataSection {
    /// Training images: an IDX file (raw or .gz) or a folder of PNG/JPEG images (class
    /// sub-folders give labels); relative to the config file. Labels are never used for
    /// pretraining, only for evaluation.
    pub path: PathBuf,
    /// IDX labels of `path` (optional).
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// Labeled test images for kNN / linear-probe evaluation (IDX file or class folders).
    #[serde(default)]
    pub test_path: Option<PathBuf>,
    /// IDX labels of `test_path`.
    #[serde(default)]
    pub test_labels: Option<PathBuf>,
    /// Fraction of the training images held out for the evaluation loss.
    #[serde(default = "default_heldout")]
    pub heldout_fraction: f64,
    /// Skip corrupt image files (counted in the summary) instead of failing.
    #[serde(default)]
    pub skip_corrupt: bool,
    /// Use only the first N training (and test) images: smoke tests and quick trials.
    #[serde(default)]
    pub max_images: Option<usize>,
}

/// Augmentation: a recipe plus overrides of its fields (`autodidact_data::augment::Augment`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentSection {
    /// `simclr` (SimCLR's recipe, the default for SimCLR), `mae` (random resized crop with
    /// scale 0.2–1 and flips, MAE's recipe and its default) or `none` (normalize only).
    #[serde(default)]
    pub preset: Option<AugmentPreset>,
    /// Output view size (height, width); default: the images' size.
    #[serde(default)]
    pub size: Option<(usize, usize)>,
    /// Random-resized-crop scale range.
    #[serde(default)]
    pub crop_scale: Option<(f32, f32)>,
    /// Horizontal flip probability.
    #[serde(default)]
    pub hflip: Option<f32>,
    /// Colour jitter (`brightness`, `contrast`, `saturation`, `hue`, `p`).
    #[serde(default)]
    pub jitter: Option<autodidact_data::augment::JitterSpec>,
    /// Random grayscale probability (RGB only).
    #[serde(default)]
    pub grayscale: Option<f32>,
    /// Gaussian blur (`p`, `sigma`).
    #[serde(default)]
    pub blur: Option<autodidact_data::augment::BlurSpec>,
    /// Solarization probability.
    #[serde(default)]
    pub solarize: Option<f32>,
    /// Per-channel normalization mean in [0, 1] units; default: measured on the training set.
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel normalization std; default: measured on the training set.
    #[serde(default)]
    pub std: Option<Vec<f32>>,
}

/// Named augmentation recipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AugmentPreset {
    /// Chen et al. 2020, appendix A.
    Simclr,
    /// He et al. 2021: random resized crop (0.2–1) and horizontal flip.
    Mae,
    /// Normalization only.
    None,
}

/// The image objective: `[objective] type = "simclr" | "mae"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum VisionObjective {
    /// SimCLR (Chen et al. 2020).
    Simclr(SimClrSection),
    /// Masked autoencoder (He et al. 2021).
    Mae(MaeSection),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimClrSection {
    /// NT-Xent temperature.
    #[serde(default = "default_simclr_temperature")]
    pub temperature: f64,
    /// Hidden width of the projection head (default: the encoder's feature width).
    #[serde(default)]
    pub projection_hidden: Option<usize>,
    /// Output width of the projection head.
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
}

fn default_simclr_temperature() -> f64 {
    0.5
}
fn default_projection_dim() -> usize {
    128
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaeSection {
    /// Fraction of patches hidden from the encoder.
    #[serde(default = "default_mae_ratio")]
    pub mask_ratio: f64,
    /// Normalize each target patch by its mean and variance.
    #[serde(default = "yes")]
    pub norm_pix_loss: bool,
    /// Decoder width, blocks and heads.
    pub decoder: autodidact_models::mae::MaeDecoderConfig,
}

fn default_mae_ratio() -> f64 {
    0.75
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrozenEvalSection {
    /// Neighbours of the kNN classifier.
    #[serde(default = "default_knn_k")]
    pub knn_k: usize,
    /// Temperature of the kNN vote weights `exp(sim / T)`.
    #[serde(default = "default_knn_temperature")]
    pub knn_temperature: f64,
    /// L2 penalty of the linear probe.
    #[serde(default = "default_probe_l2")]
    pub probe_l2: f64,
    /// Full-batch iterations of the linear probe.
    #[serde(default = "default_probe_steps")]
    pub probe_steps: usize,
    /// Learning rate of the linear probe.
    #[serde(default = "default_probe_lr")]
    pub probe_lr: f64,
    /// Also evaluate every this many epochs during training (0 = at the end only).
    #[serde(default)]
    pub every_epochs: u64,
}

impl Default for FrozenEvalSection {
    fn default() -> Self {
        Self {
            knn_k: default_knn_k(),
            knn_temperature: default_knn_temperature(),
            probe_l2: default_probe_l2(),
            probe_steps: default_probe_steps(),
            probe_lr: default_probe_lr(),
            every_epochs: 0,
        }
    }
}

fn default_knn_k() -> usize {
    20
}
fn default_knn_temperature() -> f64 {
    0.07
}
fn default_probe_l2() -> f64 {
    1e-4
}
fn default_probe_steps() -> usize {
    500
}
fn default_probe_lr() -> f64 {
    0.05
}

/// Whether a config file is for images (`objective.type` is `simclr` or `mae`).
///
/// # Errors
/// Unreadable file or TOML syntax.
pub fn is_vision(path: &Path, overrides: &[String]) -> Result<bool> {
    let table: toml::Table = parse(path, overrides)?;
    let kind = table.get("objective").and_then(|o| o.get("type")).and_then(|t| t.as_str()).unwrap_or_default().to_string();
    Ok(matches!(kind.as_str(), "simclr" | "mae"))
}

/// Reads and validates an image pretraining config; paths become absolute.
///
/// # Errors
/// As [`load`].
pub fn load_vision(path: &Path, overrides: &[String]) -> Result<VisionConfig> {
    let mut config: VisionConfig = parse(path, overrides)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let d = &mut config.data;
    d.path = absolute(base, &d.path);
    for p in [&mut d.labels, &mut d.test_path, &mut d.test_labels].into_iter().flatten() {
        *p = absolute(base, p);
    }
    config.validate().map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok(config)
}

impl VisionConfig {
    fn validate(&self) -> Result<()> {
        self.run.validate()?;
        let d = &self.data;
        if !(0.0..1.0).contains(&d.heldout_fraction) || d.heldout_fraction == 0.0 {
            bail!("data.heldout_fraction: {} must be in (0, 1)", d.heldout_fraction);
        }
        if d.max_images == Some(0) {
            bail!("data.max_images: must be at least 1");
        }
        if d.test_labels.is_some() && d.test_path.is_none() {
            bail!("data.test_labels: set data.test_path too");
        }
        match &self.objective {
            VisionObjective::Simclr(s) => {
                if !(s.temperature > 0.0 && s.temperature.is_finite()) {
                    bail!("objective.temperature: {} must be positive", s.temperature);
                }
                if s.projection_dim == 0 || s.projection_hidden == Some(0) {
                    bail!("objective.projection_dim / projection_hidden: must be at least 1");
                }
                if self.train.batch_size < 2 {
                    bail!("train.batch_size: SimCLR needs at least 2 images per batch (the others are the negatives)");
                }
            }
            VisionObjective::Mae(m) => {
                if !(m.mask_ratio > 0.0 && m.mask_ratio < 1.0) {
                    bail!("objective.mask_ratio: {} must be in (0, 1)", m.mask_ratio);
                }
                if !matches!(self.model, ImageEncoderConfig::Vit(_)) {
                    bail!("model.arch: MAE needs a ViT encoder (arch = \"vit\")");
                }
                m.decoder.validate().map_err(|e| anyhow!("objective.{e}"))?;
            }
        }
        let e = &self.eval;
        if e.knn_k == 0 || e.probe_steps == 0 || !(e.knn_temperature > 0.0 && e.probe_lr > 0.0 && e.probe_l2 >= 0.0) {
            bail!("eval: knn_k, probe_steps, knn_temperature and probe_lr must be positive, probe_l2 non-negative");
        }
        self.train.validate()
    }
}

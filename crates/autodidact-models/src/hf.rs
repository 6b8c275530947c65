//! HuggingFace `transformers` interop for BERT: `config.json` and `model.safetensors` in the
//! layout `BertForMaskedLM.from_pretrained` / `save_pretrained` use.
//!
//! Tensor names differ from ours in three ways only: `attention.self` (ours `self_attn`, a
//! Rust keyword), `LayerNorm.weight/bias` (ours `layer_norm.gamma/beta`) and Linear weights,
//! which PyTorch stores `[out, in]` and burn `[in, out]`. burn-store's PyTorch adapters do the
//! last two; two regexes here do the first and the `LayerNorm` spelling, in both directions.
//! The MLM decoder is tied to the word embeddings, as in HF, so `cls.predictions.decoder.*`
//! is neither written nor read (transformers ties it on load).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use crate::bert::{BertConfig, BertForMaskedLM};
use crate::error::ModelError;

/// HF's name for the model config file.
pub const CONFIG_FILE: &str = "config.json";
/// HF's name for the weights file.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Our module path → HF name (after burn-store's adapter has renamed `gamma`/`beta`).
const TO_HF: [(&str, &str); 2] = [(r"\.self_attn\.", ".self."), (r"(^|\.)layer_norm\.", "${1}LayerNorm.")];
/// HF name → our module path.
const FROM_HF: [(&str, &str); 2] = [(r"\.self\.", ".self_attn."), (r"(^|\.)LayerNorm\.", "${1}layer_norm.")];
/// Names of a bare `BertModel` checkpoint, which `BertForMaskedLM` keeps under `bert.`.
const BARE_PREFIX: (&str, &str) = (r"^(embeddings|encoder|pooler)\.", "bert.$1.");

/// Tensors HF checkpoints may carry that this model has no use for: the pooler (trained by
/// next-sentence prediction), the NSP head, the tied decoder, and old `position_ids` buffers.
fn is_ignorable(hf_name: &str) -> bool {
    hf_name.starts_with("bert.pooler.")
        || hf_name.starts_with("cls.seq_relationship.")
        || hf_name.starts_with("cls.predictions.decoder.")
        || hf_name.ends_with(".position_ids")
}

/// Which HF class a checkpoint is written as (or was read from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HfArchitecture {
    /// `BertForMaskedLM`: tensors under `bert.` plus the MLM head under `cls.`.
    BertForMaskedLM,
    /// `BertModel`: the bare encoder, tensors at the root (`embeddings.`, `encoder.`).
    BertModel,
}

impl HfArchitecture {
    /// The class name, as in `config.json`'s `architectures`.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::BertForMaskedLM => "BertForMaskedLM",
            Self::BertModel => "BertModel",
        }
    }
}

/// The fields of a HF BERT `config.json` that matter here, with HF's defaults; other fields
/// are ignored, as transformers does.
#[derive(Debug, Deserialize)]
struct HfConfigFile {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default = "hf_defaults::vocab_size")]
    vocab_size: usize,
    #[serde(default = "hf_defaults::hidden_size")]
    hidden_size: usize,
    #[serde(default = "hf_defaults::num_layers")]
    num_hidden_layers: usize,
    #[serde(default = "hf_defaults::num_heads")]
    num_attention_heads: usize,
    #[serde(default = "hf_defaults::intermediate_size")]
    intermediate_size: usize,
    #[serde(default = "hf_defaults::hidden_act")]
    hidden_act: String,
    #[serde(default = "hf_defaults::dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "hf_defaults::dropout")]
    attention_probs_dropout_prob: f64,
    #[serde(default = "hf_defaults::max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "hf_defaults::type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "hf_defaults::initializer_range")]
    initializer_range: f64,
    #[serde(default = "hf_defaults::layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "hf_defaults::position_embedding_type")]
    position_embedding_type: String,
    #[serde(default = "hf_defaults::yes")]
    tie_word_embeddings: bool,
    #[serde(default)]
    is_decoder: bool,
    #[serde(default)]
    add_cross_attention: bool,
}

/// `transformers.BertConfig` defaults (bert-base).
mod hf_defaults {
    pub fn vocab_size() -> usize {
        30522
    }
    pub fn hidden_size() -> usize {
        768
    }
    pub fn num_layers() -> usize {
        12
    }
    pub fn num_heads() -> usize {
        12
    }
    pub fn intermediate_size() -> usize {
        3072
    }
    pub fn hidden_act() -> String {
        "gelu".into()
    }
    pub fn dropout() -> f64 {
        0.1
    }
    pub fn max_positions() -> usize {
        512
    }
    pub fn type_vocab_size() -> usize {
        2
    }
    pub fn initializer_range() -> f64 {
        0.02
    }
    pub fn layer_norm_eps() -> f64 {
        1e-12
    }
    pub fn position_embedding_type() -> String {
        "absolute".into()
    }
    pub fn yes() -> bool {
        true
    }
}

/// Reads `DIR/config.json` into a validated [`BertConfig`].
///
/// # Errors
/// Unreadable or malformed JSON, or a model this BERT does not implement (another
/// `model_type`, an activation other than exact GELU, relative positions, untied decoder,
/// decoder/cross-attention configs), naming the field.
pub fn read_config(dir: &Path) -> Result<BertConfig, ModelError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
    let err = |field: &str, message: String| ModelError::HfConfig { path: path.clone(), field: field.into(), message };
    let raw: HfConfigFile = serde_json::from_slice(&bytes).map_err(|e| err("(file)", e.to_string()))?;
    if let Some(t) = raw.model_type.as_deref().filter(|t| *t != "bert") {
        return Err(err("model_type", format!("{t:?} is not supported (only \"bert\")")));
    }
    if raw.hidden_act != "gelu" {
        return Err(err("hidden_act", format!("{:?} is not supported: this BERT uses the exact (erf) GELU, HF's \"gelu\"", raw.hidden_act)));
    }
    if raw.position_embedding_type != "absolute" {
        return Err(err("position_embedding_type", format!("{:?} is not supported (only \"absolute\")", raw.position_embedding_type)));
    }
    if !raw.tie_word_embeddings {
        return Err(err("tie_word_embeddings", "false is not supported: the MLM decoder is tied to the word embeddings".into()));
    }
    if raw.is_decoder || raw.add_cross_attention {
        return Err(err("is_decoder", "decoder and cross-attention configurations are not supported".into()));
    }
    let config = BertConfig {
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: raw.num_attention_heads,
        intermediate_size: raw.intermediate_size,
        hidden_dropout_prob: raw.hidden_dropout_prob,
        attention_probs_dropout_prob: raw.attention_probs_dropout_prob,
        max_position_embeddings: raw.max_position_embeddings,
        type_vocab_size: raw.type_vocab_size,
        initializer_range: raw.initializer_range,
        layer_norm_eps: raw.layer_norm_eps,
    };
    config.validate().map_err(|e| match e {
        ModelError::Config { field, message } => err(field, message),
        other => other,
    })?;
    Ok(config)
}

/// The `config.json` transformers writes for this model.
pub fn config_json(config: &BertConfig, architecture: HfArchitecture, pad_token_id: u32) -> serde_json::Value {
    serde_json::json!({
        "architectures": [architecture.class_name()],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": pad_token_id,
        "tie_word_embeddings": true,
        "is_decoder": false,
        "dtype": "float32",
    })
}

fn remapper(patterns: &[(&str, &str)]) -> KeyRemapper {
    // The patterns are constants of this module, tested by the round trip.
    KeyRemapper::from_patterns(patterns.to_vec()).unwrap_or_default()
}

fn apply(remapper: &KeyRemapper, name: &str) -> String {
    remapper.to_regex_pairs().iter().fold(name.to_string(), |n, (re, to)| re.replace_all(&n, to.as_str()).into_owned())
}

/// Writes the weights in HF's layout: `[out, in]` Linear weights, HF names, metadata
/// `format = pt` (transformers refuses safetensors without it). `BertModel` writes only the
/// encoder, with root names.
///
/// # Errors
/// The file cannot be written.
pub fn save_weights(model: &BertForMaskedLM, architecture: HfArchitecture, path: &Path) -> Result<(), ModelError> {
    let mut store = SafetensorsStore::from_file(path)
        .overwrite(true)
        .clear_metadata()
        .metadata("format", "pt")
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(remapper(&TO_HF));
    match architecture {
        HfArchitecture::BertForMaskedLM => model.save_into(&mut store),
        HfArchitecture::BertModel => model.bert.save_into(&mut store),
    }
    .map_err(|e| ModelError::weights(path, e))
}

/// What [`load_weights`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The layout the file was in.
    pub architecture: HfArchitecture,
    /// Number of tensors loaded.
    pub loaded: usize,
    /// Model tensors the file lacked, left at their initialization (the MLM head of a bare
    /// encoder; the decoder stays tied to the loaded word embeddings).
    pub initialized: Vec<String>,
    /// File tensors this model does not use (pooler, NSP head, tied decoder copies).
    pub ignored: Vec<String>,
}

/// The name and shape of every tensor `model` expects, in HF naming and PyTorch layout.
fn expected_tensors(model: &BertForMaskedLM) -> BTreeMap<String, Vec<usize>> {
    let to_hf = remapper(&TO_HF);
    model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), false).into_iter().map(|t| (apply(&to_hf, &t.name), t.shape.to_vec())).collect()
}

/// Name → (dtype, shape) of every tensor in a safetensors file, from its header alone.
fn read_header(path: &Path) -> Result<BTreeMap<String, (safetensors::Dtype, Vec<usize>)>, ModelError> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| ModelError::weights(path, "not a safetensors file (shorter than its 8-byte header length)"))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 || 8 + n > file_len {
        return Err(ModelError::weights(path, format!("not a safetensors file (header length {n} does not fit a {file_len}-byte file)")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|e| ModelError::io(path, e))?;
    let metadata: safetensors::tensor::Metadata = serde_json::from_slice(&header).map_err(|e| ModelError::weights(path, format!("malformed safetensors header: {e}")))?;
    if 8 + n + metadata.data_len() as u64 != file_len {
        return Err(ModelError::weights(path, format!("truncated or padded: the header describes {} bytes of data, the file holds {}", metadata.data_len(), file_len - 8 - n)));
    }
    Ok(metadata.tensors().into_iter().map(|(name, info)| (name, (info.dtype, info.shape.clone()))).collect())
}

/// Compares a file's tensors (HF names, already under `bert.`) with what the model expects.
fn check_fit(path: &Path, found: &BTreeMap<String, (safetensors::Dtype, Vec<usize>)>, expected: &BTreeMap<String, Vec<usize>>) -> Result<(Vec<String>, Vec<String>), ModelError> {
    use safetensors::Dtype;
    let (mut problems, mut ignored, mut initialized) = (Vec::new(), Vec::new(), Vec::new());
    for (name, (dtype, shape)) in found {
        match expected.get(name) {
            None if is_ignorable(name) => ignored.push(name.clone()),
            None => problems.push(format!("unexpected tensor {name} {shape:?}")),
            Some(want) if want != shape => problems.push(format!("{name}: shape {shape:?} in the file, the model (config.json) needs {want:?}")),
            Some(_) if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) => problems.push(format!("{name}: dtype {dtype:?} is not a float type")),
            Some(_) => {}
        }
    }
    for name in expected.keys().filter(|n| !found.contains_key(*n)) {
        if name.starts_with("cls.") {
            initialized.push(name.clone());
        } else {
            problems.push(format!("missing tensor {name}"));
        }
    }
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(12).map(String::as_str).collect();
        let more = if problems.len() > shown.len() { format!(" (and {} more)", problems.len() - shown.len()) } else { String::new() };
        return Err(ModelError::weights(path, format!("does not fit a BERT of this config: {}{more}", shown.join("; "))));
    }
    Ok((initialized, ignored))
}

/// Loads HF BERT weights (`BertForMaskedLM`, `BertForPreTraining` or a bare `BertModel`) into
/// `model`, which must be built from the same config. F16/BF16/F64 tensors are cast to F32.
///
/// Every name and shape is checked against the model before anything is loaded; a missing
/// MLM head is left at its initialization (and reported), anything else missing, unexpected
/// or mis-shaped is an error listing the tensors.
///
/// # Errors
/// Unreadable or malformed file, or tensors that do not fit.
pub fn load_weights(mut model: BertForMaskedLM, path: &Path) -> Result<(BertForMaskedLM, ImportReport), ModelError> {
    let header = read_header(path)?;
    let architecture = if header.keys().any(|n| n.starts_with("bert.")) { HfArchitecture::BertForMaskedLM } else { HfArchitecture::BertModel };
    let mut from_hf = FROM_HF.to_vec();
    if architecture == HfArchitecture::BertModel {
        from_hf.push(BARE_PREFIX);
    }
    let to_prefixed = remapper(&[BARE_PREFIX]);
    let found = header.into_iter().map(|(name, v)| (if architecture == HfArchitecture::BertModel { apply(&to_prefixed, &name) } else { name }, v)).collect();
    let (initialized, mut ignored) = check_fit(path, &found, &expected_tensors(&model))?;
    if architecture == HfArchitecture::BertModel {
        // Report the names as they are in the file.
        ignored = ignored.into_iter().map(|n| n.strip_prefix("bert.").map(str::to_string).unwrap_or(n)).collect();
    }

    let adapter = PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32));
    let mut store = SafetensorsStore::from_file(path).with_from_adapter(adapter).remap(remapper(&from_hf)).allow_partial(true);
    let result = model.load_from(&mut store).map_err(|e| ModelError::weights(path, e))?;
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(ToString::to_string).collect();
        return Err(ModelError::weights(path, errors.join("; ")));
    }
    let report = ImportReport { architecture, loaded: result.applied.len(), initialized, ignored };
    Ok((model, report))
}

/// Compares every parameter of two models bit for bit; returns the names that differ.
pub fn differing_tensors(a: &BertForMaskedLM, b: &BertForMaskedLM) -> Vec<String> {
    let bytes = |m: &BertForMaskedLM| -> BTreeMap<String, Option<Vec<u8>>> {
        m.collect(None, None, false).into_iter().map(|t| (t.name.clone(), t.to_bytes().ok().map(|b| b.to_vec()))).collect()
    };
    let (a, b) = (bytes(a), bytes(b));
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names.into_iter().filter(|n| a.get(*n).and_then(Option::as_ref).is_none() || a.get(*n) != b.get(*n)).cloned().collect()
}

/// `DIR/model.safetensors`, with a clear error for checkpoints saved another way.
///
/// # Errors
/// No `model.safetensors` in the directory.
pub fn weights_path(dir: &Path) -> Result<PathBuf, ModelError> {
    let path = dir.join(WEIGHTS_FILE);
    if path.is_file() {
        return Ok(path);
    }
    let hint = if dir.join("pytorch_model.bin").exists() {
        "; the directory has only pytorch_model.bin: re-save it with `model.save_pretrained(dir, safe_serialization=True)`"
    } else if dir.join("model.safetensors.index.json").exists() {
        "; sharded checkpoints are not supported: re-save with a larger `max_shard_size`"
    } else {
        ""
    };
    Err(ModelError::weights(&path, format!("not found{hint}")))
}

//! A BERT encoder (Devlin et al. 2019) and its masked-language-model head.
//!
//! The module tree mirrors HuggingFace `transformers`' `modeling_bert.py` field by field
//! (`embeddings.word_embeddings`, `encoder.layer.{i}.attention.self_attn.query`, ...), so that
//! a checkpoint maps one-to-one onto HF names; the only renames are Rust keywords
//! (`self` → `self_attn`) and burn's LayerNorm parameter names (`gamma`/`beta` →
//! `weight`/`bias`). Linear weights are burn's `[in, out]`; HF export transposes them to
//! PyTorch's `[out, in]`.
//!
//! Architecture as in real BERT checkpoints: post-LayerNorm residual blocks, exact (erf) GELU,
//! learned absolute positions, token-type embeddings, additive padding mask, `layer_norm_eps`
//! from the config.

use burn::module::{Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::cpu::{WeightLayout, affine, attention_heads, dropout, gelu, layer_norm, linear, residual_linear};
use crate::error::ModelError;

/// BERT hyper-parameters; field names and meaning follow HF's `BertConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    /// Vocabulary size (set from the tokenizer).
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Dropout on embeddings and residual branches.
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    pub attention_probs_dropout_prob: f64,
    /// Largest sequence length the position table holds.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    pub type_vocab_size: usize,
    /// Standard deviation of the normal initializer.
    pub initializer_range: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl BertConfig {
    /// Checks the hyper-parameters; the error names the offending field.
    ///
    /// # Errors
    /// A zero size, heads that do not divide the width, or a probability outside `[0, 1)`.
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ModelError::Config { field, message: "must be greater than 0".into() });
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ModelError::Config {
                field: "num_attention_heads",
                message: format!("{} does not divide hidden_size {}", self.num_attention_heads, self.hidden_size),
            });
        }
        for (field, p) in [("hidden_dropout_prob", self.hidden_dropout_prob), ("attention_probs_dropout_prob", self.attention_probs_dropout_prob)] {
            if !(0.0..1.0).contains(&p) {
                return Err(ModelError::Config { field, message: format!("{p} is not in [0, 1)") });
            }
        }
        if !(self.layer_norm_eps > 0.0 && self.initializer_range > 0.0) {
            return Err(ModelError::Config { field: "layer_norm_eps", message: "layer_norm_eps and initializer_range must be positive".into() });
        }
        Ok(())
    }

    /// Builds the encoder with HF's initialization: N(0, `initializer_range`) weights, zero
    /// biases, unit LayerNorm.
    pub fn init(&self, device: &Device) -> BertModel {
        let h = self.hidden_size;
        BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: self.embedding(self.vocab_size, device),
                position_embeddings: self.embedding(self.max_position_embeddings, device),
                token_type_embeddings: self.embedding(self.type_vocab_size, device),
                layer_norm: self.layer_norm(device),
                dropout: self.hidden_dropout(),
            },
            encoder: BertEncoder { layer: (0..self.num_hidden_layers).map(|_| self.init_layer(device)).collect() },
            num_attention_heads: self.num_attention_heads,
            hidden_size: h,
            layer_norm_eps: self.layer_norm_eps,
        }
    }

    fn init_layer(&self, device: &Device) -> BertLayer {
        let h = self.hidden_size;
        BertLayer {
            attention: BertAttention {
                self_attn: BertSelfAttention {
                    query: self.linear(h, h, device),
                    key: self.linear(h, h, device),
                    value: self.linear(h, h, device),
                    dropout: DropoutConfig::new(self.attention_probs_dropout_prob).init(),
                    num_heads: self.num_attention_heads,
                },
                output: BertSelfOutput { dense: self.linear(h, h, device), layer_norm: self.layer_norm(device), dropout: self.hidden_dropout() },
            },
            intermediate: BertIntermediate { dense: self.linear(h, self.intermediate_size, device) },
            output: BertOutput { dense: self.linear(self.intermediate_size, h, device), layer_norm: self.layer_norm(device), dropout: self.hidden_dropout() },
        }
    }

    fn normal(&self) -> Initializer {
        Initializer::Normal { mean: 0.0, std: self.initializer_range }
    }

    pub(crate) fn linear(&self, d_in: usize, d_out: usize, device: &Device) -> Linear {
        let mut linear = LinearConfig::new(d_in, d_out).with_initializer(self.normal()).init(device);
        linear.bias = Some(Initializer::Zeros.init([d_out], device));
        linear
    }

    fn embedding(&self, n: usize, device: &Device) -> Embedding {
        EmbeddingConfig::new(n, self.hidden_size).with_initializer(self.normal()).init(device)
    }

    pub(crate) fn layer_norm(&self, device: &Device) -> LayerNorm {
        LayerNormConfig::new(self.hidden_size).with_epsilon(self.layer_norm_eps).init(device)
    }

    fn hidden_dropout(&self) -> Dropout {
        DropoutConfig::new(self.hidden_dropout_prob).init()
    }
}

/// Encoder input.
///
/// # Shapes
/// - `input_ids`, `token_type_ids`: `[batch, seq]`
/// - `attention_mask`: `[batch, seq]`, true for real tokens; `None` when nothing is padded.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// Token ids.
    pub input_ids: Tensor<2, Int>,
    /// Segment ids.
    pub token_type_ids: Tensor<2, Int>,
    /// Which positions hold real tokens.
    pub attention_mask: Option<Tensor<2, Bool>>,
}

impl BertInput {
    /// Uploads host ids (row-major `[batch, seq]`) to `device`. The mask is omitted when
    /// every position is real, which saves the masking work.
    pub fn from_host(input_ids: &[u32], token_type_ids: &[u32], attention_mask: &[u8], batch: usize, seq: usize, device: &Device) -> Self {
        let ints = |v: &[u32]| Tensor::<2, Int>::from_data(TensorData::new(v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), [batch, seq]), device);
        let attention_mask = (!attention_mask.iter().all(|&m| m != 0))
            .then(|| Tensor::<2, Bool>::from_data(TensorData::new(attention_mask.iter().map(|&m| m != 0).collect::<Vec<_>>(), [batch, seq]), device));
        Self { input_ids: ints(input_ids), token_type_ids: ints(token_type_ids), attention_mask }
    }
}

/// How a sequence of hidden states becomes one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The hidden state of the first token (`[CLS]`), as BERT classifiers use.
    #[default]
    Cls,
    /// The mean over real (non-padding) tokens, as sentence-embedding models often use.
    Mean,
}

impl Pooling {
    /// Pools hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`; `attention_mask`: `[batch, seq]` (true = real token)
    /// - output: `[batch, hidden]`
    pub fn pool(self, hidden: Tensor<3>, attention_mask: Option<Tensor<2, Bool>>) -> Tensor<2> {
        let [b, t, h] = hidden.dims();
        match (self, attention_mask) {
            (Self::Cls, _) => hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]),
            (Self::Mean, None) => hidden.mean_dim(1).reshape([b, h]),
            (Self::Mean, Some(mask)) => {
                let m = mask.float().reshape([b, t, 1]); // (B, T, 1)
                let counts = m.clone().sum_dim(1).reshape([b, 1]).clamp_min(1.0); // (B, 1)
                (hidden * m).sum_dim(1).reshape([b, h]) / counts
            }
        }
    }
}

/// The encoder: embeddings then a stack of transformer layers (HF `BertModel` without pooler).
#[derive(Module, Debug)]
pub struct BertModel {
    /// Word, position and token-type embeddings.
    pub embeddings: BertEmbeddings,
    /// Transformer layers.
    pub encoder: BertEncoder,
    num_attention_heads: usize,
    hidden_size: usize,
    layer_norm_eps: f64,
}

impl BertModel {
    /// Hidden states of the last layer.
    ///
    /// # Shapes
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        // Additive mask: 0 for real tokens, a large negative number for padding. (B, T)
        let mask_bias = input.attention_mask.map(|m| Tensor::<2>::zeros(m.dims(), &m.device()).mask_fill(m.bool_not(), -1.0e9));
        let eps = self.layer_norm_eps;
        let mut x = self.embeddings.forward(input.input_ids, input.token_type_ids, eps);
        for layer in &self.encoder.layer {
            x = layer.forward(x, mask_bias.clone(), eps);
        }
        x
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Largest sequence length supported.
    pub fn max_positions(&self) -> usize {
        self.embeddings.position_embeddings.weight.dims()[0]
    }
}

/// HF `BertEmbeddings`.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// Token embedding table `[vocab, hidden]`, tied to the MLM decoder.
    pub word_embeddings: Embedding,
    /// Learned absolute positions `[max_positions, hidden]`.
    pub position_embeddings: Embedding,
    /// Segment embeddings `[type_vocab, hidden]`.
    pub token_type_embeddings: Embedding,
    /// LayerNorm after the sum (HF `LayerNorm`).
    pub layer_norm: LayerNorm,
    /// Dropout after the LayerNorm.
    pub dropout: Dropout,
}

impl BertEmbeddings {
    fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>, eps: f64) -> Tensor<3> {
        let [_, t] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device).reshape([1, t]);
        let x = self.word_embeddings.forward(input_ids) // (B, T, H)
            + self.position_embeddings.forward(positions) // (1, T, H)
            + self.token_type_embeddings.forward(token_type_ids);
        dropout(&self.dropout, layer_norm(&self.layer_norm, eps, x))
    }
}

/// HF `BertEncoder`.
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// The layers, `encoder.layer.{i}`.
    pub layer: Vec<BertLayer>,
}

/// HF `BertLayer`: attention block then feed-forward block, each post-LayerNorm.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Self-attention with its output projection.
    pub attention: BertAttention,
    /// First feed-forward projection.
    pub intermediate: BertIntermediate,
    /// Second feed-forward projection with residual and LayerNorm.
    pub output: BertOutput,
}

impl BertLayer {
    fn forward(&self, x: Tensor<3>, mask_bias: Option<Tensor<2>>, eps: f64) -> Tensor<3> {
        let attn = self.attention.self_attn.forward(x.clone(), mask_bias);
        let x = layer_norm(&self.attention.output.layer_norm, eps, residual_linear(x, &self.attention.output.dropout, &self.attention.output.dense, attn));
        let h = gelu(linear(&self.intermediate.dense, x.clone()));
        layer_norm(&self.output.layer_norm, eps, residual_linear(x, &self.output.dropout, &self.output.dense, h))
    }
}

/// HF `BertAttention`.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// HF `attention.self`.
    pub self_attn: BertSelfAttention,
    /// HF `attention.output`.
    pub output: BertSelfOutput,
}

/// HF `BertSelfAttention`: multi-head scaled dot-product attention (Vaswani et al. 2017, §3.2).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Dropout on attention probabilities.
    pub dropout: Dropout,
    num_heads: usize,
}

impl BertSelfAttention {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`, `mask_bias`: `[batch, seq]`
    /// - output: `[batch, seq, hidden]` (heads concatenated, before the output projection)
    fn forward(&self, x: Tensor<3>, mask_bias: Option<Tensor<2>>) -> Tensor<3> {
        attention_heads([&self.query, &self.key, &self.value], &self.dropout, self.num_heads, x, mask_bias)
    }
}

/// HF `BertSelfOutput`.
#[derive(Module, Debug)]
pub struct BertSelfOutput {
    /// Output projection.
    pub dense: Linear,
    /// Residual LayerNorm.
    pub layer_norm: LayerNorm,
    /// Dropout before the residual.
    pub dropout: Dropout,
}

/// HF `BertIntermediate`.
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// `hidden → intermediate`, followed by GELU.
    pub dense: Linear,
}

/// HF `BertOutput`.
#[derive(Module, Debug)]
pub struct BertOutput {
    /// `intermediate → hidden`.
    pub dense: Linear,
    /// Residual LayerNorm.
    pub layer_norm: LayerNorm,
    /// Dropout before the residual.
    pub dropout: Dropout,
}

/// HF `BertForMaskedLM`: the encoder plus the MLM head, decoder tied to the word embeddings.
#[derive(Module, Debug)]
pub struct BertForMaskedLM {
    /// The encoder (HF prefix `bert.`).
    pub bert: BertModel,
    /// The head (HF prefix `cls.`).
    pub cls: BertOnlyMlmHead,
}

/// HF `BertOnlyMLMHead`.
#[derive(Module, Debug)]
pub struct BertOnlyMlmHead {
    /// HF `cls.predictions`.
    pub predictions: BertLmPredictionHead,
}

/// HF `BertLMPredictionHead`: transform, then the tied decoder plus its own bias.
#[derive(Module, Debug)]
pub struct BertLmPredictionHead {
    /// Dense + GELU + LayerNorm.
    pub transform: BertPredictionHeadTransform,
    /// Output bias `[vocab]` (HF `cls.predictions.bias`).
    pub bias: Param<Tensor<1>>,
}

/// HF `BertPredictionHeadTransform`.
#[derive(Module, Debug)]
pub struct BertPredictionHeadTransform {
    /// `hidden → hidden`.
    pub dense: Linear,
    /// LayerNorm after GELU.
    pub layer_norm: LayerNorm,
}

impl BertForMaskedLM {
    /// A freshly initialized model.
    pub fn init(config: &BertConfig, device: &Device) -> Self {
        Self {
            bert: config.init(device),
            cls: BertOnlyMlmHead {
                predictions: BertLmPredictionHead {
                    transform: BertPredictionHeadTransform { dense: config.linear(config.hidden_size, config.hidden_size, device), layer_norm: config.layer_norm(device) },
                    bias: Initializer::Zeros.init([config.vocab_size], device),
                },
            },
        }
    }

    /// Vocabulary logits at every position (HF `BertForMaskedLM.forward(...).logits`).
    ///
    /// # Shapes
    /// - output: `[batch, seq, vocab]`
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        let hidden = self.bert.forward(input); // (B, T, H)
        let [b, t, h] = hidden.dims();
        let logits = self.predict(hidden.reshape([b * t, h])); // (B*T, V)
        let v = logits.dims()[1];
        logits.reshape([b, t, v])
    }

    /// Vocabulary logits at the masked positions only: hidden states are gathered first,
    /// so the `[hidden, vocab]` projection (the largest cost) runs on `num_masked` rows.
    ///
    /// # Shapes
    /// - `masked_positions`: `[num_masked]`, indices into the flattened `[batch * seq]`
    /// - output: `[num_masked, vocab]`
    pub fn forward_masked(&self, input: BertInput, masked_positions: Tensor<1, Int>) -> Tensor<2> {
        let hidden = self.bert.forward(input); // (B, T, H)
        let [b, t, h] = hidden.dims();
        self.predict(hidden.reshape([b * t, h]).select(0, masked_positions))
    }

    /// The MLM head on hidden-state rows: transform, then the decoder tied to the word
    /// embeddings plus the output bias.
    ///
    /// # Shapes
    /// - `hidden`: `[rows, hidden]`; output: `[rows, vocab]`
    fn predict(&self, hidden: Tensor<2>) -> Tensor<2> {
        let head = &self.cls.predictions;
        let x = layer_norm(&head.transform.layer_norm, self.bert.layer_norm_eps, gelu(linear(&head.transform.dense, hidden)));
        let decoder = self.bert.embeddings.word_embeddings.weight.val(); // (V, H)
        affine(x, decoder, head.bias.val(), WeightLayout::OutIn) // (rows, V)
    }
}

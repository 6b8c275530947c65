//! Host-side batch types produced by the data pipeline and consumed by objectives.
//!
//! Batches are plain vectors (row-major) rather than tensors: the data crate never touches a
//! device, and the objective uploads what it needs in one place.

/// A batch for masked-language modelling (Devlin et al. 2019, §3.1).
///
/// # Shapes
/// - `input_ids`, `token_type_ids`, `attention_mask`: `[batch_size * seq_len]`, row-major.
/// - `masked_positions`, `masked_labels`: `[num_masked]`; positions index the flattened
///   `[batch_size * seq_len]` sequence so the model can gather them before the vocabulary
///   projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlmBatch {
    /// Number of sequences.
    pub batch_size: usize,
    /// Tokens per sequence (all sequences are packed or padded to this length).
    pub seq_len: usize,
    /// Token ids after masking (what the encoder sees).
    pub input_ids: Vec<u32>,
    /// Segment ids (all zero for packed pretraining sequences).
    pub token_type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u8>,
    /// Flattened indices of the positions whose original token must be predicted.
    pub masked_positions: Vec<u32>,
    /// The original token at each masked position.
    pub masked_labels: Vec<u32>,
}

impl MlmBatch {
    /// Whole sequences without prediction targets (`[batch_size * seq_len]` ids and
    /// attention mask, one segment), for objectives that use sequences as they are.
    pub fn unmasked(input_ids: Vec<u32>, attention_mask: Vec<u8>, seq_len: usize) -> Self {
        Self {
            batch_size: input_ids.len() / seq_len.max(1),
            seq_len,
            token_type_ids: vec![0; input_ids.len()],
            input_ids,
            attention_mask,
            masked_positions: Vec::new(),
            masked_labels: Vec::new(),
        }
    }

    /// For each target, whether the encoder saw another token in its place (`[MASK]` or a
    /// random token) rather than the original: those targets can only be inferred from
    /// context, while the others can be copied from the input.
    pub fn replaced_targets(&self) -> Vec<bool> {
        self.masked_positions
            .iter()
            .zip(&self.masked_labels)
            .map(|(&pos, &label)| self.input_ids.get(pos as usize) != Some(&label))
            .collect()
    }

    /// Number of positions the loss is computed on.
    pub fn num_masked(&self) -> usize {
        self.masked_positions.len()
    }

    /// Number of real (non-padding) tokens, for throughput figures.
    pub fn num_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }

    /// True when no sequence has padding, so the attention mask can be skipped.
    pub fn is_unpadded(&self) -> bool {
        self.attention_mask.iter().all(|&m| m != 0)
    }
}

/// A batch of labeled sequences for classification (fine-tuning, linear probes).
///
/// # Shapes
/// - `input_ids`, `token_type_ids`, `attention_mask`: `[batch_size * seq_len]`, row-major,
///   right-padded to the longest sequence of the batch.
/// - `labels`: `[batch_size]`, class indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassificationBatch {
    /// Number of sequences.
    pub batch_size: usize,
    /// Tokens per (padded) sequence.
    pub seq_len: usize,
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Segment ids.
    pub token_type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u8>,
    /// Class of each sequence.
    pub labels: Vec<u32>,
}

/// A batch of images, each as one or more augmented views (contrastive methods use two, masked
/// image modelling one), normalized to `f32`.
///
/// # Shapes
/// - `pixels`: `[views * batch_size * channels * height * width]`, view-major: view `v` of
///   image `i` starts at `((v * batch_size + i) * channels) * height * width` (NCHW per view).
/// - `labels`: `[batch_size]` class indices, or empty for unlabeled data.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    /// Number of images.
    pub batch_size: usize,
    /// Views per image.
    pub views: usize,
    /// Channels per view (1 grayscale, 3 RGB).
    pub channels: usize,
    /// View height in pixels.
    pub height: usize,
    /// View width in pixels.
    pub width: usize,
    /// Normalized pixel values, see the type docs for the layout.
    pub pixels: Vec<f32>,
    /// Class of each image (empty when unlabeled).
    pub labels: Vec<u32>,
}

impl ImageBatch {
    /// Values in one view of one image.
    pub fn view_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

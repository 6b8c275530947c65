//! Packed training sequences, seeded resumable sampling, and dynamic MLM masking.

use autodidact_core::batch::MlmBatch;
use autodidact_core::seed::{Stream, derive_seed};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use crate::error::{DataError, Result};
use crate::shards::TokenStream;
use crate::tokenizer::SpecialTokens;

/// Fixed-length sequences cut from a token stream: `[CLS]` followed by `seq_len - 1`
/// consecutive stream tokens (documents inside are separated by `[SEP]`).
#[derive(Debug)]
pub struct PackedSequences {
    stream: TokenStream,
    seq_len: usize,
    cls: u32,
}

impl PackedSequences {
    /// Packs `stream` into sequences of `seq_len` tokens.
    ///
    /// # Errors
    /// `seq_len < 2`, or a stream too short for one sequence.
    pub fn new(stream: TokenStream, seq_len: usize, cls: u32, split: &str) -> Result<Self> {
        if seq_len < 2 {
            return Err(DataError::Invalid(format!("seq_len must be at least 2, got {seq_len}")));
        }
        let this = Self { stream, seq_len, cls };
        if this.is_empty() {
            return Err(DataError::Invalid(format!(
                "the {split} split has {} tokens, fewer than one sequence of {seq_len}: use a larger corpus, a shorter seq_len or (for held-out) a larger heldout_fraction",
                this.stream.len()
            )));
        }
        Ok(this)
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        (self.stream.len() / (self.seq_len as u64 - 1)) as usize
    }

    /// True when there is no full sequence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence length.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Appends sequence `i` (`seq_len` ids) to `out`.
    ///
    /// # Errors
    /// A shard that can no longer be read.
    pub fn read(&self, i: usize, out: &mut Vec<u32>) -> Result<()> {
        let body = self.seq_len - 1;
        out.push(self.cls);
        self.stream.read(i as u64 * body as u64, body, out)
    }
}

/// A seeded epoch-wise shuffle of `n` items, addressed by a global sample counter, so the
/// data position of a run is a single number and resuming needs no stored state.
#[derive(Debug)]
pub struct EpochSampler {
    n: usize,
    seed: u64,
    epoch: Option<u64>,
    order: Vec<u32>,
}

impl EpochSampler {
    /// A sampler over `n` items.
    pub fn new(n: usize, seed: u64) -> Self {
        Self { n, seed, epoch: None, order: Vec::new() }
    }

    /// The item drawn as the `k`-th sample of the run (epoch `k / n`, position `k % n`).
    pub fn index(&mut self, k: u64) -> usize {
        let epoch = k / self.n as u64;
        if self.epoch != Some(epoch) {
            self.order.clear();
            self.order.extend(0..self.n as u32);
            let mut rng = StdRng::seed_from_u64(derive_seed(self.seed, Stream::Order, epoch));
            self.order.shuffle(&mut rng);
            self.epoch = Some(epoch);
        }
        self.order[(k % self.n as u64) as usize] as usize
    }
}

/// Dynamic masking (Devlin et al. 2019, §3.1 and appendix A.1): each non-special token is
/// chosen with probability `mask_ratio`; a chosen token becomes `[MASK]` with probability
/// `mask_prob`, a random non-special token with probability `random_prob`, and stays as it
/// is otherwise. Special tokens and padding are never chosen.
#[derive(Debug, Clone)]
pub struct MlmMasker {
    special: SpecialTokens,
    vocab_size: u32,
    mask_ratio: f64,
    mask_prob: f64,
    random_prob: f64,
}

impl MlmMasker {
    /// A masker for a vocabulary of `vocab_size` with the given special tokens.
    ///
    /// # Errors
    /// Probabilities outside `[0, 1]`, a zero mask ratio, or `mask_prob + random_prob > 1`.
    pub fn new(special: SpecialTokens, vocab_size: usize, mask_ratio: f64, mask_prob: f64, random_prob: f64) -> Result<Self> {
        let unit = 0.0..=1.0;
        if !(mask_ratio > 0.0 && mask_ratio <= 1.0 && unit.contains(&mask_prob) && unit.contains(&random_prob) && mask_prob + random_prob <= 1.0) {
            return Err(DataError::Invalid(format!(
                "invalid masking probabilities: mask_ratio {mask_ratio} must be in (0, 1], mask_prob {mask_prob} and random_prob {random_prob} in [0, 1] with a sum at most 1"
            )));
        }
        Ok(Self { special, vocab_size: vocab_size as u32, mask_ratio, mask_prob, random_prob })
    }

    fn is_special(&self, t: u32) -> bool {
        self.special.all().contains(&t)
    }

    /// Masks `ids` (`batch_size` rows of `seq_len`), all tokens real (no padding).
    ///
    /// At least one position is masked per batch (a batch with no target has no loss).
    pub fn mask(&self, ids: Vec<u32>, seq_len: usize, seed: u64) -> MlmBatch {
        let attention_mask = ids.iter().map(|&t| u8::from(t != self.special.pad)).collect();
        self.mask_with_attention(ids, attention_mask, seq_len, seed)
    }

    /// As [`MlmMasker::mask`], with an explicit attention mask (0 = padding, never masked).
    pub fn mask_with_attention(&self, mut ids: Vec<u32>, attention_mask: Vec<u8>, seq_len: usize, seed: u64) -> MlmBatch {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut positions = Vec::new();
        let mut labels = Vec::new();
        let candidates: Vec<usize> = (0..ids.len()).filter(|&i| attention_mask[i] != 0 && !self.is_special(ids[i])).collect();
        for &i in &candidates {
            if rng.random::<f64>() < self.mask_ratio {
                positions.push(i as u32);
            }
        }
        if positions.is_empty() && !candidates.is_empty() {
            positions.push(candidates[rng.random_range(0..candidates.len())] as u32);
        }
        for &p in &positions {
            let p = p as usize;
            labels.push(ids[p]);
            let r: f64 = rng.random();
            if r < self.mask_prob {
                ids[p] = self.special.mask;
            } else if r < self.mask_prob + self.random_prob {
                ids[p] = self.random_token(&mut rng);
            }
        }
        MlmBatch {
            batch_size: ids.len() / seq_len.max(1),
            seq_len,
            token_type_ids: vec![0; ids.len()],
            input_ids: ids,
            attention_mask,
            masked_positions: positions,
            masked_labels: labels,
        }
    }

    fn random_token(&self, rng: &mut StdRng) -> u32 {
        loop {
            let t = rng.random_range(0..self.vocab_size);
            if !self.is_special(t) {
                return t;
            }
        }
    }
}

/// Two views of each sampled region for contrastive text objectives: independent random
/// crops (Izacard et al. 2022, "Unsupervised Dense Information Retrieval with Contrastive
/// Learning", §3.1; the document-span positives of Giorgi et al. 2021, DeCLUTR). Each
/// training item is a region of the token stream; both views are `[CLS]` plus a crop of up
/// to `seq_len - 1` tokens taken at an independent, uniformly random offset inside the same
/// document of that region (its longest `[SEP]`-free run), padded to `seq_len`.
#[derive(Debug, Clone, Copy)]
pub struct CropViews {
    /// Length of each view, `[CLS]` included.
    pub seq_len: usize,
    /// Document separator.
    pub sep: u32,
    /// Padding id.
    pub pad: u32,
}

impl CropViews {
    /// The longest run of `region` without a separator: the part of one document.
    fn document<'a>(&self, region: &'a [u32]) -> &'a [u32] {
        region.split(|&t| t == self.sep).max_by_key(|run| run.len()).unwrap_or(&[])
    }

    /// Appends one view (`[CLS]`, a crop of `doc`, padding) to `ids` and its mask.
    fn push_view(&self, cls: u32, doc: &[u32], rng: &mut StdRng, ids: &mut Vec<u32>, mask: &mut Vec<u8>) {
        let len = doc.len().min(self.seq_len - 1);
        let start = rng.random_range(0..=doc.len() - len);
        ids.push(cls);
        ids.extend_from_slice(&doc[start..start + len]);
        ids.resize(ids.len() + self.seq_len - 1 - len, self.pad);
        mask.push(1);
        mask.resize(mask.len() + len, 1);
        mask.resize(mask.len() + self.seq_len - 1 - len, 0);
    }

    /// Rows `0..n` are the first views of the `n` regions (each `[CLS]` + region tokens),
    /// rows `n..2n` the second views.
    fn batch(&self, regions: &[u32], region_len: usize, seed: u64) -> MlmBatch {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = regions.len() / region_len;
        let mut ids = Vec::with_capacity(2 * n * self.seq_len);
        let mut mask = Vec::with_capacity(2 * n * self.seq_len);
        let docs: Vec<(u32, &[u32])> = regions.chunks_exact(region_len).map(|r| (r[0], self.document(&r[1..]))).collect();
        for _view in 0..2 {
            for &(cls, doc) in &docs {
                self.push_view(cls, doc, &mut rng, &mut ids, &mut mask);
            }
        }
        MlmBatch::unmasked(ids, mask, self.seq_len)
    }
}

/// What a batch holds for the objective.
#[derive(Debug, Clone)]
pub enum Views {
    /// Packed sequences with dynamic MLM masking.
    Masked(MlmMasker),
    /// The packed sequences as they are (no prediction targets), for objectives that use
    /// whole sequences, such as SimCSE with dropout as the augmentation.
    Whole,
    /// Two cropped views of each packed sequence (a region): a batch of `2 * batch_size`
    /// rows, the second views after the first.
    Crops(CropViews),
}

/// Training and evaluation batches for MLM and text contrastive objectives, each a pure
/// function of its index: batch `k` takes samples `k * batch_size ..` of the epoch-wise
/// shuffle and masks (or crops) them with a seed derived from `k`.
#[derive(Debug)]
pub struct MlmBatches {
    sequences: PackedSequences,
    sampler: EpochSampler,
    views: Views,
    batch_size: usize,
    seed: u64,
}

impl MlmBatches {
    /// Batches of `batch_size` sequences from `sequences`, turned into `views`.
    pub fn new(sequences: PackedSequences, views: Views, batch_size: usize, seed: u64) -> Self {
        let sampler = EpochSampler::new(sequences.len(), seed);
        Self { sequences, sampler, views, batch_size, seed }
    }

    fn finish(&self, ids: Vec<u32>, seq_len: usize, seed: u64) -> MlmBatch {
        match &self.views {
            Views::Masked(masker) => masker.mask(ids, seq_len, seed),
            Views::Crops(crops) => crops.batch(&ids, seq_len, seed),
            // Packed sequences have no padding.
            Views::Whole => {
                let mask = vec![1; ids.len()];
                MlmBatch::unmasked(ids, mask, seq_len)
            }
        }
    }

    /// Number of sequences available.
    pub fn num_sequences(&self) -> usize {
        self.sequences.len()
    }

    /// The `k`-th training batch.
    ///
    /// # Errors
    /// A shard that can no longer be read.
    pub fn train_batch(&mut self, k: u64) -> Result<MlmBatch> {
        let seq_len = self.sequences.seq_len();
        let mut ids = Vec::with_capacity(self.batch_size * seq_len);
        for j in 0..self.batch_size {
            let i = self.sampler.index(k * self.batch_size as u64 + j as u64);
            self.sequences.read(i, &mut ids)?;
        }
        Ok(self.finish(ids, seq_len, derive_seed(self.seed, Stream::Collate, k)))
    }

    /// Deterministic evaluation batches: the first `max_batches` batches of the split in
    /// order (fewer if the split is smaller), with masking fixed by the seed so every
    /// evaluation of a run scores the same targets.
    ///
    /// # Errors
    /// A shard that can no longer be read.
    pub fn eval_batches(&self, max_batches: usize) -> Result<Vec<MlmBatch>> {
        let seq_len = self.sequences.seq_len();
        let n = self.sequences.len();
        let mut out = Vec::new();
        let mut i = 0;
        while i < n && out.len() < max_batches {
            let take = self.batch_size.min(n - i);
            let mut ids = Vec::with_capacity(take * seq_len);
            for j in i..i + take {
                self.sequences.read(j, &mut ids)?;
            }
            out.push(self.finish(ids, seq_len, derive_seed(self.seed, Stream::Eval, out.len() as u64)));
            i += take;
        }
        Ok(out)
    }
}

/// The MLM batch stream of a run: training batches from the training split, a fixed set of
/// evaluation batches from the held-out split.
#[derive(Debug)]
pub struct MlmData {
    /// Training split.
    pub train: MlmBatches,
    /// Held-out split.
    pub heldout: MlmBatches,
    /// Most evaluation batches to score.
    pub eval_batches: usize,
}

impl autodidact_core::objective::BatchStream for MlmData {
    type Batch = MlmBatch;

    fn train_batch(&mut self, k: u64) -> std::result::Result<MlmBatch, String> {
        self.train.train_batch(k).map_err(|e| e.to_string())
    }

    fn eval_batches(&self) -> std::result::Result<Vec<MlmBatch>, String> {
        self.heldout.eval_batches(self.eval_batches).map_err(|e| e.to_string())
    }
}

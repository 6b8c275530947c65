//! Subword tokenizers, built on HuggingFace `tokenizers`: trained on a corpus (WordPiece, as
//! BERT, or byte-level BPE, as RoBERTa) or loaded from an existing `tokenizer.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{DataError, Result};
use crate::source::{SourceStats, TextSource};

/// Which subword model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// WordPiece with BERT's normalizer and pre-tokenizer (Devlin et al. 2019).
    #[default]
    WordPiece,
    /// Byte-level BPE as in GPT-2 / RoBERTa: no unknown tokens.
    Bpe,
}

/// How to train a tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerTrainSpec {
    /// WordPiece or BPE.
    pub kind: TokenizerKind,
    /// Target vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// Lowercase and strip accents before splitting (WordPiece only).
    pub lowercase: bool,
    /// Minimum count for a merge or a word piece.
    pub min_frequency: u64,
}

/// Smallest vocabulary we accept: specials plus a usable alphabet.
pub const MIN_VOCAB_SIZE: usize = 64;

/// Ids of the special tokens the pipeline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    /// Padding.
    pub pad: u32,
    /// Unknown token.
    pub unk: u32,
    /// Start of sequence (`[CLS]` / `<s>`).
    pub cls: u32,
    /// Separator between documents (`[SEP]` / `</s>`).
    pub sep: u32,
    /// Mask token (`[MASK]` / `<mask>`).
    pub mask: u32,
}

impl SpecialTokens {
    /// All special ids, for "never mask these" checks.
    pub fn all(&self) -> [u32; 5] {
        [self.pad, self.unk, self.cls, self.sep, self.mask]
    }
}

const BERT_SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const ROBERTA_SPECIALS: [&str; 5] = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"];

/// A tokenizer plus the ids of its special tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    special: SpecialTokens,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .finish()
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer { path: path.to_path_buf(), message: e.to_string() }
}

impl TextTokenizer {
    /// Trains a tokenizer on every document of `source` (streamed once).
    ///
    /// # Errors
    /// A vocabulary size below [`MIN_VOCAB_SIZE`], an empty corpus, or a training failure.
    pub fn train(source: &TextSource, spec: &TokenizerTrainSpec) -> Result<(Self, SourceStats)> {
        if spec.vocab_size < MIN_VOCAB_SIZE || spec.vocab_size > u32::MAX as usize {
            return Err(DataError::Invalid(format!(
                "vocab_size {} is out of range: it must be between {MIN_VOCAB_SIZE} and {}",
                spec.vocab_size,
                u32::MAX
            )));
        }
        let (names, mut tokenizer, mut trainer) = match spec.kind {
            TokenizerKind::WordPiece => {
                let names = BERT_SPECIALS;
                let normalizer = BertNormalizer::new(true, true, Some(spec.lowercase), spec.lowercase);
                let mut reserved = specials(&names);
                reserved.extend(continuation_alphabet(source, &normalizer)?.into_iter().map(|c| AddedToken::from(format!("##{c}"), true)));
                let mut tk = Tokenizer::new(WordPiece::builder().unk_token(names[1].into()).build().map_err(|e| tok_err(source.root(), e))?);
                tk.with_normalizer(Some(normalizer));
                tk.with_pre_tokenizer(Some(BertPreTokenizer));
                tk.with_decoder(Some(WordPieceDecoder::default()));
                let trainer = WordPieceTrainer::builder()
                    .vocab_size(spec.vocab_size)
                    .min_frequency(spec.min_frequency)
                    .special_tokens(reserved)
                    .show_progress(false)
                    .build();
                (names, tk, TrainerWrapper::WordPieceTrainer(trainer))
            }
            TokenizerKind::Bpe => {
                let names = ROBERTA_SPECIALS;
                let mut tk = Tokenizer::new(BPE::default());
                tk.with_pre_tokenizer(Some(ByteLevel::default()));
                tk.with_decoder(Some(ByteLevelDecoder::default()));
                let trainer = BpeTrainer::builder()
                    .vocab_size(spec.vocab_size)
                    .min_frequency(spec.min_frequency)
                    .special_tokens(specials(&names))
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .show_progress(false)
                    .build();
                (names, tk, TrainerWrapper::BpeTrainer(trainer))
            }
        };
        let mut chunks = source.chunks();
        tokenizer.train(&mut trainer, chunks.by_ref().map(|c| c.text)).map_err(|e| tok_err(source.root(), e))?;
        let stats = chunks.stats().clone();
        if stats.bytes == 0 {
            return Err(DataError::EmptyCorpus {
                path: source.root().to_path_buf(),
                detail: empty_detail(&stats),
            });
        }
        if spec.kind == TokenizerKind::WordPiece {
            tokenizer = canonical_ids(&tokenizer, &names).map_err(|e| tok_err(source.root(), e))?;
        }
        let special = lookup_specials(&tokenizer, &names).ok_or_else(|| tok_err(source.root(), "special tokens missing after training"))?;
        let sep = (names[3].to_string(), special.sep);
        let cls = (names[2].to_string(), special.cls);
        match spec.kind {
            TokenizerKind::WordPiece => tokenizer.with_post_processor(Some(BertProcessing::new(sep, cls))),
            TokenizerKind::Bpe => tokenizer.with_post_processor(Some(RobertaProcessing::new(sep, cls))),
        };
        Ok((Self { inner: tokenizer, special }, stats))
    }

    /// Loads a `tokenizer.json`. Its special tokens must use BERT (`[MASK]`, ...) or RoBERTa
    /// (`<mask>`, ...) names.
    ///
    /// # Errors
    /// Unreadable or malformed file, or special tokens not found.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| tok_err(path, e))?;
        let special = lookup_specials(&inner, &BERT_SPECIALS)
            .or_else(|| lookup_specials(&inner, &ROBERTA_SPECIALS))
            .ok_or_else(|| {
                tok_err(path, format!("no special tokens found: expected {BERT_SPECIALS:?} or {ROBERTA_SPECIALS:?} in the vocabulary"))
            })?;
        Ok(Self { inner, special })
    }

    /// Writes `tokenizer.json` atomically.
    ///
    /// # Errors
    /// Serialization or I/O failure.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(true).map_err(|e| tok_err(path, e))?;
        autodidact_core::fsutil::write_atomic(path, json.as_bytes()).map_err(|e| DataError::io(path, e))
    }

    /// The serialized `tokenizer.json`, e.g. to hash it.
    ///
    /// # Errors
    /// Serialization failure.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| tok_err(Path::new("<memory>"), e))
    }

    /// Vocabulary size including special and added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Special token ids.
    pub fn special(&self) -> SpecialTokens {
        self.special
    }

    /// Token string of an id, for inspection.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encodes many texts in parallel, without adding special tokens.
    ///
    /// # Errors
    /// Tokenization failure (rare: e.g. a pre-tokenizer error).
    pub fn encode_batch(&self, texts: Vec<&str>) -> Result<Vec<Vec<u32>>> {
        let encodings = self.inner.encode_batch_fast(texts, false).map_err(|e| tok_err(Path::new("<encode>"), e))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Decodes ids back to text (special tokens skipped).
    ///
    /// # Errors
    /// Decoding failure.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| tok_err(Path::new("<decode>"), e))
    }
}

/// Renumbers a WordPiece vocabulary: special tokens first (in `names` order), then every other
/// token in byte order of its string.
///
/// HF `tokenizers` numbers the `##` continuation characters in hash-map order, which is seeded
/// at random per process, so two trainings on the same corpus give the same pieces under
/// different ids. WordPiece looks pieces up by string, so any numbering encodes the same way;
/// a canonical one makes runs reproducible.
fn canonical_ids(tokenizer: &Tokenizer, names: &[&str; 5]) -> std::result::Result<Tokenizer, String> {
    let mut json: serde_json::Value = serde_json::from_str(&tokenizer.to_string(false).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let vocab = json.pointer_mut("/model/vocab").and_then(|v| v.as_object_mut()).ok_or("no model.vocab in the trained tokenizer")?;
    let mut tokens: Vec<String> = vocab.keys().filter(|t| !names.contains(&t.as_str())).cloned().collect();
    tokens.sort();
    let ordered = names.iter().map(|s| s.to_string()).filter(|t| vocab.contains_key(t)).chain(tokens);
    let renumbered: serde_json::Map<String, serde_json::Value> = ordered.enumerate().map(|(i, t)| (t, serde_json::Value::from(i))).collect();
    *vocab = renumbered;
    // Added (special) tokens carry their ids too; the reserved `##c` pieces become ordinary
    // vocabulary entries.
    if let Some(added) = json.get_mut("added_tokens").and_then(|v| v.as_array_mut()) {
        added.retain(|t| t.get("content").and_then(|c| c.as_str()).is_some_and(|c| names.contains(&c)));
        for token in added {
            if let Some(pos) = token.get("content").and_then(|c| c.as_str()).and_then(|c| names.iter().position(|n| *n == c)) {
                token["id"] = serde_json::Value::from(pos);
            }
        }
    }
    Tokenizer::from_bytes(serde_json::to_vec(&json).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

/// Every character that can continue a word after normalization, in code-point order.
///
/// HF's WordPiece trainer numbers the `##c` pieces in the order it meets them while iterating
/// a randomly seeded hash map, and breaks ties between equally frequent merges by those
/// numbers, so two trainings on the same corpus can pick different pieces. Reserving the `##c`
/// pieces up front, in a fixed order, fixes every id the trainer compares. (Costs one extra
/// pass of normalization over the corpus.)
fn continuation_alphabet(source: &TextSource, normalizer: &BertNormalizer) -> Result<std::collections::BTreeSet<char>> {
    use tokenizers::{NormalizedString, Normalizer};
    let mut alphabet = std::collections::BTreeSet::new();
    for chunk in source.chunks() {
        let mut n = NormalizedString::from(chunk.text.as_str());
        normalizer.normalize(&mut n).map_err(|e| tok_err(source.root(), e))?;
        alphabet.extend(n.get().chars().filter(|c| !c.is_whitespace() && !c.is_ascii_punctuation()));
    }
    Ok(alphabet)
}

fn specials(names: &[&str; 5]) -> Vec<AddedToken> {
    names.iter().map(|n| AddedToken::from(*n, true)).collect()
}

fn lookup_specials(tk: &Tokenizer, names: &[&str; 5]) -> Option<SpecialTokens> {
    let id = |n: &str| tk.token_to_id(n);
    Some(SpecialTokens { pad: id(names[0])?, unk: id(names[1])?, cls: id(names[2])?, sep: id(names[3])?, mask: id(names[4])? })
}

pub(crate) fn empty_detail(stats: &SourceStats) -> String {
    let mut detail = format!("{} file(s) read, {} document(s), no text", stats.files_read, stats.documents);
    if !stats.files_skipped.is_empty() {
        detail.push_str(&format!("; {} file(s) unreadable, first: {}", stats.files_skipped.len(), stats.files_skipped[0]));
    }
    if let Some(bad) = &stats.first_bad_line {
        detail.push_str(&format!("; {} bad JSONL line(s), first: {bad}", stats.bad_lines));
    }
    detail
}

/// Where a tokenizer comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSource {
    /// Train one on the corpus.
    Train(TokenizerTrainSpec),
    /// Load an existing `tokenizer.json`.
    File(PathBuf),
}

//! Subword tokenizers, built on HuggingFace `tokenizers`: trained on a corpus (WordPiece, as
//! BERT, or byte-level BPE, as RoBERTa) or loaded from an existing `tokenizer.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{DataError, Result};
use crate::fast_wordpiece::AsciiWordPiece;
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
    /// BERT's pipeline on ASCII text without `tokenizers`' per-character bookkeeping.
    fast: Option<Arc<AsciiWordPiece>>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .finish()
    }
}

/// `Tokenizer::from_bytes`, with its panics turned into errors: `tokenizers` 0.22 `expect`s
/// in some deserializers (found by `fuzz/fuzz_targets/tokenizer.rs`), so a malformed
/// `tokenizer.json` must not reach it unguarded. The panic hook is silenced meanwhile, so the
/// user sees one error, not a panic message.
fn parse_tokenizer(bytes: &[u8]) -> std::result::Result<Tokenizer, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes));
    std::panic::set_hook(hook);
    match result {
        Ok(parsed) => parsed.map_err(|e| e.to_string()),
        Err(panic) => {
            let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            Err(format!("malformed (the tokenizers library rejected it: {why})"))
        }
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer { path: path.to_path_buf(), message: e.to_string() }
}

impl TextTokenizer {
    fn new(inner: Tokenizer, special: SpecialTokens) -> Self {
        let fast = AsciiWordPiece::for_tokenizer(&inner).map(Arc::new);
        Self { inner, special, fast }
    }

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
                let tk = bert_pipeline(WordPiece::builder().unk_token(names[1].into()).build().map_err(|e| tok_err(source.root(), e))?, normalizer);
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
        Ok((Self::new(tokenizer, special), stats))
    }

    /// Loads the tokenizer of a HuggingFace model directory: its `tokenizer.json` when
    /// present, else a BERT WordPiece tokenizer built from `vocab.txt` with the options of
    /// `tokenizer_config.json` (`do_lower_case`, default true; `strip_accents`;
    /// `tokenize_chinese_chars`), as transformers' `BertTokenizer` does.
    ///
    /// # Errors
    /// Neither file present, or a malformed one (named).
    pub fn load_hf_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::load(&json);
        }
        let vocab = dir.join("vocab.txt");
        if !vocab.is_file() {
            return Err(tok_err(dir, "no tokenizer.json or vocab.txt in this directory"));
        }
        let options = BertVocabOptions::read(&dir.join("tokenizer_config.json"))?;
        let path_str = vocab.to_str().ok_or_else(|| tok_err(&vocab, "path is not UTF-8"))?;
        let model = WordPiece::from_file(path_str).unk_token(BERT_SPECIALS[1].into()).build().map_err(|e| tok_err(&vocab, e))?;
        let normalizer = BertNormalizer::new(true, options.tokenize_chinese_chars, options.strip_accents, options.do_lower_case);
        let mut inner = bert_pipeline(model, normalizer);
        let special = lookup_specials(&inner, &BERT_SPECIALS).ok_or_else(|| tok_err(&vocab, format!("special tokens missing: expected {BERT_SPECIALS:?}")))?;
        inner.add_special_tokens(&specials(&BERT_SPECIALS));
        inner.with_post_processor(Some(BertProcessing::new((BERT_SPECIALS[3].into(), special.sep), (BERT_SPECIALS[2].into(), special.cls))));
        Ok(Self::new(inner, special))
    }

    /// The tokenizer files HF tools read, as `(file name, contents)`: `tokenizer.json`,
    /// `tokenizer_config.json`, `special_tokens_map.json`, and for WordPiece `vocab.txt` (so
    /// that `BertTokenizer` and other readers of the classic format load it too).
    ///
    /// # Errors
    /// Serialization failure.
    pub fn hf_files(&self, model_max_length: usize) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let json = self.inner.to_string(true).map_err(|e| tok_err(Path::new("tokenizer.json"), e))?;
        let name = |id: u32| self.inner.id_to_token(id).unwrap_or_default();
        let s = self.special;
        let mut map = serde_json::json!({
            "cls_token": name(s.cls), "sep_token": name(s.sep), "pad_token": name(s.pad),
            "unk_token": name(s.unk), "mask_token": name(s.mask),
        });
        let mut config = map.clone();
        config["model_max_length"] = model_max_length.into();
        let mut files = vec![("tokenizer.json", json.into_bytes())];
        match self.inner.get_model() {
            ModelWrapper::WordPiece(_) => {
                let lowercase = match self.inner.get_normalizer() {
                    Some(NormalizerWrapper::BertNormalizer(n)) => n.lowercase,
                    _ => false,
                };
                config["tokenizer_class"] = "BertTokenizer".into();
                config["do_lower_case"] = lowercase.into();
                if let Some(vocab) = self.vocab_txt() {
                    files.push(("vocab.txt", vocab.into_bytes()));
                }
            }
            _ => {
                config["tokenizer_class"] = "PreTrainedTokenizerFast".into();
                for key in ["bos_token", "eos_token"] {
                    map[key] = map[if key == "bos_token" { "cls_token" } else { "sep_token" }].clone();
                    config[key] = map[key].clone();
                }
            }
        }
        let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).map_err(|e| tok_err(Path::new("tokenizer_config.json"), e));
        files.push(("tokenizer_config.json", pretty(&config)?));
        files.push(("special_tokens_map.json", pretty(&map)?));
        Ok(files)
    }

    /// One token per line in id order, when the ids are exactly `0..n`.
    fn vocab_txt(&self) -> Option<String> {
        let vocab = self.inner.get_vocab(true);
        let mut by_id = vec![None; vocab.len()];
        for (token, id) in vocab {
            *by_id.get_mut(id as usize)? = Some(token);
        }
        by_id.into_iter().map(|t| t.map(|t| t + "\n")).collect()
    }

    /// Loads a `tokenizer.json`. Its special tokens must use BERT (`[MASK]`, ...) or RoBERTa
    /// (`<mask>`, ...) names.
    ///
    /// # Errors
    /// Unreadable or malformed file, or special tokens not found.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| tok_err(path, format!("not valid JSON: {e}")))?;
        let inner = parse_tokenizer(&bytes).map_err(|e| tok_err(path, e))?;
        let special = lookup_specials(&inner, &BERT_SPECIALS)
            .or_else(|| lookup_specials(&inner, &ROBERTA_SPECIALS))
            .ok_or_else(|| {
                tok_err(path, format!("no special tokens found: expected {BERT_SPECIALS:?} or {ROBERTA_SPECIALS:?} in the vocabulary"))
            })?;
        Ok(Self::new(inner, special))
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
        if let Some(fast) = &self.fast {
            use rayon::prelude::*;
            return texts
                .par_iter()
                .map(|text| {
                    let mut ids = Vec::with_capacity(text.len() / 4);
                    fast.encode(text, &mut ids, |segment, out| {
                        let e = self.inner.encode_fast(segment, false).map_err(|e| tok_err(Path::new("<encode>"), e))?;
                        out.extend_from_slice(e.get_ids());
                        Ok(())
                    })?;
                    Ok(ids)
                })
                .collect();
        }
        self.encode_batch_hf(texts)
    }

    /// Whether [`Self::encode_batch`] takes the ASCII fast path (BERT's WordPiece pipeline).
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// [`Self::encode_batch`] by `tokenizers` alone (the reference for the fast path).
    ///
    /// # Errors
    /// Tokenization failure.
    pub fn encode_batch_hf(&self, texts: Vec<&str>) -> Result<Vec<Vec<u32>>> {
        let encodings = self.inner.encode_batch_fast(texts, false).map_err(|e| tok_err(Path::new("<encode>"), e))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Encodes single texts or pairs as model input, with the special tokens of the
    /// post-processor (`[CLS] a [SEP] b [SEP]`); returns `(ids, token_type_ids)` per input.
    ///
    /// # Errors
    /// Tokenization failure.
    pub fn encode_for_model(&self, inputs: &[(&str, Option<&str>)]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        use tokenizers::{EncodeInput, InputSequence};
        let inputs: Vec<EncodeInput<'_>> = inputs
            .iter()
            .map(|(a, b)| match b {
                Some(b) => EncodeInput::Dual(InputSequence::from(*a), InputSequence::from(*b)),
                None => EncodeInput::Single(InputSequence::from(*a)),
            })
            .collect();
        let encodings = self.inner.encode_batch_fast(inputs, true).map_err(|e| tok_err(Path::new("<encode>"), e))?;
        Ok(encodings.into_iter().map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec())).collect())
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

/// BERT's text pipeline around a WordPiece model (Devlin et al. 2019): normalizer, basic
/// pre-tokenizer (whitespace and punctuation), `##` decoder.
fn bert_pipeline(model: WordPiece, normalizer: BertNormalizer) -> Tokenizer {
    let mut tk = Tokenizer::new(model);
    tk.with_normalizer(Some(normalizer));
    tk.with_pre_tokenizer(Some(BertPreTokenizer));
    tk.with_decoder(Some(WordPieceDecoder::default()));
    tk
}

/// The options of a HF `tokenizer_config.json` that shape a BERT WordPiece tokenizer.
#[derive(Debug, Deserialize)]
struct BertVocabOptions {
    #[serde(default = "yes")]
    do_lower_case: bool,
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "yes")]
    tokenize_chinese_chars: bool,
}

fn yes() -> bool {
    true
}

impl BertVocabOptions {
    /// Reads the options; a missing file means HF's defaults.
    fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| tok_err(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self { do_lower_case: true, strip_accents: None, tokenize_chinese_chars: true }),
            Err(e) => Err(DataError::io(path, e)),
        }
    }
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

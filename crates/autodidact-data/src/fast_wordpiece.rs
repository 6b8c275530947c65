//! A fast path for BERT WordPiece encoding of ASCII text, with HF `tokenizers` for the rest.
//!
//! `tokenizers` runs every text through a `NormalizedString` that tracks alignments per
//! character, and its WordPiece model formats a fresh `String` for every candidate piece; on
//! two cores that caps corpus preparation at about 8 MB/s. For the pipeline BERT uses
//! (`BertNormalizer` with `clean_text`, `BertPreTokenizer`, `WordPiece`) ASCII text needs
//! none of that: cleaning keeps printable ASCII, accent stripping leaves it unchanged,
//! lowercasing is per byte, and pre-tokenization splits on whitespace and isolates each
//! punctuation byte.
//!
//! Whitespace (space, tab, newline, carriage return) is a hard boundary in that pipeline: it is
//! kept by cleaning, never merged by normalization, and removed by the pre-tokenizer. The
//! text is therefore cut at whitespace into segments, and each segment is encoded on its own.
//! A segment of plain ASCII takes the fast path; one with a non-ASCII byte, a control byte,
//! or a byte that can start an added token (`[` of `[MASK]`, `#` of the reserved `##x`
//! pieces) goes to `tokenizers` whole, so its result is exactly what `tokenizers` gives. The
//! unit tests compare both paths on tricky text and on the shipped corpus.
//!
//! The greedy longest-match-first search is the one of Wu et al. 2016 ("Google's Neural
//! Machine Translation System", §4.1) as `tokenizers` implements it: a word that cannot be
//! covered becomes a single unknown token, as does one longer than `max_input_chars_per_word`.

use rustc_hash::FxHashMap;
use tokenizers::Tokenizer;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;

/// The fast path of one tokenizer; built only when its pipeline is BERT's.
#[derive(Debug, Clone)]
pub(crate) struct AsciiWordPiece {
    /// Pieces that may start a word.
    words: FxHashMap<Box<[u8]>, u32>,
    /// Continuation pieces, without their `##` prefix.
    pieces: FxHashMap<Box<[u8]>, u32>,
    /// Longest ASCII piece in bytes (no match can be longer).
    longest: usize,
    unk: u32,
    max_chars: usize,
    lowercase: bool,
    /// ASCII bytes that send their segment to `tokenizers`.
    slow_byte: [bool; 128],
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl AsciiWordPiece {
    /// The fast path for `tk`, or `None` when its pipeline is not exactly BERT's (another
    /// normalizer or pre-tokenizer, truncation or padding set, an added token that could
    /// start with a letter or digit).
    pub(crate) fn for_tokenizer(tk: &Tokenizer) -> Option<Self> {
        use tokenizers::Model;
        let ModelWrapper::WordPiece(wp) = tk.get_model() else { return None };
        let Some(NormalizerWrapper::BertNormalizer(norm)) = tk.get_normalizer() else { return None };
        if !norm.clean_text || !matches!(tk.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_))) {
            return None;
        }
        if tk.get_truncation().is_some() || tk.get_padding().is_some() {
            return None;
        }
        let mut slow_byte = [false; 128];
        for (b, slow) in slow_byte.iter_mut().enumerate() {
            // Control bytes are deleted by cleaning (joining their neighbours): leave them to
            // `tokenizers`, as DEL.
            *slow = (b < 0x20 && !is_space(b as u8)) || b == 0x7f;
        }
        for token in tk.get_added_tokens_decoder().values() {
            let first = token.content.chars().next()?;
            if !first.is_ascii_punctuation() {
                return None;
            }
            slow_byte[first as usize] = true;
        }
        let prefix = wp.continuing_subword_prefix.as_bytes();
        let (mut words, mut pieces) = (FxHashMap::default(), FxHashMap::default());
        let mut longest = 0;
        for (token, id) in wp.get_vocab() {
            if !token.is_ascii() {
                continue; // never matches ASCII text
            }
            let bytes = token.as_bytes();
            if let Some(rest) = bytes.strip_prefix(prefix).filter(|_| !prefix.is_empty()) {
                longest = longest.max(rest.len());
                pieces.insert(rest.into(), id);
            }
            longest = longest.max(bytes.len());
            words.insert(bytes.into(), id);
        }
        if prefix.is_empty() {
            pieces.clone_from(&words);
        }
        let unk = wp.token_to_id(&wp.unk_token)?;
        Some(Self { words, pieces, longest, unk, max_chars: wp.max_input_chars_per_word, lowercase: norm.lowercase, slow_byte })
    }

    /// Appends the ids of `text` to `out`; segments the fast path cannot take are passed to
    /// `slow` (which must append their ids the way `tokenizers` encodes them).
    pub(crate) fn encode<E>(&self, text: &str, out: &mut Vec<u32>, mut slow: impl FnMut(&str, &mut Vec<u32>) -> Result<(), E>) -> Result<(), E> {
        let bytes = text.as_bytes();
        let mut scratch = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            while i < bytes.len() && is_space(bytes[i]) {
                i += 1;
            }
            let start = i;
            let mut plain = true;
            while i < bytes.len() && !is_space(bytes[i]) {
                plain &= self.slow_byte.get(bytes[i] as usize).is_some_and(|slow| !slow);
                i += 1;
            }
            if start == i {
                break;
            }
            if plain {
                scratch.clear();
                scratch.extend_from_slice(&bytes[start..i]);
                if self.lowercase {
                    scratch.make_ascii_lowercase();
                }
                self.encode_segment(&scratch, out);
            } else {
                // `start` and `i` sit on ASCII bytes (or the end): char boundaries.
                slow(&text[start..i], out)?;
            }
        }
        Ok(())
    }

    /// A segment of printable ASCII without whitespace: runs of letters and digits are words,
    /// every punctuation byte is a word of its own.
    fn encode_segment(&self, seg: &[u8], out: &mut Vec<u32>) {
        let mut j = 0;
        while j < seg.len() {
            let start = j;
            if seg[j].is_ascii_punctuation() {
                j += 1;
            } else {
                while j < seg.len() && !seg[j].is_ascii_punctuation() {
                    j += 1;
                }
            }
            self.encode_word(&seg[start..j], out);
        }
    }

    fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        if word.len() > self.max_chars {
            out.push(self.unk);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < word.len() {
            let vocab = if start == 0 { &self.words } else { &self.pieces };
            let mut end = word.len().min(start + self.longest);
            loop {
                if end == start {
                    out.truncate(mark);
                    out.push(self.unk);
                    return;
                }
                if let Some(&id) = vocab.get(&word[start..end]) {
                    out.push(id);
                    start = end;
                    break;
                }
                end -= 1;
            }
        }
    }
}

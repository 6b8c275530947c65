//! Token shards: a corpus tokenized once into flat little-endian `u16`/`u32` files (u16 when
//! the vocabulary fits), described by `index.json`, read by position during training.
//!
//! Layout of a shard directory:
//! ```text
//! index.json            ShardIndex: dtype, vocab, per-split shard list, unigram counts
//! train-00000.bin ...   the training token stream
//! heldout-00000.bin ... the held-out token stream
//! ```
//! Documents are separated by the `[SEP]` id; a separator is also written wherever the
//! stream is not contiguous (a held-out piece was taken out between two training pieces).
//! Building writes into `<dir>.partial` and renames it when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use autodidact_core::seed::{Stream, derive_seed};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::source::{SourceStats, TextSource};
use crate::tokenizer::{TextTokenizer, empty_detail};

/// Index file name inside a shard directory.
pub const INDEX_FILE: &str = "index.json";
const FORMAT_VERSION: u32 = 1;
/// Text is cut into pieces of about this many bytes (on paragraph breaks) for the held-out
/// split and for parallel tokenization.
const PIECE_BYTES: usize = 4096;
/// Pieces tokenized per parallel batch.
const PIECES_PER_BATCH: usize = 512;

/// Element type of the shard files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// 2 bytes per token (vocabulary up to 65 536).
    U16,
    /// 4 bytes per token.
    U32,
}

impl TokenDtype {
    /// The narrowest type that holds every id of a vocabulary of `vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 { Self::U16 } else { Self::U32 }
    }

    /// Bytes per token.
    pub fn width(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }
}

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFile {
    /// File name relative to the shard directory.
    pub file: String,
    /// Tokens in the file.
    pub tokens: u64,
}

/// The shards of one split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitIndex {
    /// Shard files in stream order.
    pub shards: Vec<ShardFile>,
    /// Total tokens.
    pub tokens: u64,
}

/// Contents of `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    /// Format version.
    pub version: u32,
    /// Token element type.
    pub dtype: TokenDtype,
    /// Vocabulary size of the tokenizer that made the shards.
    pub vocab_size: usize,
    /// Fingerprint of tokenizer + corpus + split settings; shards are reused only on a match.
    pub fingerprint: String,
    /// Training split.
    pub train: SplitIndex,
    /// Held-out split.
    pub heldout: SplitIndex,
    /// Count of each token id in the training split (unigram baseline).
    pub train_counts: Vec<u64>,
    /// What reading the corpus found.
    pub source: SourceStats,
}

/// Settings for building shards.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardOptions {
    /// Fraction of the corpus pieces put in the held-out split.
    pub heldout_fraction: f64,
    /// Seed of the split assignment.
    pub seed: u64,
    /// Largest shard file, in tokens.
    pub max_shard_tokens: u64,
}

impl Default for ShardOptions {
    fn default() -> Self {
        Self { heldout_fraction: 0.02, seed: 0, max_shard_tokens: 64 << 20 }
    }
}

/// Fingerprint of what determines the shards' contents: the tokenizer, the corpus files
/// (path, size, modification time) and the split settings.
///
/// # Errors
/// Tokenizer serialization failure or unreadable file metadata.
pub fn fingerprint(source: &TextSource, tokenizer: &TextTokenizer, opts: &ShardOptions) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(tokenizer.to_json()?.as_bytes());
    for path in source.files() {
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        h.update(format!("{}|{}|{:?}\n", path.display(), meta.len(), mtime).as_bytes());
    }
    h.update(format!("{}|{}|{}", opts.heldout_fraction, opts.seed, FORMAT_VERSION).as_bytes());
    Ok(format!("{:x}", h.finalize()))
}

/// Tokenizes `source` into `dir`, or reuses `dir` when its index has the same fingerprint.
///
/// # Errors
/// I/O failures, an empty corpus, or a held-out or training split with no tokens.
pub fn build_or_reuse(source: &TextSource, tokenizer: &TextTokenizer, dir: &Path, opts: &ShardOptions) -> Result<ShardIndex> {
    prepare(source, tokenizer, dir, opts).map(|(index, _)| index)
}

/// [`build_or_reuse`], also saying whether the shards were built (`true`) or reused.
///
/// # Errors
/// As [`build_or_reuse`].
pub fn prepare(source: &TextSource, tokenizer: &TextTokenizer, dir: &Path, opts: &ShardOptions) -> Result<(ShardIndex, bool)> {
    let fp = fingerprint(source, tokenizer, opts)?;
    if let Ok(index) = read_index(dir)
        && index.fingerprint == fp
    {
        return Ok((index, false));
    }
    Ok((build(source, tokenizer, dir, opts, fp)?, true))
}

struct SplitWriter {
    dir: PathBuf,
    name: &'static str,
    dtype: TokenDtype,
    max_tokens: u64,
    index: SplitIndex,
    current: Option<BufWriter<File>>,
    current_tokens: u64,
    last_piece: Option<u64>,
}

impl SplitWriter {
    fn new(dir: &Path, name: &'static str, dtype: TokenDtype, max_tokens: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            name,
            dtype,
            max_tokens,
            index: SplitIndex::default(),
            current: None,
            current_tokens: 0,
            last_piece: None,
        }
    }

    fn push(&mut self, tokens: &[u32]) -> Result<()> {
        let mut buf = Vec::with_capacity(tokens.len() * self.dtype.width());
        for &t in tokens {
            match self.dtype {
                TokenDtype::U16 => buf.extend_from_slice(&(t as u16).to_le_bytes()),
                TokenDtype::U32 => buf.extend_from_slice(&t.to_le_bytes()),
            }
        }
        let width = self.dtype.width();
        let mut rest = &buf[..];
        while !rest.is_empty() {
            if self.current.is_none() || self.current_tokens >= self.max_tokens {
                self.finish_shard()?;
                let file = format!("{}-{:05}.bin", self.name, self.index.shards.len());
                let path = self.dir.join(&file);
                let f = File::create(&path).map_err(|e| DataError::io(&path, e))?;
                self.current = Some(BufWriter::with_capacity(1 << 20, f));
                self.index.shards.push(ShardFile { file, tokens: 0 });
                self.current_tokens = 0;
            }
            let room = (self.max_tokens - self.current_tokens) as usize * width;
            let take = room.min(rest.len());
            let path = self.dir.join(self.index.shards.last().map(|s| s.file.clone()).unwrap_or_default());
            if let Some(w) = self.current.as_mut() {
                w.write_all(&rest[..take]).map_err(|e| DataError::io(&path, e))?;
            }
            let n = (take / width) as u64;
            self.current_tokens += n;
            self.index.tokens += n;
            if let Some(last) = self.index.shards.last_mut() {
                last.tokens += n;
            }
            rest = &rest[take..];
        }
        Ok(())
    }

    fn finish_shard(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let path = self.dir.join(self.index.shards.last().map(|s| s.file.as_str()).unwrap_or(""));
            let file = w.into_inner().map_err(|e| DataError::io(&path, e.into_error()))?;
            file.sync_all().map_err(|e| DataError::io(&path, e))?;
        }
        Ok(())
    }
}

/// Splits a chunk into pieces of about [`PIECE_BYTES`], on paragraph (else line) breaks.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + PIECE_BYTES).min(text.len());
        if end < text.len() {
            let window = &text[start..floor_char(text, (start + 2 * PIECE_BYTES).min(text.len()))];
            let rel = window[PIECE_BYTES.min(window.len())..]
                .find("\n\n")
                .or_else(|| window[PIECE_BYTES.min(window.len())..].find('\n'))
                .map(|i| PIECE_BYTES.min(window.len()) + i + 1);
            end = match rel {
                Some(r) => start + r,
                None => floor_char(text, (start + 2 * PIECE_BYTES).min(text.len())),
            };
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn build(source: &TextSource, tokenizer: &TextTokenizer, dir: &Path, opts: &ShardOptions, fingerprint: String) -> Result<ShardIndex> {
    let vocab_size = tokenizer.vocab_size();
    let dtype = TokenDtype::for_vocab(vocab_size);
    let sep = tokenizer.special().sep;
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| DataError::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| DataError::io(&partial, e))?;
    let mut train = SplitWriter::new(&partial, "train", dtype, opts.max_shard_tokens);
    let mut heldout = SplitWriter::new(&partial, "heldout", dtype, opts.max_shard_tokens);
    let mut counts = vec![0u64; vocab_size];
    let threshold = (opts.heldout_fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64;

    // Pending pieces: (global piece number, text, ends a document).
    let mut pending: Vec<(u64, String, bool)> = Vec::new();
    let mut piece_no = 0u64;
    let flush = |pending: &mut Vec<(u64, String, bool)>, train: &mut SplitWriter, heldout: &mut SplitWriter, counts: &mut Vec<u64>| -> Result<()> {
        let texts: Vec<&str> = pending.iter().map(|(_, t, _)| t.as_str()).collect();
        let encoded = tokenizer.encode_batch(texts)?;
        for ((no, _, doc_end), ids) in pending.drain(..).zip(encoded) {
            let is_heldout = derive_seed(opts.seed, Stream::Split, no) < threshold;
            let w = if is_heldout { &mut *heldout } else { &mut *train };
            if w.last_piece.is_some_and(|last| last + 1 != no) {
                w.push(&[sep])?;
                if !is_heldout {
                    counts[sep as usize] += 1;
                }
            }
            w.push(&ids)?;
            if doc_end {
                w.push(&[sep])?;
            }
            // A document end makes the next piece a fresh start: no extra separator.
            w.last_piece = Some(no);
            if !is_heldout {
                for &t in ids.iter().chain(doc_end.then_some(&sep)) {
                    if let Some(c) = counts.get_mut(t as usize) {
                        *c += 1;
                    }
                }
            }
        }
        Ok(())
    };

    let mut chunks = source.chunks();
    for chunk in chunks.by_ref() {
        let parts = pieces(&chunk.text);
        let n = parts.len();
        for (i, p) in parts.into_iter().enumerate() {
            pending.push((piece_no, p.to_string(), chunk.doc_end && i + 1 == n));
            piece_no += 1;
        }
        if n == 0 && chunk.doc_end {
            // An empty final chunk still ends its document.
            if let Some(last) = pending.last_mut() {
                last.2 = true;
            }
        }
        if pending.len() >= PIECES_PER_BATCH {
            flush(&mut pending, &mut train, &mut heldout, &mut counts)?;
        }
    }
    flush(&mut pending, &mut train, &mut heldout, &mut counts)?;
    train.finish_shard()?;
    heldout.finish_shard()?;
    let stats = chunks.stats().clone();

    if train.index.tokens == 0 {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(DataError::EmptyCorpus { path: source.root().to_path_buf(), detail: empty_detail(&stats) });
    }
    let index = ShardIndex {
        version: FORMAT_VERSION,
        dtype,
        vocab_size,
        fingerprint,
        train: train.index,
        heldout: heldout.index,
        train_counts: counts,
        source: stats,
    };
    let json = serde_json::to_vec_pretty(&index).map_err(|e| DataError::Shards { path: partial.clone(), message: e.to_string() })?;
    let index_path = partial.join(INDEX_FILE);
    autodidact_core::fsutil::write_atomic(&index_path, &json).map_err(|e| DataError::io(&index_path, e))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    std::fs::rename(&partial, dir).map_err(|e| DataError::io(dir, e))?;
    Ok(index)
}

/// Reads and checks `index.json` of a shard directory.
///
/// # Errors
/// Missing or malformed index, or shard files whose size disagrees with it.
pub fn read_index(dir: &Path) -> Result<ShardIndex> {
    let path = dir.join(INDEX_FILE);
    let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
    let index: ShardIndex = serde_json::from_slice(&bytes).map_err(|e| DataError::Shards { path: path.clone(), message: e.to_string() })?;
    if index.version != FORMAT_VERSION {
        return Err(DataError::Shards { path, message: format!("format version {} (expected {FORMAT_VERSION})", index.version) });
    }
    Ok(index)
}

/// A split's token stream with random access by positioned reads (`pread`).
///
/// Reads rather than memory maps: pages of a mapped shard that training touches count in the
/// process's resident set (and fault-around maps neighbouring pages too), so a run's RSS
/// grew with the corpus; read tokens are copied out and the page cache stays the kernel's.
pub struct TokenStream {
    files: Vec<(PathBuf, File)>,
    /// Cumulative token offset at which each shard starts.
    starts: Vec<u64>,
    dtype: TokenDtype,
    len: u64,
}

impl std::fmt::Debug for TokenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream").field("shards", &self.files.len()).field("len", &self.len).finish()
    }
}

impl TokenStream {
    /// Opens the shards of one split of `index` in `dir`.
    ///
    /// # Errors
    /// A shard file is missing or its size disagrees with the index.
    pub fn open(dir: &Path, index: &ShardIndex, split: &SplitIndex) -> Result<Self> {
        let mut files = Vec::with_capacity(split.shards.len());
        let mut starts = Vec::with_capacity(split.shards.len());
        let mut len = 0u64;
        for shard in &split.shards {
            let path = dir.join(&shard.file);
            let file = File::open(&path).map_err(|e| DataError::io(&path, e))?;
            let expected = shard.tokens * index.dtype.width() as u64;
            let actual = file.metadata().map_err(|e| DataError::io(&path, e))?.len();
            if actual != expected {
                return Err(DataError::Shards {
                    path,
                    message: format!("file has {actual} bytes but the index says {} tokens ({expected} bytes): truncated or modified", shard.tokens),
                });
            }
            starts.push(len);
            len += shard.tokens;
            files.push((path, file));
        }
        Ok(Self { files, starts, dtype: index.dtype, len })
    }

    /// Number of tokens.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the split has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends tokens `[start, start + n)` to `out`; requests past the end are truncated.
    ///
    /// # Errors
    /// A shard that can no longer be read in full (changed or truncated since it was opened).
    pub fn read(&self, start: u64, n: usize, out: &mut Vec<u32>) -> Result<()> {
        let end = (start + n as u64).min(self.len);
        let width = self.dtype.width();
        let mut bytes = Vec::new();
        let mut pos = start;
        while pos < end {
            let s = self.starts.partition_point(|&x| x <= pos) - 1;
            let shard_end = self.starts.get(s + 1).copied().unwrap_or(self.len);
            let upto = end.min(shard_end);
            let (path, file) = &self.files[s];
            bytes.resize((upto - pos) as usize * width, 0);
            read_exact_at(file, &mut bytes, (pos - self.starts[s]) * width as u64).map_err(|e| DataError::io(path, e))?;
            match self.dtype {
                TokenDtype::U16 => out.extend(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)),
                TokenDtype::U32 => out.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            }
            pos = upto;
        }
        Ok(())
    }
}

/// Fills `buf` from `file` at `offset` without moving a shared cursor (threads may read the
/// same stream).
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_text_exactly_and_are_bounded() {
        let para = "word ".repeat(300);
        let text = format!("{para}\n\n{para}\n\n{}\n{para}", "é".repeat(5000));
        let parts = pieces(&text);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.len() <= 2 * PIECE_BYTES));
        assert!(parts.len() > 2);
    }

    #[test]
    fn u32_tokens_round_trip_across_shard_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SplitWriter::new(dir.path(), "train", TokenDtype::U32, 3);
        let tokens: Vec<u32> = (0..10).map(|i| 70_000 + i * 1000).collect();
        w.push(&tokens[..4]).unwrap();
        w.push(&tokens[4..]).unwrap();
        w.finish_shard().unwrap();
        assert_eq!(w.index.shards.len(), 4);
        let index = ShardIndex {
            version: FORMAT_VERSION,
            dtype: TokenDtype::U32,
            vocab_size: 80_000,
            fingerprint: String::new(),
            train: w.index.clone(),
            heldout: SplitIndex::default(),
            train_counts: Vec::new(),
            source: SourceStats::default(),
        };
        let stream = TokenStream::open(dir.path(), &index, &index.train).unwrap();
        let mut out = Vec::new();
        stream.read(0, 10, &mut out).unwrap();
        assert_eq!(out, tokens);
        assert_eq!(TokenDtype::for_vocab(65_536), TokenDtype::U16);
        assert_eq!(TokenDtype::for_vocab(65_537), TokenDtype::U32);
    }
}

//! Text corpora on disk: a file or a directory (recursive) of `.txt` or `.jsonl` files,
//! optionally gzip-compressed, streamed as bounded chunks so memory stays flat whatever the
//! corpus size.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Largest chunk of a `.txt` document handed to the tokenizer at once. Chunks end on a blank
/// line when one is near, so words and usually paragraphs stay whole.
const MAX_CHUNK_BYTES: usize = 256 * 1024;

/// How the files of a corpus are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    /// Chosen per file from its extension (`.txt`, `.jsonl`, each optionally `.gz`).
    #[default]
    Auto,
    /// Plain text, one document per file: every non-hidden file is read.
    Txt,
    /// One JSON object per line, the document being the string in the text field: every
    /// non-hidden file is read.
    Jsonl,
}

/// A bounded piece of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    /// The text (valid UTF-8; invalid bytes were dropped and counted).
    pub text: String,
    /// True on the last chunk of a document: a separator follows it in the token stream.
    pub doc_end: bool,
}

/// What reading the corpus found, reported in the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    /// Files read successfully.
    pub files_read: usize,
    /// Files that could not be read, with the reason (skipped, not fatal).
    pub files_skipped: Vec<String>,
    /// Documents yielded.
    pub documents: usize,
    /// Documents in which invalid UTF-8 bytes were found and dropped.
    pub invalid_utf8_documents: usize,
    /// JSONL lines skipped (not JSON, or no string in the text field).
    pub bad_lines: usize,
    /// The first bad line's description, to make a wrong `text_field` obvious.
    pub first_bad_line: Option<String>,
    /// Bytes of text yielded.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Txt,
    Jsonl,
}

/// A corpus: the list of files under a path, read lazily.
#[derive(Debug, Clone)]
pub struct TextSource {
    root: PathBuf,
    files: Vec<(PathBuf, FileKind)>,
    text_field: String,
}

impl TextSource {
    /// Lists the corpus files under `path` (a file or a directory, searched recursively, in
    /// sorted order so runs are reproducible).
    ///
    /// # Errors
    /// The path does not exist, or holds no file of a known format.
    pub fn open(path: &Path, format: TextFormat, text_field: &str) -> Result<Self> {
        if !path.exists() {
            return Err(DataError::MissingPath(path.to_path_buf()));
        }
        let mut files = Vec::new();
        if path.is_file() {
            // An explicitly named file is read even without a known extension.
            let kind = kind_of(path, format).unwrap_or(FileKind::Txt);
            files.push((path.to_path_buf(), kind));
        } else {
            for entry in walkdir::WalkDir::new(path).sort_by_file_name().follow_links(true) {
                let entry = entry.map_err(|e| {
                    let p = e.path().unwrap_or(path).to_path_buf();
                    DataError::io(p, e.into())
                })?;
                if entry.file_type().is_file()
                    && let Some(kind) = kind_of(entry.path(), format)
                {
                    files.push((entry.path().to_path_buf(), kind));
                }
            }
        }
        if files.is_empty() {
            return Err(DataError::EmptyCorpus {
                path: path.to_path_buf(),
                detail: "no .txt, .jsonl, .txt.gz or .jsonl.gz files found".into(),
            });
        }
        Ok(Self { root: path.to_path_buf(), files, text_field: text_field.to_string() })
    }

    /// The corpus root as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of files found.
    pub fn num_files(&self) -> usize {
        self.files.len()
    }

    /// The corpus files, in reading order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// Streams the corpus as chunks. Unreadable files are skipped and counted in
    /// [`Chunks::stats`]; malformed JSONL lines likewise.
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks { source: self, next_file: 0, current: None, stats: SourceStats::default() }
    }
}

fn kind_of(path: &Path, format: TextFormat) -> Option<FileKind> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    let by_ext = if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") {
        Some(FileKind::Jsonl)
    } else if stem.ends_with(".txt") {
        Some(FileKind::Txt)
    } else {
        None
    };
    let hidden = name.starts_with('.');
    match format {
        TextFormat::Auto => by_ext,
        // An explicit format reads every (non-hidden) file, whatever its extension.
        TextFormat::Txt => (!hidden).then_some(FileKind::Txt),
        TextFormat::Jsonl => (!hidden).then_some(FileKind::Jsonl),
    }
}

fn open_reader(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let file = File::open(path)?;
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if gz {
        Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    })
}

struct OpenFile {
    path: PathBuf,
    kind: FileKind,
    reader: Box<dyn BufRead + Send>,
    line_no: usize,
    doc_has_invalid_utf8: bool,
    done: bool,
}

/// Iterator over the chunks of a [`TextSource`].
pub struct Chunks<'a> {
    source: &'a TextSource,
    next_file: usize,
    current: Option<OpenFile>,
    stats: SourceStats,
}

impl Chunks<'_> {
    /// What has been read so far (complete once the iterator is exhausted).
    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }

    fn skip_file(&mut self, path: &Path, err: &std::io::Error) {
        self.stats.files_skipped.push(format!("{}: {err}", path.display()));
    }

    /// Reads the next chunk of the current `.txt` file.
    fn next_txt(&mut self) -> Option<TextChunk> {
        let file = self.current.as_mut()?;
        let mut buf = Vec::with_capacity(8 * 1024);
        loop {
            let start = buf.len();
            match file.reader.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    file.done = true;
                    break;
                }
                Ok(_) => {
                    file.line_no += 1;
                    let line = &buf[start..];
                    let blank = line.iter().all(u8::is_ascii_whitespace);
                    if (blank && buf.len() >= MAX_CHUNK_BYTES / 2) || buf.len() >= MAX_CHUNK_BYTES {
                        break;
                    }
                }
                Err(e) => {
                    // A read error mid-file (e.g. a truncated gzip stream): keep what was
                    // read, end the document, and record the file as partially skipped.
                    let path = file.path.clone();
                    file.done = true;
                    self.skip_file(&path, &e);
                    break;
                }
            }
        }
        let file = self.current.as_mut()?;
        let (text, invalid) = decode_lossy(buf);
        file.doc_has_invalid_utf8 |= invalid;
        let doc_end = file.done;
        if doc_end {
            self.stats.documents += 1;
            if file.doc_has_invalid_utf8 {
                self.stats.invalid_utf8_documents += 1;
            }
        }
        self.stats.bytes += text.len() as u64;
        Some(TextChunk { text, doc_end })
    }

    /// Reads the next document of the current `.jsonl` file.
    fn next_jsonl(&mut self) -> Option<TextChunk> {
        let field = self.source.text_field.as_str();
        loop {
            let file = self.current.as_mut()?;
            let mut buf = Vec::new();
            match file.reader.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    file.done = true;
                    return None;
                }
                Ok(_) => {
                    file.line_no += 1;
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let (line, invalid) = decode_lossy(buf);
                    let bad = match serde_json::from_str::<serde_json::Value>(&line) {
                        Ok(serde_json::Value::Object(mut obj)) => match obj.remove(field) {
                            Some(serde_json::Value::String(text)) => {
                                self.stats.documents += 1;
                                self.stats.invalid_utf8_documents += usize::from(invalid);
                                self.stats.bytes += text.len() as u64;
                                return Some(TextChunk { text, doc_end: true });
                            }
                            Some(_) => format!("field \"{field}\" is not a string"),
                            None => format!("no field \"{field}\""),
                        },
                        Ok(_) => "not a JSON object".to_string(),
                        Err(e) => format!("invalid JSON: {e}"),
                    };
                    self.stats.bad_lines += 1;
                    if self.stats.first_bad_line.is_none() {
                        self.stats.first_bad_line =
                            Some(format!("{}:{}: {bad}", file.path.display(), file.line_no));
                    }
                }
                Err(e) => {
                    let path = file.path.clone();
                    file.done = true;
                    self.skip_file(&path, &e);
                    return None;
                }
            }
        }
    }
}

/// Decodes UTF-8, dropping invalid byte sequences; returns whether any were dropped.
fn decode_lossy(bytes: Vec<u8>) -> (String, bool) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => {
            let bytes = e.into_bytes();
            let mut out = String::with_capacity(bytes.len());
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
            }
            (out, true)
        }
    }
}

impl Iterator for Chunks<'_> {
    type Item = TextChunk;

    fn next(&mut self) -> Option<TextChunk> {
        loop {
            if let Some(file) = &self.current {
                if !file.done {
                    let chunk = match file.kind {
                        FileKind::Txt => self.next_txt(),
                        FileKind::Jsonl => self.next_jsonl(),
                    };
                    if chunk.is_some() {
                        return chunk;
                    }
                }
                self.current = None;
                continue;
            }
            let (path, kind) = self.source.files.get(self.next_file)?.clone();
            self.next_file += 1;
            match open_reader(&path) {
                Ok(reader) => {
                    self.stats.files_read += 1;
                    self.current = Some(OpenFile {
                        path,
                        kind,
                        reader,
                        line_no: 0,
                        doc_has_invalid_utf8: false,
                        done: false,
                    });
                }
                Err(e) => self.skip_file(&path, &e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_decoding_drops_only_invalid_bytes() {
        let (s, bad) = decode_lossy(b"caf\xc3\xa9 \xff\xfeok".to_vec());
        assert_eq!(s, "café ok");
        assert!(bad);
    }
}

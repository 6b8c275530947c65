//! Labeled text for fine-tuning and probes: folder-per-class, CSV and JSONL sources,
//! stratified seeded splits, few-label subsets, and padded classification batches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autodidact_core::batch::ClassificationBatch;
use autodidact_core::objective::BatchStream;
use autodidact_core::seed::{Stream, derive_seed};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::mlm::EpochSampler;
use crate::tokenizer::TextTokenizer;

/// How labeled examples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabeledFormat {
    /// A directory: `folders`; a `.csv` file: `csv`; anything else: `jsonl`.
    #[default]
    Auto,
    /// One sub-directory per class, one document per file (`bbc/sport/001.txt`).
    Folders,
    /// A CSV file with a header row naming the text and label columns.
    Csv,
    /// One JSON object per line with the text and label fields.
    Jsonl,
}

/// Which fields hold the text and the label (CSV columns or JSON keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledFields {
    /// Text field.
    pub text: String,
    /// Label field.
    pub label: String,
}

/// Labeled documents, their class names, and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct LabeledCorpus {
    /// Document texts.
    pub texts: Vec<String>,
    /// Class index of each document, into `classes`.
    pub labels: Vec<usize>,
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// Skipped examples by reason (e.g. `"missing label field"`), with the first place seen.
    pub skipped: BTreeMap<String, Skipped>,
}

/// A count of skipped examples of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// How many.
    pub count: usize,
    /// Where the first one was (`file:line`).
    pub first: String,
}

impl LabeledCorpus {
    /// Reads labeled examples. With `classes` given (a test file read after the training
    /// data), examples with any other label are skipped and counted as `unknown label`.
    ///
    /// Missing label or text fields, empty texts and invalid UTF-8 are skipped and counted in
    /// [`LabeledCorpus::skipped`]; unreadable files and malformed CSV are errors.
    ///
    /// # Errors
    /// A missing path, an empty result, unreadable files or malformed CSV, naming the file.
    pub fn open(path: &Path, format: LabeledFormat, fields: &LabeledFields, classes: Option<&[String]>) -> Result<Self> {
        if !path.exists() {
            return Err(DataError::Invalid(format!("{}: does not exist", path.display())));
        }
        let format = match format {
            LabeledFormat::Auto if path.is_dir() => LabeledFormat::Folders,
            LabeledFormat::Auto if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) => LabeledFormat::Csv,
            LabeledFormat::Auto => LabeledFormat::Jsonl,
            f => f,
        };
        let mut raw = Raw::default();
        match format {
            LabeledFormat::Folders => read_folders(path, &mut raw)?,
            LabeledFormat::Csv => read_csv(path, fields, &mut raw)?,
            LabeledFormat::Jsonl | LabeledFormat::Auto => read_jsonl(path, fields, &mut raw)?,
        }
        let classes: Vec<String> = match classes {
            Some(c) => c.to_vec(),
            None => {
                let mut c: Vec<String> = raw.examples.iter().map(|e| e.1.clone()).collect();
                c.sort();
                c.dedup();
                c
            }
        };
        let index: BTreeMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let mut out = Self { classes: classes.clone(), skipped: raw.skipped, ..Self::default() };
        for (text, label, place) in raw.examples {
            match index.get(label.as_str()) {
                Some(&i) => {
                    out.texts.push(text);
                    out.labels.push(i);
                }
                None => skip(&mut out.skipped, &format!("unknown label {label:?}"), &place),
            }
        }
        if out.texts.is_empty() {
            let why = if out.skipped.is_empty() { String::new() } else { format!(" (skipped: {})", out.skipped_summary()) };
            return Err(DataError::Invalid(format!("{}: no labeled examples{why}", path.display())));
        }
        Ok(out)
    }

    /// Skips as `reason: count (first at place)`, for messages.
    pub fn skipped_summary(&self) -> String {
        self.skipped.iter().map(|(k, v)| format!("{k}: {} (first at {})", v.count, v.first)).collect::<Vec<_>>().join("; ")
    }
}

#[derive(Default)]
struct Raw {
    /// (text, label, place)
    examples: Vec<(String, String, String)>,
    skipped: BTreeMap<String, Skipped>,
}

fn skip(skipped: &mut BTreeMap<String, Skipped>, reason: &str, place: &str) {
    let entry = skipped.entry(reason.to_string()).or_insert_with(|| Skipped { count: 0, first: place.to_string() });
    entry.count += 1;
}

impl Raw {
    fn push(&mut self, text: Option<String>, label: Option<String>, place: String) {
        match (text, label) {
            (_, None) => skip(&mut self.skipped, "missing label", &place),
            (None, _) => skip(&mut self.skipped, "missing text", &place),
            (Some(t), _) if t.trim().is_empty() => skip(&mut self.skipped, "empty text", &place),
            (Some(_), Some(l)) if l.trim().is_empty() => skip(&mut self.skipped, "missing label", &place),
            (Some(t), Some(l)) => self.examples.push((t, l.trim().to_string(), place)),
        }
    }
}

fn visible(p: &Path) -> bool {
    p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'))
}

fn read_folders(root: &Path, raw: &mut Raw) -> Result<()> {
    let mut class_dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| DataError::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && visible(p))
        .collect();
    class_dirs.sort();
    if class_dirs.is_empty() {
        return Err(DataError::Invalid(format!("{}: no class sub-directories (expected one folder per class)", root.display())));
    }
    for dir in class_dirs {
        let label = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut files: Vec<PathBuf> =
            walkdir::WalkDir::new(&dir).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file() && visible(e.path())).map(|e| e.into_path()).collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| DataError::io(&file, e))?;
            let place = file.display().to_string();
            match String::from_utf8(bytes) {
                Ok(text) => raw.push(Some(text), Some(label.clone()), place),
                Err(_) => skip(&mut raw.skipped, "invalid UTF-8", &place),
            }
        }
    }
    Ok(())
}

fn read_csv(path: &Path, fields: &LabeledFields, raw: &mut Raw) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(path).map_err(|e| csv_err(path, e))?;
    let headers = reader.headers().map_err(|e| csv_err(path, e))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| DataError::Invalid(format!("{}: no column {name:?} (columns: {:?})", path.display(), headers.iter().collect::<Vec<_>>())))
    };
    let (text_col, label_col) = (column(&fields.text)?, column(&fields.label)?);
    for (i, record) in reader.byte_records().enumerate() {
        let place = format!("{}:{}", path.display(), i + 2);
        let record = record.map_err(|e| csv_err(path, e))?;
        let get = |c: usize| record.get(c).map(|b| String::from_utf8(b.to_vec()));
        match (get(text_col), get(label_col)) {
            (Some(Err(_)), _) | (_, Some(Err(_))) => skip(&mut raw.skipped, "invalid UTF-8", &place),
            (text, label) => raw.push(text.and_then(|r| r.ok()), label.and_then(|r| r.ok()), place),
        }
    }
    Ok(())
}

fn csv_err(path: &Path, e: csv::Error) -> DataError {
    DataError::Invalid(format!("{}: malformed CSV: {e}", path.display()))
}

fn read_jsonl(path: &Path, fields: &LabeledFields, raw: &mut Raw) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let place = format!("{}:{}", path.display(), i + 1);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
            skip(&mut raw.skipped, "malformed JSON line", &place);
            continue;
        };
        let field = |name: &str| match value.get(name) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        raw.push(field(&fields.text), field(&fields.label), place);
    }
    Ok(())
}

/// Indices of a train/validation/test split.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Training examples.
    pub train: Vec<usize>,
    /// Validation examples (early stopping).
    pub validation: Vec<usize>,
    /// Test examples (the reported figures).
    pub test: Vec<usize>,
}

/// Splits examples per class, seeded: each class contributes `round(n · fraction)` to
/// validation and to test (at least one each when the fraction is positive) and the rest to
/// training, so every split has every class in proportion.
///
/// # Errors
/// A class with too few examples to give each requested split one example, naming it.
pub fn stratified_split(labels: &[usize], classes: &[String], validation_fraction: f64, test_fraction: f64, seed: u64) -> Result<Split> {
    let mut split = Split::default();
    for (c, name) in classes.iter().enumerate() {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        let n = idx.len();
        let take = |f: f64| if f > 0.0 { ((n as f64 * f).round() as usize).max(1) } else { 0 };
        let (n_val, n_test) = (take(validation_fraction), take(test_fraction));
        if n < n_val + n_test + 1 {
            return Err(DataError::Invalid(format!(
                "class {name:?} has {n} example(s), too few for validation_fraction {validation_fraction} and test_fraction {test_fraction} (needs at least {})",
                n_val + n_test + 1
            )));
        }
        idx.shuffle(&mut StdRng::seed_from_u64(derive_seed(seed, Stream::Split, c as u64)));
        split.validation.extend(&idx[..n_val]);
        split.test.extend(&idx[n_val..n_val + n_test]);
        split.train.extend(&idx[n_val + n_test..]);
    }
    for v in [&mut split.train, &mut split.validation, &mut split.test] {
        v.sort_unstable();
    }
    Ok(split)
}

/// Keeps `fraction` of the training examples of each class (at least one per class),
/// seeded, for few-label experiments. Smaller fractions keep subsets of larger ones.
pub fn label_subset(train: &[usize], labels: &[usize], num_classes: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let mut kept = Vec::new();
    for c in 0..num_classes {
        let mut idx: Vec<usize> = train.iter().copied().filter(|&i| labels[i] == c).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(derive_seed(seed, Stream::Split, 1_000_000 + c as u64)));
        let keep = ((idx.len() as f64 * fraction).round() as usize).clamp(1.min(idx.len()), idx.len());
        kept.extend(&idx[..keep]);
    }
    kept.sort_unstable();
    kept
}

/// Tokenized labeled examples: `[CLS] text [SEP]`, truncated to `max_len` tokens.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Token ids per example.
    pub ids: Vec<Vec<u32>>,
    /// Segment ids per example (1 for the second text of a pair).
    pub type_ids: Vec<Vec<u32>>,
    /// Class per example.
    pub labels: Vec<u32>,
    /// Examples that were truncated.
    pub truncated: usize,
    pad: u32,
}

impl Encoded {
    /// Tokenizes every text.
    ///
    /// # Errors
    /// `max_len` below 2, or a tokenization failure.
    pub fn new(tokenizer: &TextTokenizer, texts: &[String], labels: &[usize], max_len: usize) -> Result<Self> {
        let inputs: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (t.as_str(), None)).collect();
        Self::pairs(tokenizer, &inputs, labels, max_len)
    }

    /// Tokenizes single texts or pairs (`[CLS] a [SEP] b [SEP]`, token types 0 and 1).
    ///
    /// # Errors
    /// `max_len` below 2, or a tokenization failure.
    pub fn pairs(tokenizer: &TextTokenizer, inputs: &[(&str, Option<&str>)], labels: &[usize], max_len: usize) -> Result<Self> {
        if max_len < 2 {
            return Err(DataError::Invalid(format!("max_seq_len must be at least 2, got {max_len}")));
        }
        let sep = tokenizer.special().sep;
        let mut truncated = 0;
        let (ids, type_ids) = tokenizer
            .encode_for_model(inputs)?
            .into_iter()
            .map(|(mut ids, mut types)| {
                if ids.len() > max_len {
                    ids.truncate(max_len - 1);
                    ids.push(sep);
                    types.truncate(max_len);
                    truncated += 1;
                }
                (ids, types)
            })
            .unzip();
        Ok(Self { ids, type_ids, labels: labels.iter().map(|&l| l as u32).collect(), truncated, pad: tokenizer.special().pad })
    }

    /// The examples `indices` as one right-padded batch.
    pub fn batch(&self, indices: &[usize]) -> ClassificationBatch {
        let seq_len = indices.iter().map(|&i| self.ids[i].len()).max().unwrap_or(1);
        let padding = |n: usize| seq_len - n;
        let mut b = ClassificationBatch { batch_size: indices.len(), seq_len, input_ids: Vec::new(), token_type_ids: Vec::new(), attention_mask: Vec::new(), labels: Vec::new() };
        for &i in indices {
            let (ids, types) = (&self.ids[i], &self.type_ids[i]);
            b.input_ids.extend(ids.iter().copied().chain(std::iter::repeat_n(self.pad, padding(ids.len()))));
            b.token_type_ids.extend(types.iter().copied().chain(std::iter::repeat_n(0, padding(types.len()))));
            b.attention_mask.extend(std::iter::repeat_n(1u8, ids.len()).chain(std::iter::repeat_n(0, padding(ids.len()))));
            b.labels.push(self.labels[i]);
        }
        b
    }

    /// `indices` in order, in batches of `batch_size`.
    pub fn batches(&self, indices: &[usize], batch_size: usize) -> Vec<ClassificationBatch> {
        indices.chunks(batch_size.max(1)).map(|c| self.batch(c)).collect()
    }
}

/// Training batches drawn epoch by epoch (seeded shuffles) from the training indices, and
/// the validation set as evaluation batches.
#[derive(Debug)]
pub struct ClassificationData {
    encoded: Encoded,
    train: Vec<usize>,
    validation: Vec<usize>,
    sampler: EpochSampler,
    batch_size: usize,
}

impl ClassificationData {
    /// # Errors
    /// An empty training or validation set.
    pub fn new(encoded: Encoded, train: Vec<usize>, validation: Vec<usize>, batch_size: usize, seed: u64) -> Result<Self> {
        if train.is_empty() || validation.is_empty() {
            return Err(DataError::Invalid(format!("{} training and {} validation examples: both must be non-empty", train.len(), validation.len())));
        }
        let sampler = EpochSampler::new(train.len(), seed);
        Ok(Self { encoded, train, validation, sampler, batch_size })
    }

    /// Training batches per epoch (the last one partial).
    pub fn steps_per_epoch(&self) -> u64 {
        self.train.len().div_ceil(self.batch_size) as u64
    }
}

impl BatchStream for ClassificationData {
    type Batch = ClassificationBatch;

    fn train_batch(&mut self, k: u64) -> std::result::Result<ClassificationBatch, String> {
        let n = self.train.len() as u64;
        let bs = self.batch_size as u64;
        // Batches never straddle epochs: batch k of epoch e covers positions [k·bs, (k+1)·bs) ∩ epoch.
        let per_epoch = n.div_ceil(bs);
        let (epoch, j) = (k / per_epoch, k % per_epoch);
        let positions = (j * bs)..((j + 1) * bs).min(n);
        let idx: Vec<usize> = positions.map(|p| self.train[self.sampler.index(epoch * n + p)]).collect();
        Ok(self.encoded.batch(&idx))
    }

    fn eval_batches(&self) -> std::result::Result<Vec<ClassificationBatch>, String> {
        Ok(self.encoded.batches(&self.validation, self.batch_size))
    }
}

//! Corpus reading, tokenizers, shards, masking, image sets and augmentation: round trips,
//! statistics, bad inputs.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::Write;
use std::path::{Path, PathBuf};

use autodidact_data::DataError;
use autodidact_data::mlm::{CropViews, EpochSampler, MlmBatches, MlmMasker, PackedSequences, Views};
use autodidact_data::shards::{self, ShardOptions, TokenStream};
use autodidact_data::source::{TextFormat, TextSource};
use autodidact_data::tokenizer::{SpecialTokens, TextTokenizer, TokenizerKind, TokenizerTrainSpec};

/// This crate's directory as cargo gives it to the running tests, else as compiled in. A test
/// binary built by another checkout that shares the target directory (a clean clone run by
/// `.ci/run`) is reused by cargo when the sources are older, and its compiled-in path then
/// names that checkout.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

const TEXT: &str = "The quick brown fox jumps over the lazy dog. A stitch in time saves nine.\n\n\
Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do.\n\n\
Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse.\n";

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn spec(kind: TokenizerKind, vocab_size: usize) -> TokenizerTrainSpec {
    TokenizerTrainSpec { kind, vocab_size, lowercase: true, min_frequency: 1 }
}

fn corpus(dir: &Path) -> TextSource {
    write(&dir.join("a.txt"), TEXT.repeat(20).as_bytes());
    write(&dir.join("sub/b.txt.gz"), &gz(TEXT.to_uppercase().repeat(10).as_bytes()));
    write(&dir.join("c.jsonl"), br#"{"text": "first json document"}
{"text": "second json document", "id": 2}
"#);
    write(&dir.join("ignored.csv"), b"not,read");
    TextSource::open(dir, TextFormat::Auto, "text").unwrap()
}

#[test]
fn source_reads_txt_gz_and_jsonl_recursively_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus(dir.path());
    assert_eq!(source.num_files(), 3);
    let mut chunks = source.chunks();
    let texts: Vec<_> = chunks.by_ref().collect();
    let stats = chunks.stats();
    assert_eq!(stats.files_read, 3);
    assert_eq!(stats.documents, 4, "a.txt, sub/b.txt.gz and two JSONL lines");
    assert_eq!(texts.iter().filter(|c| c.doc_end).count(), 4);
    assert_eq!(texts[0].text.len(), TEXT.len() * 20);
    assert!(texts.iter().any(|c| c.text == "first json document"));
    assert!(texts.iter().any(|c| c.text.starts_with("THE QUICK")));
}

#[test]
fn an_explicit_format_reads_every_visible_file() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("notes.md"), b"markdown text");
    write(&dir.path().join(".hidden"), b"skip me");
    assert!(TextSource::open(dir.path(), TextFormat::Auto, "text").is_err(), "auto knows no .md");
    let source = TextSource::open(dir.path(), TextFormat::Txt, "text").unwrap();
    assert_eq!(source.chunks().map(|c| c.text).collect::<Vec<_>>(), ["markdown text"]);
}

#[test]
fn invalid_utf8_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("bad.txt"), b"good text \xff\xfe more good text");
    write(&dir.path().join("ok.txt"), b"fine");
    let source = TextSource::open(dir.path(), TextFormat::Auto, "text").unwrap();
    let mut chunks = source.chunks();
    let texts: Vec<_> = chunks.by_ref().map(|c| c.text).collect();
    assert_eq!(texts[0], "good text  more good text");
    assert_eq!(chunks.stats().invalid_utf8_documents, 1);
}

#[test]
fn truncated_gzip_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let full = gz(TEXT.repeat(200).as_bytes());
    write(&dir.path().join("broken.txt.gz"), &full[..full.len() / 2]);
    write(&dir.path().join("fine.txt"), TEXT.as_bytes());
    let source = TextSource::open(dir.path(), TextFormat::Auto, "text").unwrap();
    let mut chunks = source.chunks();
    let n = chunks.by_ref().count();
    assert!(n >= 1);
    let stats = chunks.stats();
    assert_eq!(stats.files_skipped.len(), 1, "{stats:?}");
    assert!(stats.files_skipped[0].contains("broken.txt.gz"));
}

#[test]
fn bad_jsonl_lines_are_counted_with_the_first_reason() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("d.jsonl"), b"{\"body\": \"x\"}\nnot json\n{\"body\": \"y\"}\n");
    let source = TextSource::open(dir.path(), TextFormat::Auto, "text").unwrap();
    let mut chunks = source.chunks();
    assert_eq!(chunks.by_ref().count(), 0);
    assert_eq!(chunks.stats().bad_lines, 3);
    let first = chunks.stats().first_bad_line.clone().unwrap();
    assert!(first.contains("d.jsonl:1") && first.contains("no field \"text\""), "{first}");
    // The right field reads them.
    let source = TextSource::open(dir.path(), TextFormat::Auto, "body").unwrap();
    assert_eq!(source.chunks().count(), 2);
}

#[test]
fn missing_and_empty_corpora_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = TextSource::open(&missing, TextFormat::Auto, "text").unwrap_err();
    assert!(matches!(err, DataError::MissingPath(_)));
    assert!(err.to_string().contains("does not exist"), "{err}");
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let err = TextSource::open(&dir.path().join("empty"), TextFormat::Auto, "text").unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err}");
    // Files that hold nothing: the tokenizer reports the empty corpus.
    write(&dir.path().join("blank/a.txt"), b"");
    let source = TextSource::open(&dir.path().join("blank"), TextFormat::Auto, "text").unwrap();
    let err = TextTokenizer::train(&source, &spec(TokenizerKind::WordPiece, 100)).unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn vocabulary_size_out_of_range_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus(dir.path());
    let err = TextTokenizer::train(&source, &spec(TokenizerKind::WordPiece, 10)).unwrap_err();
    assert!(err.to_string().contains("vocab_size 10"), "{err}");
}

#[test]
fn wordpiece_training_is_reproducible_and_round_trips_through_json() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus(dir.path());
    let (a, stats) = TextTokenizer::train(&source, &spec(TokenizerKind::WordPiece, 200)).unwrap();
    let (b, _) = TextTokenizer::train(&source, &spec(TokenizerKind::WordPiece, 200)).unwrap();
    assert_eq!(a.to_json().unwrap(), b.to_json().unwrap(), "two trainings differ");
    assert_eq!(stats.documents, 4);
    assert_eq!(a.special(), SpecialTokens { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 });
    let path = dir.path().join("tok/tokenizer.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    a.save(&path).unwrap();
    let loaded = TextTokenizer::load(&path).unwrap();
    let text = "Alice was beginning to get very tired";
    let ids = a.encode_batch(vec![text]).unwrap().remove(0);
    assert_eq!(ids, loaded.encode_batch(vec![text]).unwrap().remove(0));
    assert_eq!(loaded.decode(&ids).unwrap(), text.to_lowercase());
    assert!(!ids.contains(&a.special().unk));
}

/// Text that exercises every branch of the ASCII fast path and every reason to leave it.
const TRICKY: &[&str] = &[
    "Héllo wörld, café naïve; ÉCOLE",
    "日本語のテキスト 中文字符 한국어 mixed中文text",
    "tab\tsep\nnew\r\nline  double   spaces ",
    "ctrl\x0bchar form\x0cfeed null\0byte del\x7fete bell\x07 esc\x1b[0m",
    "zero\u{200b}width join\u{200d}er soft\u{ad}hyphen bom\u{feff}",
    "nbsp\u{a0}space ideographic\u{3000}space en\u{2002}space",
    "[MASK] [SEP] text[CLS]inside ##ing #hash [bracket] ##",
    "emoji 😀 and \u{fffd} replacement, snowman \u{2603}",
    "don't can't U.S.A. e-mail 3.14 $100 50% a+b=c <tag> {brace} |pipe| ~tilde^ `tick` \\back \"quote\"",
    "combining e\u{301} accent \u{301}leading mark",
    "MiXeD CaSe WORDS AND ALICE",
    "supercalifragilisticexpialidocious qqqqzzzzxqj zzz",
    "",
    "   \n\t ",
];

fn assert_fast_path_matches_tokenizers(tok: &TextTokenizer, texts: &[&str]) {
    assert!(tok.has_fast_path());
    let fast = tok.encode_batch(texts.to_vec()).unwrap();
    let reference = tok.encode_batch_hf(texts.to_vec()).unwrap();
    for ((text, f), r) in texts.iter().zip(&fast).zip(&reference) {
        assert_eq!(f, r, "fast path and tokenizers differ on {text:?}");
    }
}

/// The ASCII fast path of `encode_batch` gives exactly `tokenizers`' ids: on tricky text, on
/// words longer than the per-word limit, with and without lowercasing, on the shipped books,
/// and for a transformers BERT tokenizer.
#[test]
fn wordpiece_fast_path_encodes_exactly_like_tokenizers() {
    let long = ["x".repeat(100), "y".repeat(101), format!("{} tail", "alice".repeat(30))];
    let mut texts: Vec<&str> = TRICKY.to_vec();
    texts.extend(long.iter().map(String::as_str));
    let books = TextSource::open(&crate_dir().join("../../assets/corpus/gutenberg"), TextFormat::Auto, "text").unwrap();
    let chunks: Vec<String> = books.chunks().map(|c| c.text).collect();
    for lowercase in [true, false] {
        let spec = TokenizerTrainSpec { lowercase, ..spec(TokenizerKind::WordPiece, 2000) };
        let (tok, _) = TextTokenizer::train(&books, &spec).unwrap();
        assert_fast_path_matches_tokenizers(&tok, &texts);
        assert_fast_path_matches_tokenizers(&tok, &chunks.iter().map(String::as_str).collect::<Vec<_>>());
    }
    assert_fast_path_matches_tokenizers(&TextTokenizer::load_hf_dir(&hf_fixture_dir()).unwrap(), &texts);
}

#[test]
fn bpe_tokenizer_has_roberta_specials_and_no_unknowns() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus(dir.path());
    let (t, _) = TextTokenizer::train(&source, &spec(TokenizerKind::Bpe, 300)).unwrap();
    assert!(!t.has_fast_path(), "the ASCII fast path is BERT's pipeline only");
    let ids = t.encode_batch(vec!["Zebra ünïcödé ☃"]).unwrap().remove(0);
    assert!(!ids.is_empty());
    assert!(!ids.contains(&t.special().unk), "byte-level BPE never needs <unk>");
    assert_eq!(t.id_to_token(t.special().mask).as_deref(), Some("<mask>"));
}

#[test]
fn loading_a_bad_tokenizer_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    write(&path, b"{ not json");
    let err = TextTokenizer::load(&path).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    // Found by the tokenizer fuzz target: `tokenizers` 0.22 panics on some malformed files
    // (a control character inside the decoder's JSON; a valid-JSON but malformed
    // `Precompiled` normalizer). Both must be errors naming the file, not panics.
    let fixture = crate_dir().join("../autodidact-models/tests/fixtures/hf-bert-tiny/tokenizer.json");
    let good = std::fs::read_to_string(&fixture).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
    json["decoder"] = serde_json::json!({ "type": "WordPiece", "prefix": "##", "cleanup": true });
    let text = serde_json::to_string_pretty(&json).unwrap().replace("\"prefix\": \"##\"", "\"prefix\": \"#\u{1}#\"");
    write(&path, text.as_bytes());
    let err = TextTokenizer::load(&path).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("not valid JSON"), "{err}");
    json["normalizer"] = serde_json::json!({ "type": "Precompiled", "precompiled_charsmap": 5 });
    write(&path, serde_json::to_string(&json).unwrap().as_bytes());
    let err = std::panic::catch_unwind(|| TextTokenizer::load(&path)).expect("no panic").unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("rejected it"), "{err}");
}

#[test]
fn shards_round_trip_the_token_stream_with_separators() {
    let dir = tempfile::tempdir().unwrap();
    let docs = ["one two three", "four five", "six seven eight nine"];
    let lines: String = docs.iter().map(|d| format!("{{\"text\": \"{d}\"}}\n")).collect();
    write(&dir.path().join("corpus/d.jsonl"), lines.as_bytes());
    let source = TextSource::open(&dir.path().join("corpus"), TextFormat::Auto, "text").unwrap();
    let (tok, _) = TextTokenizer::train(&source, &spec(TokenizerKind::WordPiece, 100)).unwrap();
    let opts = ShardOptions { heldout_fraction: 0.0, seed: 1, max_shard_tokens: 4 };
    let shard_dir = dir.path().join("shards");
    let index = shards::build_or_reuse(&source, &tok, &shard_dir, &opts).unwrap();
    assert!(index.train.shards.len() > 1, "small shards force several files");
    let mut expected = Vec::new();
    for d in docs {
        expected.extend(tok.encode_batch(vec![d]).unwrap().remove(0));
        expected.push(tok.special().sep);
    }
    let stream = TokenStream::open(&shard_dir, &index, &index.train).unwrap();
    let mut got = Vec::new();
    stream.read(0, stream.len() as usize, &mut got).unwrap();
    assert_eq!(got, expected);
    assert_eq!(index.train_counts.iter().sum::<u64>(), expected.len() as u64);
    // Reading any window equals the slice of the whole.
    let mut w = Vec::new();
    stream.read(3, 5, &mut w).unwrap();
    assert_eq!(w, expected[3..8]);
    // A shard truncated under an open stream: an error naming the file, not a crash.
    let copy = dir.path().join("shards-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(&shard_dir).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let opened = TokenStream::open(&copy, &index, &index.train).unwrap();
    std::fs::OpenOptions::new().write(true).open(copy.join("train-00000.bin")).unwrap().set_len(1).unwrap();
    let err = opened.read(0, 4, &mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains("train-00000.bin"), "{err}");

    // Same inputs: reused, not rebuilt.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let first = mtime(&shard_dir.join("train-00000.bin"));
    let again = shards::build_or_reuse(&source, &tok, &shard_dir, &opts).unwrap();
    assert_eq!(again, index);
    assert_eq!(mtime(&shard_dir.join("train-00000.bin")), first);

    // A truncated shard is detected.
    let f = std::fs::OpenOptions::new().write(true).open(shard_dir.join("train-00001.bin")).unwrap();
    f.set_len(1).unwrap();
    let err = TokenStream::open(&shard_dir, &index, &index.train).unwrap_err();
    assert!(err.to_string().contains("train-00001.bin") && err.to_string().contains("truncated"), "{err}");
}

#[test]
fn heldout_split_takes_about_the_requested_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let para = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor. ".repeat(60);
    let text: String = (0..200).map(|i| format!("{i} {para}\n\n")).collect();
    write(&dir.path().join("c/big.txt"), text.as_bytes());
    let source = TextSource::open(&dir.path().join("c"), TextFormat::Auto, "text").unwrap();
    let (tok, _) = TextTokenizer::train(&source, &spec(TokenizerKind::WordPiece, 120)).unwrap();
    let opts = ShardOptions { heldout_fraction: 0.2, seed: 9, ..ShardOptions::default() };
    let index = shards::build_or_reuse(&source, &tok, &dir.path().join("s"), &opts).unwrap();
    let frac = index.heldout.tokens as f64 / (index.train.tokens + index.heldout.tokens) as f64;
    assert!((0.08..0.35).contains(&frac), "held-out fraction {frac}");
}

fn masker(ratio: f64) -> MlmMasker {
    MlmMasker::new(SpecialTokens { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 }, 1000, ratio, 0.8, 0.1).unwrap()
}

#[test]
fn masking_statistics_follow_80_10_10() {
    let seq_len = 128;
    let rows = 400;
    let ids: Vec<u32> = (0..rows * seq_len).map(|i| if i % seq_len == 0 { 2 } else if i % 37 == 0 { 3 } else { 5 + (i as u32 * 7919) % 990 }).collect();
    let batch = masker(0.15).mask(ids.clone(), seq_len, 42);
    let candidates = ids.iter().filter(|&&t| t > 4).count() as f64;
    let n = batch.num_masked() as f64;
    let sigma = (candidates * 0.15 * 0.85).sqrt();
    assert!((n - 0.15 * candidates).abs() < 4.0 * sigma, "masked {n} of {candidates}");
    let (mut mask, mut kept, mut random) = (0.0, 0.0, 0.0);
    for (&p, &label) in batch.masked_positions.iter().zip(&batch.masked_labels) {
        let p = p as usize;
        assert_eq!(label, ids[p], "labels are the original tokens");
        assert!(ids[p] > 4, "special tokens are never masked");
        match batch.input_ids[p] {
            4 => mask += 1.0,
            t if t == ids[p] => kept += 1.0,
            t => {
                assert!(t > 4 && t < 1000, "random replacements are ordinary tokens");
                random += 1.0;
            }
        }
    }
    let check = |count: f64, p: f64| {
        let s = (n * p * (1.0 - p)).sqrt();
        assert!((count - n * p).abs() < 4.0 * s + 2.0, "{count} vs expected {}", n * p);
    };
    check(mask, 0.8);
    // A random replacement can draw the original token (1/995): count it with "kept".
    check(kept, 0.1 + 0.1 / 995.0);
    check(random, 0.1 - 0.1 / 995.0);
    // Unmasked positions are untouched.
    let masked: std::collections::HashSet<u32> = batch.masked_positions.iter().copied().collect();
    for (i, id) in ids.iter().enumerate() {
        if !masked.contains(&(i as u32)) {
            assert_eq!(batch.input_ids[i], *id);
        }
    }
}

#[test]
fn masking_is_seeded_and_skips_padding() {
    let ids: Vec<u32> = (0..64).map(|i| if i >= 48 { 0 } else { 10 + i }).collect();
    let a = masker(0.5).mask(ids.clone(), 64, 7);
    assert_eq!(a, masker(0.5).mask(ids.clone(), 64, 7));
    assert_ne!(a.masked_positions, masker(0.5).mask(ids.clone(), 64, 8).masked_positions);
    assert!(a.masked_positions.iter().all(|&p| p < 48), "padding is never masked");
    assert_eq!(a.attention_mask.iter().filter(|&&m| m == 0).count(), 16);
    // Even a tiny ratio yields at least one target.
    assert_eq!(masker(1e-9).mask(ids, 64, 1).num_masked(), 1);
}

#[test]
fn invalid_masking_probabilities_are_rejected() {
    let sp = SpecialTokens { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 };
    assert!(MlmMasker::new(sp, 100, 0.0, 0.8, 0.1).is_err());
    assert!(MlmMasker::new(sp, 100, 0.15, 0.8, 0.3).is_err());
}

#[test]
fn sampler_visits_every_item_once_per_epoch() {
    let mut s = EpochSampler::new(50, 3);
    for epoch in 0..3u64 {
        let mut seen: Vec<usize> = (0..50).map(|k| s.index(epoch * 50 + k)).collect();
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }
    let e0: Vec<usize> = (0..50).map(|k| s.index(k)).collect();
    let e1: Vec<usize> = (50..100).map(|k| s.index(k)).collect();
    assert_ne!(e0, e1, "each epoch has its own order");
}

/// Crop views: each example's two views are `[CLS]` plus a contiguous piece of one and the
/// same document (never across a `[SEP]`), padded; batches are reproducible from their index.
#[test]
fn crop_views_are_two_pieces_of_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let words = ["red", "green", "blue", "black", "white", "brown"];
    let docs: Vec<String> = (0..12).map(|d| (0..3 + 4 * (d % 5)).map(|i| format!("{}{}", words[d % 6], i % 7)).collect::<Vec<_>>().join(" ")).collect();
    let lines: String = docs.iter().map(|d| format!("{{\"text\": \"{d}\"}}\n")).collect();
    write(&dir.path().join("corpus/d.jsonl"), lines.as_bytes());
    let source = TextSource::open(&dir.path().join("corpus"), TextFormat::Auto, "text").unwrap();
    let (tok, _) = TextTokenizer::train(&source, &spec(TokenizerKind::WordPiece, 100)).unwrap();
    let opts = ShardOptions { heldout_fraction: 0.0, ..ShardOptions::default() };
    let index = shards::build_or_reuse(&source, &tok, &dir.path().join("s"), &opts).unwrap();
    let doc_ids: Vec<Vec<u32>> = tok.encode_batch(docs.iter().map(String::as_str).collect()).unwrap();
    let sp = tok.special();
    let (seq_len, region) = (6usize, 12usize);
    let regions = |seed| {
        let stream = TokenStream::open(&dir.path().join("s"), &index, &index.train).unwrap();
        let seqs = PackedSequences::new(stream, region + 1, sp.cls, "training").unwrap();
        MlmBatches::new(seqs, Views::Crops(CropViews { seq_len, sep: sp.sep, pad: sp.pad }), 3, seed)
    };
    let mut batches = regions(0);
    let contains = |doc: &[u32], piece: &[u32]| doc.windows(piece.len()).any(|w| w == piece);
    let mut differing = 0;
    for k in 0..8 {
        let b = batches.train_batch(k).unwrap();
        assert_eq!((b.batch_size, b.seq_len, b.input_ids.len()), (6, seq_len, 6 * seq_len));
        assert!(b.masked_positions.is_empty());
        let view = |r: usize| {
            let row = &b.input_ids[r * seq_len..(r + 1) * seq_len];
            let mask = &b.attention_mask[r * seq_len..(r + 1) * seq_len];
            let len = mask.iter().filter(|&&m| m == 1).count();
            assert!(mask[..len].iter().all(|&m| m == 1) && row[len..].iter().all(|&t| t == sp.pad), "padding after the tokens: {row:?}");
            assert_eq!(row[0], sp.cls);
            assert!(len >= 2 && !row[1..len].contains(&sp.sep), "a piece of a document: {row:?}");
            row[1..len].to_vec()
        };
        for j in 0..3 {
            let (a, c) = (view(j), view(j + 3));
            assert!(doc_ids.iter().any(|d| contains(d, &a) && contains(d, &c)), "views {a:?} and {c:?} come from one document");
            differing += usize::from(a != c);
        }
        assert_eq!(batches.train_batch(k).unwrap().input_ids, b.input_ids, "batch {k} is a function of its index");
    }
    assert!(differing > 0, "independent crops differ where documents are longer than a crop");
    assert_ne!(regions(1).train_batch(0).unwrap().input_ids, regions(0).train_batch(0).unwrap().input_ids);
}

#[test]
fn too_short_a_split_for_one_sequence_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("c/a.txt"), b"just a few words here");
    let source = TextSource::open(&dir.path().join("c"), TextFormat::Auto, "text").unwrap();
    let (tok, _) = TextTokenizer::train(&source, &spec(TokenizerKind::WordPiece, 100)).unwrap();
    let opts = ShardOptions { heldout_fraction: 0.0, ..ShardOptions::default() };
    let index = shards::build_or_reuse(&source, &tok, &dir.path().join("s"), &opts).unwrap();
    let stream = TokenStream::open(&dir.path().join("s"), &index, &index.train).unwrap();
    let err = PackedSequences::new(stream, 512, 2, "training").unwrap_err();
    assert!(err.to_string().contains("fewer than one sequence of 512"), "{err}");
}

fn hf_fixture_dir() -> std::path::PathBuf {
    crate_dir().join("../autodidact-models/tests/fixtures/hf-bert-tiny")
}

/// `(texts, ids)` that transformers' `BertTokenizer` produced (no special tokens).
fn hf_expected_tokens() -> (Vec<String>, Vec<Vec<u32>>) {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(hf_fixture_dir().join("expected_tokens.json")).unwrap()).unwrap();
    (serde_json::from_value(json["texts"].clone()).unwrap(), serde_json::from_value(json["ids"].clone()).unwrap())
}

#[test]
fn hf_tokenizer_json_and_vocab_txt_encode_like_transformers() {
    let (texts, ids) = hf_expected_tokens();
    let from_json = TextTokenizer::load_hf_dir(&hf_fixture_dir()).unwrap();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(from_json.encode_batch(texts.clone()).unwrap(), ids);

    // Only vocab.txt and tokenizer_config.json, as older BERT checkpoints ship.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(hf_fixture_dir().join(f), tmp.path().join(f)).unwrap();
    }
    let from_vocab = TextTokenizer::load_hf_dir(tmp.path()).unwrap();
    assert_eq!(from_vocab.encode_batch(texts).unwrap(), ids);
    assert_eq!((from_vocab.special(), from_vocab.vocab_size()), (from_json.special(), from_json.vocab_size()));

    std::fs::remove_file(tmp.path().join("vocab.txt")).unwrap();
    let err = TextTokenizer::load_hf_dir(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("no tokenizer.json or vocab.txt"), "{err}");
}

/// The files written for HF tools load back (from either tokenizer.json or vocab.txt) into a
/// tokenizer that encodes exactly as the original.
#[test]
fn hf_tokenizer_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus(dir.path());
    let text = vec!["The quick brown fox, jumping over 12 lazy dogs. Über café!"];
    for kind in [TokenizerKind::WordPiece, TokenizerKind::Bpe] {
        let (original, _) = TextTokenizer::train(&source, &spec(kind, 150)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let files = original.hf_files(128).unwrap();
        for (name, bytes) in &files {
            std::fs::write(out.path().join(name), bytes).unwrap();
        }
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("tokenizer_config.json")).unwrap()).unwrap();
        assert_eq!(config["model_max_length"], 128);
        let expected = original.encode_batch(text.clone()).unwrap();
        assert_eq!(TextTokenizer::load_hf_dir(out.path()).unwrap().encode_batch(text.clone()).unwrap(), expected);
        if kind == TokenizerKind::WordPiece {
            assert!(names.contains(&"vocab.txt"));
            assert_eq!((config["tokenizer_class"].as_str(), config["do_lower_case"].as_bool()), (Some("BertTokenizer"), Some(true)));
            std::fs::remove_file(out.path().join("tokenizer.json")).unwrap();
            let from_vocab = TextTokenizer::load_hf_dir(out.path()).unwrap();
            assert_eq!(from_vocab.encode_batch(text.clone()).unwrap(), expected);
            assert_eq!(from_vocab.special(), original.special());
        } else {
            assert!(!names.contains(&"vocab.txt"));
        }
    }
}

// ---- labeled data, splits, and host-side evaluation ----

use autodidact_data::labeled::{Encoded, LabeledCorpus, LabeledFields, LabeledFormat, label_subset, stratified_split};

fn fields() -> LabeledFields {
    LabeledFields { text: "text".into(), label: "label".into() }
}

#[test]
fn labeled_folders_csv_and_jsonl_agree_and_count_skips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("folders/sport/1.txt"), b"a goal in the final minute");
    write(&d.join("folders/sport/2.txt"), b"the match ended in a draw");
    write(&d.join("folders/tech/1.txt"), b"a new phone with a faster chip");
    write(&d.join("folders/tech/empty.txt"), b"   \n");
    write(&d.join("folders/tech/bad.txt"), b"caf\xe9");
    write(&d.join("folders/.hidden/x.txt"), b"ignored");
    let folders = LabeledCorpus::open(&d.join("folders"), LabeledFormat::Auto, &fields(), None).unwrap();
    assert_eq!(folders.classes, ["sport", "tech"]);
    assert_eq!(folders.labels, [0, 0, 1]);
    assert_eq!(folders.skipped["empty text"].count, 1);
    assert_eq!(folders.skipped["invalid UTF-8"].count, 1);

    write(&d.join("data.csv"), b"id,text,label\n1,\"a goal, late\",sport\n2,a new chip,tech\n3,no label here,\n4,\"the draw\",sport\n");
    let csv = LabeledCorpus::open(&d.join("data.csv"), LabeledFormat::Auto, &fields(), None).unwrap();
    assert_eq!((csv.texts[0].as_str(), csv.labels.as_slice()), ("a goal, late", &[0, 1, 0][..]));
    assert_eq!(csv.skipped["missing label"].count, 1);
    assert!(csv.skipped["missing label"].first.ends_with("data.csv:4"), "{:?}", csv.skipped);

    write(&d.join("data.jsonl"), b"{\"text\": \"a goal\", \"label\": \"sport\"}\n{\"text\": \"a chip\"}\nnot json\n{\"text\": \"x\", \"label\": 3}\n");
    let jsonl = LabeledCorpus::open(&d.join("data.jsonl"), LabeledFormat::Auto, &fields(), None).unwrap();
    assert_eq!(jsonl.classes, ["3", "sport"]);
    assert_eq!((jsonl.skipped["missing label"].count, jsonl.skipped["malformed JSON line"].count), (1, 1));

    // A test file with a label the training data does not have: counted, named.
    let test = LabeledCorpus::open(&d.join("data.jsonl"), LabeledFormat::Jsonl, &fields(), Some(&["sport".to_string()])).unwrap();
    assert_eq!(test.labels, [0]);
    assert_eq!(test.skipped["unknown label \"3\""].count, 1);

    let err = LabeledCorpus::open(&d.join("data.csv"), LabeledFormat::Csv, &LabeledFields { text: "body".into(), label: "label".into() }, None).unwrap_err().to_string();
    assert!(err.contains("data.csv") && err.contains("no column \"body\""), "{err}");
    std::fs::create_dir(d.join("nothing")).unwrap();
    let err = LabeledCorpus::open(&d.join("nothing"), LabeledFormat::Auto, &fields(), None).unwrap_err().to_string();
    assert!(err.contains("no class sub-directories"), "{err}");
}

#[test]
fn stratified_splits_keep_class_proportions_and_name_small_classes() {
    let labels: Vec<usize> = (0..300).map(|i| if i < 200 { 0 } else { 1 }).collect();
    let classes = ["a".to_string(), "b".to_string()];
    let split = stratified_split(&labels, &classes, 0.1, 0.2, 7).unwrap();
    let count = |idx: &[usize], c: usize| idx.iter().filter(|&&i| labels[i] == c).count();
    assert_eq!((count(&split.validation, 0), count(&split.validation, 1)), (20, 10));
    assert_eq!((count(&split.test, 0), count(&split.test, 1)), (40, 20));
    assert_eq!(split.train.len(), 210);
    let mut all: Vec<usize> = split.train.iter().chain(&split.validation).chain(&split.test).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..300).collect::<Vec<_>>(), "a partition");
    assert_eq!(split, stratified_split(&labels, &classes, 0.1, 0.2, 7).unwrap(), "seeded");
    assert_ne!(split, stratified_split(&labels, &classes, 0.1, 0.2, 8).unwrap());

    // Few labels: per class, at least one, and smaller fractions are subsets of larger ones.
    let ten = label_subset(&split.train, &labels, 2, 0.1, 7);
    let one = label_subset(&split.train, &labels, 2, 0.01, 7);
    assert_eq!((count(&ten, 0), count(&ten, 1)), (14, 7));
    assert_eq!((count(&one, 0), count(&one, 1)), (1, 1));
    assert!(one.iter().all(|i| ten.contains(i)));

    let err = stratified_split(&[0, 0, 0, 1], &classes, 0.1, 0.2, 0).unwrap_err().to_string();
    assert!(err.contains("class \"b\" has 1 example(s)"), "{err}");
}

#[test]
fn encoded_examples_are_truncated_and_padded_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, _) = TextTokenizer::train(&corpus(dir.path()), &spec(TokenizerKind::WordPiece, 150)).unwrap();
    let texts = vec!["the quick brown fox jumps over the lazy dog again and again".to_string(), "fox".to_string()];
    let enc = Encoded::new(&tok, &texts, &[1, 0], 6).unwrap();
    assert_eq!(enc.truncated, 1);
    let s = tok.special();
    let b = enc.batch(&[1, 0]);
    assert_eq!((b.batch_size, b.seq_len, b.labels.as_slice()), (2, 6, &[0, 1][..]));
    assert_eq!(b.input_ids[0], s.cls);
    assert_eq!(b.input_ids[11], s.sep, "a truncated text still ends with [SEP]");
    let short = enc.ids[1].len();
    assert_eq!(&b.attention_mask[..6], &[vec![1u8; short], vec![0; 6 - short]].concat()[..]);
    assert!(b.input_ids[short..6].iter().all(|&t| t == s.pad));
}

#[test]
fn knn_f1_and_confusion_follow_their_definitions() {
    use autodidact_core::eval::{accuracy, confusion_matrix, knn_predict, macro_f1};
    // Two clusters on the unit circle; the query near each one takes its label.
    let train = [1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9];
    let labels = [0, 0, 1, 1];
    assert_eq!(knn_predict(&train, &labels, &[2.0, 0.1, 0.0, 3.0], 2, 2, 3, 0.07), [0, 1]);
    let cm = confusion_matrix(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0], 3);
    assert_eq!(cm, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]);
    assert!((accuracy(&cm) - 0.6).abs() < 1e-12);
    // F1 per class: 2·1/(2+2) = 0.5, 2·2/(3+2) = 0.8, 0 → macro 0.4333 (sklearn agrees).
    assert!((macro_f1(&cm) - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-12);
}

#[test]
fn mcnemar_matches_the_exact_binomial_tail() {
    use autodidact_core::eval::{PairedTest, mcnemar};
    // Oracle: Python's exact integers,
    //   p = min(1, 2 * Fraction(sum(comb(n, i) for i in range(k + 1)), 2**n)).
    let split = |only_first: usize, only_second: usize, both_right: usize| {
        let truth = vec![0usize; only_first + only_second + both_right + 7];
        let mut first = vec![1usize; truth.len()];
        let mut second = vec![1usize; truth.len()];
        first[..only_first].fill(0);
        second[only_first..only_first + only_second].fill(0);
        first[only_first + only_second..][..both_right].fill(0);
        second[only_first + only_second..][..both_right].fill(0);
        mcnemar(&truth, &first, &second)
    };
    for (a, b, p) in [(3, 11, 0.057373046875), (1118, 1000, 0.010996056274409763), (0, 30, 1.862645149230957e-09), (6000, 4000, 1.7404316412268784e-89)] {
        let t = split(a, b, 50);
        assert_eq!((t.only_first, t.only_second), (a, b));
        assert!((t.p_value / p - 1.0).abs() < 1e-9, "{a} vs {b}: {} != {p}", t.p_value);
        assert_eq!(split(b, a, 0).p_value, t.p_value, "the test is symmetric");
    }
    // No discordant examples, or an even split: no evidence either way.
    assert_eq!(split(0, 0, 20), PairedTest { only_first: 0, only_second: 0, p_value: 1.0 });
    assert_eq!(split(5, 5, 0).p_value, 1.0);
}

// ---- image sets: IDX files and folders ----

use std::sync::Arc;

use autodidact_core::objective::BatchStream;
use autodidact_data::augment::{Augment, BlurSpec, CropSpec, ImageBatches, JitterSpec, channel_stats, labeled_batches};
use autodidact_data::images::ImageSet;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// An IDX file: magic `0x0000 08 <ndims>`, big-endian dimensions, then the bytes.
fn idx(ndims: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, ndims];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Bytes that differ from pixel to pixel and from image to image (no mirror symmetry).
fn pattern(n: usize, salt: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 37 + salt * 101 + (i * i) % 13) % 256) as u8).collect()
}

fn save_png(path: &Path, w: u32, h: u32, color: image::ExtendedColorType, pixels: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::save_buffer_with_format(path, pixels, w, h, color, image::ImageFormat::Png).unwrap();
}

fn gray_png(path: &Path, w: u32, h: u32, salt: usize) -> Vec<u8> {
    let pixels = pattern((w * h) as usize, salt);
    save_png(path, w, h, image::ExtendedColorType::L8, &pixels);
    pixels
}

#[test]
fn idx_images_and_labels_round_trip_raw_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pixels = pattern(3 * 2 * 4, 0);
    let images = idx(3, &[3, 2, 4], &pixels);
    let labels = idx(1, &[3], &[2, 0, 2]);
    write(&d.join("raw-images"), &images);
    write(&d.join("raw-labels"), &labels);
    write(&d.join("images.gz"), &gz(&images));
    // gzip recognised by its magic, without the extension.
    write(&d.join("labels-gzipped"), &gz(&labels));

    let raw = ImageSet::open_idx(&d.join("raw-images"), Some(&d.join("raw-labels"))).unwrap();
    let zipped = ImageSet::open(&d.join("images.gz"), Some(&d.join("labels-gzipped")), false).unwrap();
    assert_eq!(raw, zipped);
    assert_eq!((raw.len(), raw.height, raw.width, raw.channels), (3, 2, 4, 1));
    assert_eq!(raw.image(1), &pixels[8..16]);
    assert_eq!(raw.labels.as_deref(), Some(&[2, 0, 2][..]));
    assert_eq!(raw.classes, ["0", "1", "2"], "\"0\" to the largest label");

    let unlabeled = ImageSet::open_idx(&d.join("raw-images"), None).unwrap();
    assert_eq!((unlabeled.labels.as_ref(), unlabeled.classes.len()), (None, 0));

    let sub = raw.subset(&[2, 0]);
    assert_eq!((sub.len(), sub.image(0), sub.labels.as_deref()), (2, raw.image(2), Some(&[2, 2][..])));

    let named = raw.clone().with_class_names(vec!["shirt".into(), "shoe".into(), "bag".into()]).unwrap();
    assert_eq!(named.classes, ["shirt", "shoe", "bag"]);
    let err = raw.clone().with_class_names(vec!["shirt".into()]).unwrap_err().to_string();
    assert!(err.contains("1 class names for 3 classes"), "{err}");
    assert!(raw.with_class_names(vec!["a".into(), "b".into(), "a".into()]).is_err(), "duplicates");
    assert!(unlabeled.with_class_names(vec!["a".into()]).is_err(), "unlabeled");
}

#[test]
fn malformed_idx_files_are_errors_naming_the_file_and_byte_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let open = |images: &str, labels: Option<&str>| {
        ImageSet::open_idx(&d.join(images), labels.map(|l| d.join(l)).as_deref()).unwrap_err().to_string()
    };
    write(&d.join("truncated-idx3"), &idx(3, &[3, 2, 4], &pattern(20, 0)));
    let err = open("truncated-idx3", None);
    assert!(err.contains("truncated-idx3") && err.contains("3×2×4 = 24 bytes") && err.contains("holds 20 (truncated)"), "{err}");

    write(&d.join("long-idx3"), &idx(3, &[3, 2, 4], &pattern(26, 0)));
    let err = open("long-idx3", None);
    assert!(err.contains("long-idx3") && err.contains("holds 26 (2 trailing bytes)"), "{err}");

    // A truncated gzip stream is named too.
    let zipped = gz(&idx(3, &[3, 2, 4], &pattern(24, 0)));
    write(&d.join("cut.gz"), &zipped[..zipped.len() / 2]);
    let err = open("cut.gz", None);
    assert!(err.contains("cut.gz") && err.contains("gzip"), "{err}");

    write(&d.join("images"), &idx(3, &[3, 2, 4], &pattern(24, 0)));
    write(&d.join("labels"), &idx(1, &[2], &[0, 1]));
    let err = open("labels", None);
    assert!(err.contains("labels") && err.contains("magic 0x00000801, expected 0x00000803"), "{err}");
    let mut floats = idx(3, &[3, 2, 4], &pattern(24, 0));
    floats[2] = 0x0d;
    write(&d.join("floats"), &floats);
    let err = open("floats", None);
    assert!(err.contains("floats") && err.contains("element type 0x0d"), "{err}");
    write(&d.join("short"), &[0, 0]);
    assert!(open("short", None).contains("too short"));

    let err = open("images", Some("labels"));
    assert!(err.contains("labels: holds 2 labels but") && err.contains("holds 3 images"), "{err}");

    write(&d.join("none"), &idx(3, &[0, 28, 28], &[]));
    let err = open("none", None);
    assert!(err.contains("none") && err.contains("no images"), "{err}");

    let err = ImageSet::open(&d.join("missing"), None, false).unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("does not exist"), "{err}");
}

#[test]
fn image_folders_with_class_subfolders_are_labeled_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("classes");
    let zebra = gray_png(&root.join("zebra/1.png"), 4, 3, 1);
    let ant = gray_png(&root.join("ant/2.PNG"), 4, 3, 2);
    let nested = gray_png(&root.join("ant/deeper/3.png"), 4, 3, 3);
    gray_png(&root.join(".hidden/4.png"), 9, 9, 4);
    std::fs::create_dir_all(root.join("empty")).unwrap();
    write(&root.join("README.txt"), b"not an image");

    let set = ImageSet::open(&root, None, false).unwrap();
    assert_eq!(set.classes, ["ant", "zebra"], "sorted; the empty and hidden folders are no classes");
    assert_eq!(set.labels.as_deref(), Some(&[0, 0, 1][..]));
    assert_eq!((set.len(), set.height, set.width, set.channels), (3, 3, 4, 1));
    assert_eq!([set.image(0), set.image(1), set.image(2)], [&ant[..], &nested[..], &zebra[..]], "sorted paths, PNG lossless");
    assert!(set.skipped.is_empty());

    // Loose images: one unlabeled set, sub-folders included; JPEG decodes too.
    let loose = dir.path().join("loose");
    gray_png(&loose.join("a.png"), 4, 3, 5);
    std::fs::create_dir_all(loose.join("sub")).unwrap();
    image::save_buffer_with_format(loose.join("sub/b.JPG"), &pattern(12, 6), 4, 3, image::ExtendedColorType::L8, image::ImageFormat::Jpeg).unwrap();
    let set = ImageSet::open_folder(&loose, false).unwrap();
    assert_eq!((set.len(), set.labels.as_ref(), set.classes.len(), set.channels), (2, None, 0, 1));

    let err = ImageSet::open(&loose, Some(&dir.path().join("labels")), false).unwrap_err().to_string();
    assert!(err.contains("applies only to IDX"), "{err}");
}

#[test]
fn mixed_sizes_or_channels_are_errors_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gray_png(&d.join("sizes/a.png"), 32, 32, 0);
    gray_png(&d.join("sizes/b.png"), 28, 28, 0);
    let err = ImageSet::open_folder(&d.join("sizes"), false).unwrap_err().to_string();
    assert!(err.contains("a.png is 32×32 but") && err.contains("b.png is 28×28"), "{err}");

    gray_png(&d.join("channels/a.png"), 4, 4, 0);
    save_png(&d.join("channels/b.png"), 4, 4, image::ExtendedColorType::Rgb8, &pattern(48, 0));
    let err = ImageSet::open_folder(&d.join("channels"), false).unwrap_err().to_string();
    assert!(err.contains("a.png has 1 channel (grayscale)") && err.contains("b.png has 3 channels"), "{err}");
}

#[test]
fn a_corrupt_image_is_an_error_or_a_counted_skip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("set");
    let good = gray_png(&d.join("a.png"), 8, 8, 0);
    gray_png(&d.join("b.png"), 8, 8, 1);
    let bytes = std::fs::read(d.join("b.png")).unwrap();
    write(&d.join("b.png"), &bytes[..bytes.len() / 2]);
    write(&d.join("c.jpg"), b"not a jpeg at all");

    let err = ImageSet::open_folder(&d, false).unwrap_err().to_string();
    assert!(err.contains("b.png: cannot decode image") && err.contains("skip_corrupt"), "the first bad file in sorted order: {err}");

    let set = ImageSet::open_folder(&d, true).unwrap();
    assert_eq!((set.len(), set.image(0)), (1, &good[..]));
    assert_eq!(set.skipped.len(), 2);
    assert!(set.skipped[0].contains("b.png: ") && set.skipped[1].contains("c.jpg: "), "{:?}", set.skipped);

    std::fs::remove_file(d.join("a.png")).unwrap();
    let err = ImageSet::open_folder(&d, true).unwrap_err().to_string();
    assert!(err.contains("none of the 2 images could be decoded"), "{err}");
}

#[test]
fn empty_and_missing_folders_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("empty/class")).unwrap();
    write(&d.join("empty/notes.txt"), b"no images here");
    let err = ImageSet::open_folder(&d.join("empty"), false).unwrap_err().to_string();
    assert!(err.contains("empty") && err.contains("no images found"), "{err}");
    let err = ImageSet::open_folder(&d.join("nowhere"), false).unwrap_err().to_string();
    assert!(err.contains("nowhere: does not exist"), "{err}");
}

#[test]
fn alpha_channels_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let rgba = pattern(4 * 3 * 4, 0);
    save_png(&dir.path().join("rgba/a.png"), 4, 3, image::ExtendedColorType::Rgba8, &rgba);
    let set = ImageSet::open_folder(&dir.path().join("rgba"), false).unwrap();
    assert_eq!(set.channels, 3);
    let rgb: Vec<u8> = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    assert_eq!(set.image(0), &rgb[..]);

    let la = pattern(4 * 3 * 2, 1);
    save_png(&dir.path().join("la/a.png"), 4, 3, image::ExtendedColorType::La8, &la);
    let set = ImageSet::open_folder(&dir.path().join("la"), false).unwrap();
    assert_eq!(set.channels, 1);
    assert_eq!(set.image(0), &la.iter().step_by(2).copied().collect::<Vec<_>>()[..]);
}

// ---- augmentation and image batches ----

const MEAN: [f32; 3] = [0.5, 0.4, 0.3];
const STD: [f32; 3] = [0.25, 0.2, 0.3];

fn rgb_set(n: usize, h: usize, w: usize) -> ImageSet {
    let pixels: Vec<u8> = (0..n).flat_map(|i| pattern(h * w * 3, i)).collect();
    ImageSet::from_raw(h, w, 3, pixels, Some((0..n as u32).collect())).unwrap()
}

fn augmented(aug: &Augment, set: &ImageSet, i: usize, seed: u64) -> Vec<f32> {
    let mut out = vec![0.0; aug.view_len(set.channels)];
    aug.apply(set.image(i), set.height, set.width, set.channels, &mut StdRng::seed_from_u64(seed), &mut out);
    out
}

/// `(x / 255 - mean) / std` of image `i`, CHW: what the eval transform must produce.
fn normalized(set: &ImageSet, i: usize) -> Vec<f32> {
    let (c, plane) = (set.channels, set.height * set.width);
    let image = set.image(i);
    (0..c * plane).map(|j| (f32::from(image[(j % plane) * c + j / plane]) / 255.0 - MEAN[j / plane]) / STD[j / plane]).collect()
}

#[test]
fn eval_augment_only_normalizes_and_hflip_mirrors() {
    let set = rgb_set(2, 5, 7);
    let eval = Augment::eval((5, 7), MEAN.to_vec(), STD.to_vec());
    assert_eq!(augmented(&eval, &set, 1, 0), normalized(&set, 1), "exactly, bit for bit");

    let flip = Augment { hflip: 1.0, ..eval.clone() };
    let (plain, mirrored) = (augmented(&eval, &set, 1, 3), augmented(&flip, &set, 1, 3));
    for row in 0..3 * 5 {
        let (a, b) = (&plain[row * 7..(row + 1) * 7], &mirrored[row * 7..(row + 1) * 7]);
        assert_eq!(a.iter().rev().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
    }
    assert_ne!(plain, mirrored);
}

#[test]
fn a_full_square_crop_is_a_plain_resize() {
    let set = rgb_set(1, 12, 12);
    let resize = Augment::eval((5, 5), MEAN.to_vec(), STD.to_vec());
    let crop = Augment { crop: Some(CropSpec { scale: (1.0, 1.0), ratio: (1.0, 1.0) }), ..resize.clone() };
    for seed in 0..5 {
        assert_eq!(augmented(&crop, &set, 0, seed), augmented(&resize, &set, 0, 0));
    }
    // Resizing a constant image keeps it constant (the filter weights sum to one).
    let flat = ImageSet::from_raw(12, 12, 3, vec![200; 12 * 12 * 3], None).unwrap();
    let out = augmented(&resize, &flat, 0, 0);
    for (j, v) in out.iter().enumerate() {
        let c = j / 25;
        assert!((v - (200.0 / 255.0 - MEAN[c]) / STD[c]).abs() < 1e-6);
    }
}

#[test]
fn simclr_views_are_seeded_finite_and_in_range() {
    for (channels, size) in [(3, 64), (1, 32)] {
        let pixels = pattern(2 * 80 * 80 * channels, channels);
        let set = ImageSet::from_raw(80, 80, channels, pixels, None).unwrap();
        let aug = Augment::simclr((size, size), channels, vec![0.5; channels], vec![0.5; channels]);
        assert_eq!(aug.blur.is_some(), size >= 64, "SimCLR's CIFAR variant has no blur");
        assert_eq!((aug.grayscale > 0.0, aug.jitter.unwrap().hue > 0.0), (channels == 3, channels == 3));
        aug.validate(channels).unwrap();
        let view = augmented(&aug, &set, 0, 9);
        assert_eq!(view.len(), channels * size * size);
        assert_eq!(view, augmented(&aug, &set, 0, 9), "same seed, same view");
        assert_ne!(view, augmented(&aug, &set, 0, 10));
        for seed in 0..50 {
            let v = augmented(&aug, &set, 1, seed);
            assert!(v.iter().all(|x| x.is_finite() && (-1.0 - 1e-5..=1.0 + 1e-5).contains(x)), "[0, 1] normalized by 0.5/0.5");
        }
    }
    // Every step at once, with certainty, on a colour image: still in range.
    let set = rgb_set(1, 40, 30);
    let all = Augment {
        size: (24, 24),
        crop: Some(CropSpec::default()),
        hflip: 1.0,
        jitter: Some(JitterSpec { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.5, p: 1.0 }),
        grayscale: 1.0,
        blur: Some(BlurSpec { p: 1.0, sigma: (0.1, 2.0) }),
        solarize: 1.0,
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    };
    let v = augmented(&all, &set, 0, 1);
    assert!(v.iter().all(|x| (0.0..=0.5).contains(x)), "solarized [0, 1] values");
    assert_eq!(&v[..576], &v[576..1152], "grayscale replicates one plane");
}

#[test]
fn invalid_augmentations_are_rejected_and_configs_round_trip() {
    let eval = Augment::eval((8, 8), MEAN.to_vec(), STD.to_vec());
    assert!(eval.validate(3).is_ok());
    let err = eval.validate(1).unwrap_err().to_string();
    assert!(err.contains("one value per channel (1)"), "{err}");
    assert!(Augment { hflip: 1.5, ..eval.clone() }.validate(3).unwrap_err().to_string().contains("hflip = 1.5"));
    assert!(Augment { std: vec![1.0, 0.0, 1.0], ..eval.clone() }.validate(3).is_err());
    assert!(Augment { crop: Some(CropSpec { scale: (0.9, 0.1), ratio: (1.0, 1.0) }), ..eval.clone() }.validate(3).is_err());
    assert!(Augment { size: (0, 8), ..eval.clone() }.validate(3).is_err());

    let simclr = Augment::simclr((96, 96), 3, MEAN.to_vec(), STD.to_vec());
    let json = serde_json::to_string(&simclr).unwrap();
    assert_eq!(serde_json::from_str::<Augment>(&json).unwrap(), simclr);
    let minimal: Augment = serde_json::from_str(r#"{"size": [8, 8], "mean": [0.5], "std": [0.5], "crop": {}}"#).unwrap();
    assert_eq!((minimal.crop, minimal.hflip, minimal.jitter), (Some(CropSpec::default()), 0.0, None));
    assert!(serde_json::from_str::<Augment>(r#"{"size": [8, 8], "mean": [0.5], "std": [0.5], "flip": 0.5}"#).is_err(), "unknown field");
}

#[test]
fn image_batches_are_pure_functions_of_k_and_view_major() {
    let set = Arc::new(rgb_set(10, 8, 8));
    let simclr = Augment::simclr((8, 8), 3, MEAN.to_vec(), STD.to_vec());
    let stream = || ImageBatches::new(set.clone(), (0..8).collect(), simclr.clone(), 2, 3, 5).unwrap();
    let (mut a, mut b) = (stream(), stream());
    assert_eq!(a.steps_per_epoch(), 2, "8 images in batches of 3: the last incomplete batch is dropped");
    let first = a.train_batch(0).unwrap();
    let later = a.train_batch(4).unwrap();
    assert_eq!(later, b.train_batch(4).unwrap(), "independent of the call history");
    assert_eq!(first, b.train_batch(0).unwrap());
    assert_ne!(first, a.train_batch(1).unwrap());
    assert_eq!((first.batch_size, first.views, first.channels, first.height, first.width), (3, 2, 3, 8, 8));
    assert_eq!(first.pixels.len(), 2 * 3 * first.view_len());
    assert_eq!(first.labels.len(), 3);
    // Within an epoch no image repeats (labels are image indices here).
    let epoch: Vec<u32> = [a.train_batch(2).unwrap().labels, a.train_batch(3).unwrap().labels].concat();
    let mut seen = epoch.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 6, "{epoch:?}");
    assert!(seen.iter().all(|&i| i < 8), "training indices only");

    let vl = first.view_len();
    let view = |batch: &autodidact_core::batch::ImageBatch, v: usize, i: usize| batch.pixels[(v * batch.batch_size + i) * vl..][..vl].to_vec();
    for i in 0..3 {
        assert_ne!(view(&first, 0, i), view(&first, 1, i), "two SimCLR views of image {i} differ");
    }

    // Under the eval transform the views match and sit where the layout says.
    let eval = Augment::eval((8, 8), MEAN.to_vec(), STD.to_vec());
    let batch = ImageBatches::new(set.clone(), (0..8).collect(), eval.clone(), 2, 3, 5).unwrap().train_batch(7).unwrap();
    for i in 0..3 {
        let expected = normalized(&set, batch.labels[i] as usize);
        assert_eq!((view(&batch, 0, i), view(&batch, 1, i)), (expected.clone(), expected));
    }

    // Evaluation batches: fixed, from the evaluation indices, as many views as training.
    let with_eval = stream().with_eval(vec![8, 9, 3, 4], simclr.clone(), 1).unwrap();
    let evals = with_eval.eval_batches().unwrap();
    assert_eq!(evals, with_eval.eval_batches().unwrap());
    assert_eq!((evals.len(), evals[0].views, evals[0].labels.as_slice()), (1, 2, &[8, 9, 3][..]));
    assert!(stream().eval_batches().unwrap().is_empty());

    assert!(ImageBatches::new(set.clone(), vec![0, 1], simclr.clone(), 2, 3, 5).unwrap_err().to_string().contains("fewer than one batch"));
    assert!(ImageBatches::new(set.clone(), vec![0, 1, 10], simclr.clone(), 2, 3, 5).unwrap_err().to_string().contains("index 10"));
    let gray = Augment::simclr((8, 8), 1, vec![0.5], vec![0.5]);
    assert!(ImageBatches::new(set, (0..8).collect(), gray, 2, 3, 5).is_err(), "1-channel normalization for RGB images");
}

#[test]
fn labeled_batches_and_channel_statistics() {
    let set = rgb_set(10, 6, 6);
    let eval = Augment::eval((6, 6), MEAN.to_vec(), STD.to_vec());
    let indices: Vec<usize> = (0..10).rev().collect();
    let batches = labeled_batches(&set, &indices, &eval, 4).unwrap();
    assert_eq!(batches.iter().map(|b| (b.batch_size, b.views)).collect::<Vec<_>>(), [(4, 1), (4, 1), (2, 1)]);
    assert_eq!(batches[2].labels, [1, 0]);
    assert_eq!(batches[0].pixels[..batches[0].view_len()], normalized(&set, 9)[..]);

    // Half the pixels 0, half 255: mean 0.5, std 0.5; a constant channel gets std 1.
    let pixels: Vec<u8> = (0..2 * 4 * 4).flat_map(|i| [if i % 2 == 0 { 0 } else { 255 }, 51, 255]).collect();
    let set = ImageSet::from_raw(4, 4, 3, pixels, None).unwrap();
    let (mean, std) = channel_stats(&set, 100);
    assert!((mean[0] - 0.5).abs() < 1e-6 && (mean[1] - 0.2).abs() < 1e-6 && (mean[2] - 1.0).abs() < 1e-6, "{mean:?}");
    assert!((std[0] - 0.5).abs() < 1e-6 && std[1] == 1.0 && std[2] == 1.0, "{std:?}");
}

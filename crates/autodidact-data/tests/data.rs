//! Corpus reading, tokenizers, shards and masking: round trips, statistics, bad inputs.

use std::io::Write;
use std::path::Path;

use autodidact_data::DataError;
use autodidact_data::mlm::{EpochSampler, MlmMasker, PackedSequences};
use autodidact_data::shards::{self, ShardOptions, TokenStream};
use autodidact_data::source::{TextFormat, TextSource};
use autodidact_data::tokenizer::{SpecialTokens, TextTokenizer, TokenizerKind, TokenizerTrainSpec};

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

#[test]
fn bpe_tokenizer_has_roberta_specials_and_no_unknowns() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus(dir.path());
    let (t, _) = TextTokenizer::train(&source, &spec(TokenizerKind::Bpe, 300)).unwrap();
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
    stream.read(0, stream.len() as usize, &mut got);
    assert_eq!(got, expected);
    assert_eq!(index.train_counts.iter().sum::<u64>(), expected.len() as u64);
    // Reading any window equals the slice of the whole.
    let mut w = Vec::new();
    stream.read(3, 5, &mut w);
    assert_eq!(w, expected[3..8]);

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
    for i in 0..ids.len() {
        if !masked.contains(&(i as u32)) {
            assert_eq!(batch.input_ids[i], ids[i]);
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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../autodidact-models/tests/fixtures/hf-bert-tiny")
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

//! End-to-end tests of the `autodidact` binary: smoke training, determinism, exact resume,
//! and the errors users see for bad configs and bad data.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autodidact"))
}

/// The repository root, from this crate's directory as cargo gives it to the running tests
/// (else as compiled in, which in a binary reused from another checkout's build names that
/// checkout: see `crate_dir` in autodidact-data's tests).
fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from).join("../..")
}

fn run(args: &[&str], cwd: &Path) -> Output {
    bin().args(args).current_dir(cwd).output().expect("run autodidact")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A small, fast variant of the smoke config, written into `dir`.
fn tiny_config(dir: &Path, corpus: &Path, extra: &str) -> PathBuf {
    let cfg = format!(
        r#"
[run]
name = "t"
seed = 11

[data]
path = "{}"
heldout_fraction = 0.05
seq_len = 32

[tokenizer]
vocab_size = 300

[model]
hidden_size = 32
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 64
max_position_embeddings = 32
hidden_dropout_prob = 0.1
attention_probs_dropout_prob = 0.1

[objective]
type = "mlm"

[train]
batch_size = 8
max_steps = 12
lr = 3e-3
warmup_steps = 1
log_every = 1
eval_every = 6
eval_batches = 2
checkpoint_every = 4
keep_last = 2
{extra}
"#,
        corpus.display()
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn alice() -> PathBuf {
    repo().join("assets/corpus/gutenberg/carroll-alice.txt.gz")
}

fn metrics(run_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn train_losses(run_dir: &Path) -> Vec<(u64, f64)> {
    metrics(run_dir).iter().filter(|m| m.get("loss").is_some()).map(|m| (m["step"].as_u64().unwrap(), m["loss"].as_f64().unwrap())).collect()
}

#[test]
fn smoke_config_learns_and_writes_a_complete_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "pretrain",
        repo().join("configs/smoke-mlm.toml").to_str().unwrap(),
        "--expect-loss-drop",
        "0.15",
        "--output-dir",
        dir.path().to_str().unwrap(),
    ], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let run_dir = dir.path().join("smoke-mlm");
    for f in ["config.toml", "tokenizer.json", "metrics.jsonl", "summary.json", "shards/index.json"] {
        assert!(run_dir.join(f).exists(), "missing {f}");
    }
    let summary: Value = serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap();
    let acc = summary["final_eval"]["eval_accuracy"].as_f64().unwrap();
    let unigram = summary["unigram_baseline"]["eval_accuracy"].as_f64().unwrap();
    assert!(acc > unigram, "accuracy {acc} not above the unigram baseline {unigram}");
    // The accuracy at replaced targets (what context alone tells) is reported beside it.
    let context = summary["final_eval"]["eval_context_accuracy"].as_f64().unwrap();
    let context_unigram = summary["unigram_baseline"]["eval_context_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&context) && (0.0..=1.0).contains(&context_unigram), "{summary}");
    assert!(text(&out).contains("at replaced tokens"), "{}", text(&out));
    // Every training line has the documented fields; evaluation lines theirs.
    let lines = metrics(&run_dir);
    assert!(lines.iter().filter(|m| m.get("loss").is_some()).all(|m| m.get("lr").is_some() && m.get("tokens_per_s").is_some()));
    assert!(lines.iter().any(|m| m.get("eval_loss").is_some() && m.get("eval_accuracy").is_some()));
    // The resolved config parses back and names the absolute corpus path.
    let resolved = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(resolved.contains("carroll-alice.txt.gz"));
    let ckpt = run_dir.join("checkpoints");
    let names: Vec<String> = std::fs::read_dir(&ckpt).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.is_empty() && names.iter().all(|n| n.starts_with("step-")), "{names:?}");
}

#[test]
fn same_seed_gives_the_same_losses_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), &alice(), "");
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        let out = run(&["pretrain", cfg.to_str().unwrap(), "--set", &format!("run.name={name}"), "--output-dir", "runs"], dir.path());
        assert!(out.status.success(), "{}", text(&out));
        runs.push(dir.path().join("runs").join(name));
    }
    let (a, b) = (train_losses(&runs[0]), train_losses(&runs[1]));
    assert_eq!(a.len(), 12);
    assert_eq!(a, b, "losses differ between identical runs");
    let w = |r: &Path| std::fs::read(r.join("checkpoints/step-00000012/model.safetensors")).unwrap();
    assert!(w(&runs[0]) == w(&runs[1]), "weights differ between identical runs");
    // A different seed gives a different run.
    let out = run(&["pretrain", cfg.to_str().unwrap(), "--set", "run.name=c", "--set", "run.seed=12", "--output-dir", "runs"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(train_losses(&dir.path().join("runs/c")), a);
}

#[test]
fn resume_continues_exactly_like_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), &alice(), "decay_steps = 12");
    let cfg = cfg.to_str().unwrap();
    let full = run(&["pretrain", cfg, "--set", "run.name=full", "--output-dir", "runs"], dir.path());
    assert!(full.status.success(), "{}", text(&full));
    // Stop after 8 steps (checkpoint at 8), then resume to 12 with the same schedule.
    let part = run(&["pretrain", cfg, "--set", "run.name=part", "--set", "train.max_steps=8", "--output-dir", "runs"], dir.path());
    assert!(part.status.success(), "{}", text(&part));
    // A resume that would change the model's shape is refused and leaves the run as it was.
    let config_before = std::fs::read(dir.path().join("runs/part/config.toml")).unwrap();
    assert_fails_with(&["pretrain", "--resume", "runs/part", "--set", "model.intermediate_size=128"], dir.path(), &["model.intermediate_size", "cannot change it to 128"]);
    assert!(std::fs::read(dir.path().join("runs/part/config.toml")).unwrap() == config_before);
    let resumed = run(&["pretrain", "--resume", "runs/part", "--set", "train.max_steps=12"], dir.path());
    assert!(resumed.status.success(), "{}", text(&resumed));
    let (f, p) = (dir.path().join("runs/full"), dir.path().join("runs/part"));
    assert_eq!(train_losses(&f), train_losses(&p));
    let w = |r: &Path| std::fs::read(r.join("checkpoints/step-00000012/model.safetensors")).unwrap();
    assert!(w(&f) == w(&p), "final weights differ after resume");
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), &alice(), "decay_steps = 12");
    let out = run(&["pretrain", cfg.to_str().unwrap(), "--set", "train.max_steps=8", "--output-dir", "runs"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let newest = dir.path().join("runs/t/checkpoints/step-00000008/model.safetensors");
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&newest).unwrap().set_len(len / 2).unwrap();
    let out = run(&["pretrain", "--resume", "runs/t", "--set", "train.max_steps=12"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("skipping damaged checkpoint") && msg.contains("step-00000008"), "{msg}");
    let steps: Vec<u64> = train_losses(&dir.path().join("runs/t")).iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>(), "resumed from step 4 and logged each step once");
}

#[test]
fn gradient_accumulation_consumes_all_micro_batches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), &alice(), "grad_accum = 3");
    let out = run(&["pretrain", cfg.to_str().unwrap(), "--set", "train.max_steps=4", "--output-dir", "runs"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.path().join("runs/t/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 4);
    assert_eq!(summary["examples_seen"], 4 * 3 * 8);
    assert_eq!(summary["tokens_seen"], 4 * 3 * 8 * 32);
}

#[test]
fn expect_loss_drop_fails_a_run_that_did_not_learn() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), &alice(), "");
    let out = run(&["pretrain", cfg.to_str().unwrap(), "--set", "train.max_steps=1", "--expect-loss-drop", "0.5", "--output-dir", "runs"], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("less than the expected 50.0%"), "{}", text(&out));
    assert_fails_with(&["pretrain", cfg.to_str().unwrap(), "--expect-loss-drop", "1.5"], dir.path(), &["--expect-loss-drop 1.5", "fraction"]);
}

#[test]
fn existing_runs_are_not_overwritten_silently() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), &alice(), "");
    let args = ["pretrain", cfg.to_str().unwrap(), "--set", "train.max_steps=2", "--output-dir", "runs"];
    assert!(run(&args, dir.path()).status.success());
    let again = run(&args, dir.path());
    assert!(!again.status.success());
    assert!(text(&again).contains("--resume"), "{}", text(&again));
    let mut forced = args.to_vec();
    forced.push("--overwrite");
    assert!(run(&forced, dir.path()).status.success());
}

fn assert_fails_with(args: &[&str], cwd: &Path, needles: &[&str]) {
    let out = run(args, cwd);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!msg.contains("panicked"), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "expected {n:?} in: {msg}");
    }
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = tiny_config(d, &alice(), "warmpu_steps = 3");
    assert_fails_with(&["pretrain", cfg.to_str().unwrap()], d, &["tiny.toml", "unknown field `warmpu_steps`"]);
    let cfg = tiny_config(d, &alice(), "").to_str().unwrap().to_string();
    assert_fails_with(&["pretrain", &cfg, "--set", "train.batch_size=0"], d, &["tiny.toml", "train.batch_size"]);
    assert_fails_with(&["pretrain", &cfg, "--set", "train.lr=\"fast\""], d, &["tiny.toml", "lr"]);
    assert_fails_with(&["pretrain", &cfg, "--set", "model.num_attention_heads=3"], d, &["model.num_attention_heads", "does not divide"]);
    assert_fails_with(&["pretrain", &cfg, "--set", "data.seq_len=64"], d, &["data.seq_len", "max_position_embeddings"]);
    // An image objective on a text config: the image schema rejects the text keys.
    assert_fails_with(&["pretrain", &cfg, "--set", "objective.type=\"simclr\""], d, &["tiny.toml", "unknown field `seq_len`"]);
    assert_fails_with(&["pretrain", "nope.toml"], d, &["cannot read config file nope.toml"]);
    std::fs::write(d.join("broken.toml"), "[run\nname = 1").unwrap();
    assert_fails_with(&["pretrain", "broken.toml"], d, &["broken.toml", "line 1"]);
}

#[test]
fn bad_corpora_give_clear_errors_or_counted_skips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = tiny_config(d, &d.join("missing"), "");
    assert_fails_with(&["pretrain", cfg.to_str().unwrap()], d, &["missing", "does not exist"]);
    std::fs::create_dir(d.join("empty")).unwrap();
    let cfg = tiny_config(d, &d.join("empty"), "");
    assert_fails_with(&["pretrain", cfg.to_str().unwrap()], d, &["empty", "is empty"]);

    // Invalid UTF-8 is dropped and counted; the run goes on.
    let corpus = d.join("mixed");
    std::fs::create_dir(&corpus).unwrap();
    let good = std::process::Command::new("gzip").arg("-dc").arg(alice()).output().unwrap().stdout;
    std::fs::write(corpus.join("alice.txt"), &good).unwrap();
    std::fs::write(corpus.join("bad.txt"), b"caf\xe9 au lait \xff\xfe and more words\n").unwrap();
    let cfg = tiny_config(d, &corpus, "");
    let out = run(&["pretrain", cfg.to_str().unwrap(), "--set", "train.max_steps=2", "--output-dir", "runs"], d);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&std::fs::read(d.join("runs/t/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["corpus"]["invalid_utf8_documents"], 1);
    assert_eq!(summary["corpus"]["files_read"], 2);
}

#[test]
fn tokenizer_train_writes_a_loadable_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("tok.json");
    let out = run(&["tokenizer", "train", "--input", alice().to_str().unwrap(), "--vocab-size", "500", "--out", out_path.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    // A config may use it instead of training one.
    let cfg = tiny_config(dir.path(), &alice(), "");
    let out = run(&["pretrain", cfg.to_str().unwrap(), "--set", &format!("tokenizer.path=\"{}\"", out_path.display()), "--set", "train.max_steps=1", "--output-dir", "runs"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.path().join("runs/t/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["corpus"]["vocab_size"], 500);
}

#[test]
fn help_lists_the_commands() {
    let out = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["pretrain", "finetune", "embed", "export", "tokenizer"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = bin().args(["pretrain", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--set", "--resume", "--backend", "--expect-loss-drop", "--output-dir"] {
        assert!(help.contains(flag), "{help}");
    }
}

fn hf_fixture() -> PathBuf {
    repo().join("crates/autodidact-models/tests/fixtures/hf-bert-tiny")
}

/// Reads f32 or i64 tensors of a safetensors file as f64.
fn tensor(st: &safetensors::SafeTensors<'_>, name: &str) -> Vec<f64> {
    let view = st.tensor(name).unwrap();
    match view.dtype() {
        safetensors::Dtype::F32 => view.data().chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect(),
        _ => view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
    }
}

#[test]
fn export_writes_a_verified_huggingface_directory() {
    use autodidact_models::bert::{BertForMaskedLM, BertInput};
    use autodidact_models::hf;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = tiny_config(d, &alice(), "");
    assert!(run(&["pretrain", cfg.to_str().unwrap(), "--set", "train.max_steps=4", "--output-dir", "runs"], d).status.success());
    let out = run(&["export", "runs/t", "--out", "hf", "--parity-sample", "sample.safetensors"], d);
    assert!(out.status.success(), "{}", text(&out));
    for f in ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        assert!(d.join("hf").join(f).is_file(), "missing {f}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let weights = std::fs::read(d.join("hf/model.safetensors")).unwrap();
    let names = safetensors::SafeTensors::deserialize(&weights).unwrap().names().into_iter().map(str::to_string).collect::<Vec<_>>();
    for n in ["bert.encoder.layer.0.attention.self.query.weight", "bert.embeddings.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias", "cls.predictions.bias"] {
        assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
    }

    // The directory, imported as `init_from` would, gives the logits recorded in the sample.
    let device = burn::tensor::Device::flex();
    let config = hf::read_config(&d.join("hf")).unwrap();
    let (model, _) = hf::load_weights(BertForMaskedLM::init(&config, &device), &d.join("hf/model.safetensors")).unwrap();
    let bytes = std::fs::read(d.join("sample.safetensors")).unwrap();
    let sample = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = sample.tensor("input_ids").unwrap().shape().to_vec();
    let ints = |n: &str| tensor(&sample, n).into_iter().map(|v| v as u32).collect::<Vec<_>>();
    let mask: Vec<u8> = ints("attention_mask").into_iter().map(|v| v as u8).collect();
    assert!(mask.contains(&0), "the sample has padding");
    let input = BertInput::from_host(&ints("input_ids"), &ints("token_type_ids"), &mask, shape[0], shape[1], &device);
    let logits = model.forward(input).into_data().try_to_vec::<f32>().unwrap();
    let expected = tensor(&sample, "logits");
    let diff = logits.iter().zip(&expected).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
    assert!(diff < 1e-5, "re-imported logits differ by {diff}");

    // An existing directory is kept unless --overwrite; the bare encoder has root names.
    let again = run(&["export", "runs/t", "--out", "hf", "--encoder-only"], d);
    assert!(!again.status.success() && text(&again).contains("--overwrite"), "{}", text(&again));
    let forced = run(&["export", "runs/t", "--out", "hf", "--encoder-only", "--overwrite"], d);
    assert!(forced.status.success(), "{}", text(&forced));
    let weights = std::fs::read(d.join("hf/model.safetensors")).unwrap();
    assert!(safetensors::SafeTensors::deserialize(&weights).unwrap().names().iter().all(|n| n.starts_with("embeddings.") || n.starts_with("encoder.")));
    assert_fails_with(&["export", "runs/none", "--out", "x"], d, &["runs/none"]);

    // Runs without model_config.json (older runs) resolve the model from config.toml, to the
    // same export.
    assert!(run(&["export", "runs/t", "--out", "hf-a"], d).status.success());
    std::fs::remove_file(d.join("runs/t/model_config.json")).unwrap();
    let older = run(&["export", "runs/t", "--out", "hf-b"], d);
    assert!(older.status.success(), "{}", text(&older));
    for f in ["config.json", "model.safetensors"] {
        assert!(std::fs::read(d.join("hf-a").join(f)).unwrap() == std::fs::read(d.join("hf-b").join(f)).unwrap(), "{f} differs");
    }
}

#[test]
fn init_from_continues_pretraining_a_transformers_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(&["pretrain", repo().join("configs/continue-hf-bert.toml").to_str().unwrap(), "--set", "train.max_steps=20", "--set", "train.eval_every=10", "--output-dir", "runs"], d);
    assert!(out.status.success(), "{}", text(&out));
    let s0: Value = serde_json::from_slice(&std::fs::read(d.join("runs/continue-hf-bert/summary.json")).unwrap()).unwrap();
    assert_eq!(s0["init_from"]["report"]["architecture"], "BertForMaskedLM");
    assert_eq!(s0["init_from"]["report"]["loaded"], 42);
    assert_eq!(s0["corpus"]["vocab_size"], 136, "the checkpoint's tokenizer is used");
    assert!(s0["eval_loss_drop"].as_f64().unwrap() > 0.0, "{s0}");

    // The architecture and the tokenizer come from the checkpoint, not from the config.
    let cfg = tiny_config(d, &alice(), "");
    let init = format!("model.init_from=\"{}\"", hf_fixture().display());
    assert_fails_with(&["pretrain", cfg.to_str().unwrap(), "--set", &init], d, &["model.hidden_size", "init_from"]);
    let cfg = repo().join("configs/continue-hf-bert.toml");
    let cfg = cfg.to_str().unwrap();
    assert_fails_with(&["pretrain", cfg, "--set", "tokenizer.vocab_size=100"], d, &["[tokenizer]", "init_from"]);
    assert_fails_with(&["pretrain", cfg, "--set", "model.init_from=\"/nonexistent\""], d, &["model.init_from", "/nonexistent/config.json"]);
    assert_fails_with(&["pretrain", cfg, "--set", "data.seq_len=64"], d, &["data.seq_len", "max_position_embeddings (40)"]);

    // Fine-tuning starts from a transformers checkpoint too (its vocab.txt/tokenizer.json).
    let ft = finetune_config(d, &hf_fixture(), "");
    let out = run(&["finetune", ft.to_str().unwrap(), "--output-dir", "runs", "--set", "train.max_steps=5"], d);
    assert!(out.status.success(), "{}", text(&out));
    let s = summary(&d.join("runs/ft"));
    assert_eq!(s["init_from"]["format"], "huggingface");
    assert_eq!(s["init_from"]["report"]["loaded"], 42);
}

/// Three classes of short texts told apart by their vocabulary, as class folders.
fn labeled_folders(root: &Path) -> PathBuf {
    let topics = [("animals", ["cat", "dog", "rabbit", "bird"]), ("food", ["bread", "soup", "apple", "cheese"]), ("weather", ["rain", "wind", "snow", "storm"])];
    for (class, words) in topics {
        std::fs::create_dir_all(root.join("labeled").join(class)).unwrap();
        for i in 0..24 {
            let text = format!("the {} and the {} were there on day {i}, said alice to the {}", words[i % 4], words[(i + 1) % 4], words[(i + 2) % 4]);
            std::fs::write(root.join("labeled").join(class).join(format!("{i:03}.txt")), text).unwrap();
        }
    }
    root.join("labeled")
}

fn finetune_config(dir: &Path, init_from: &Path, extra_model: &str) -> PathBuf {
    let cfg = format!(
        r#"
[run]
name = "ft"
seed = 3

[data]
path = "{}"
validation_fraction = 0.15
test_fraction = 0.25
max_seq_len = 32

[model]
init_from = "{}"
{extra_model}

[train]
batch_size = 8
max_steps = 60
lr = 3e-3
warmup_steps = 5
eval_every = 10
early_stopping_patience = 3
"#,
        labeled_folders(dir).display(),
        init_from.display()
    );
    let path = dir.join("ft.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn summary(run_dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn finetune_trains_a_classifier_and_reports_test_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = tiny_config(d, &alice(), "");
    assert!(run(&["pretrain", cfg.to_str().unwrap(), "--output-dir", "runs"], d).status.success());

    let ft = finetune_config(d, &d.join("runs/t"), "");
    // An empty text is skipped, counted and named in the summary.
    std::fs::write(d.join("labeled/food/zzz-empty.txt"), "  \n").unwrap();
    let out = run(&["finetune", ft.to_str().unwrap(), "--output-dir", "runs"], d);
    assert!(out.status.success(), "{}", text(&out));
    let s = summary(&d.join("runs/ft"));
    let empty = &s["skipped"]["data"]["empty text"];
    assert!(empty["count"] == 1 && empty["first"].as_str().unwrap().contains("zzz-empty.txt"), "{s}");
    assert_eq!(s["classes"], serde_json::json!(["animals", "food", "weather"]));
    assert_eq!(s["examples"]["test"], 18);
    assert_eq!(s["init_from"]["encoder"], "model.bert");
    let acc = s["test"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.6, "test accuracy {acc} (chance 0.33): {s}");
    let cm = &s["test"]["confusion_matrix"];
    assert_eq!(cm.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum::<u64>(), 18);
    assert!(d.join("runs/ft/checkpoints/best/manifest.json").exists(), "the best model is kept");

    // Few labels, from scratch, and a linear probe (with kNN) all run and report.
    let few = run(&["finetune", ft.to_str().unwrap(), "--output-dir", "runs", "--set", "run.name=\"few\"", "--set", "data.label_fraction=0.1", "--set", "model.random_init=true"], d);
    assert!(few.status.success(), "{}", text(&few));
    let s = summary(&d.join("runs/few"));
    assert_eq!(s["examples"]["train_per_class"], serde_json::json!([1, 1, 1]));
    assert_eq!(s["init_from"]["random_init"], true);
    let probe = run(&["finetune", ft.to_str().unwrap(), "--output-dir", "runs", "--set", "run.name=\"probe\"", "--set", "model.freeze_encoder=true", "--set", "model.pooling=\"mean\""], d);
    assert!(probe.status.success(), "{}", text(&probe));
    let s = summary(&d.join("runs/probe"));
    assert!(s["test"]["knn_accuracy"].as_f64().is_some(), "{s}");

    // A fine-tuned run is a model directory like any other: embed from it.
    std::fs::write(d.join("texts.txt"), "the cat and the dog\nhot soup and bread\nthe cat and the dog\n").unwrap();
    let out = run(&["embed", "runs/ft", "texts.txt", "--out", "emb.safetensors", "-q"], d);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read(d.join("emb.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("embeddings").unwrap().shape(), [3, 32]);
    let e = tensor(&st, "embeddings");
    assert_eq!(e[..32], e[64..], "identical texts, identical embeddings, in input order");
    assert_ne!(e[..32], e[32..64]);
    let out = run(&["embed", "runs/t", "texts.txt", "--out", "emb.npy", "--pooling", "cls", "-q"], d);
    assert!(out.status.success(), "{}", text(&out));
    let npy = std::fs::read(d.join("emb.npy")).unwrap();
    assert!(npy.starts_with(b"\x93NUMPY") && String::from_utf8_lossy(&npy[..128]).contains("'shape': (3, 32"), "{}", String::from_utf8_lossy(&npy[..128]));
}

#[test]
fn finetune_and_embed_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = tiny_config(d, &alice(), "");
    assert!(run(&["pretrain", cfg.to_str().unwrap(), "--set", "train.max_steps=2", "--output-dir", "runs"], d).status.success());
    let ft = finetune_config(d, &d.join("runs/t"), "");
    let ft = ft.to_str().unwrap();
    assert_fails_with(&["finetune", ft, "--set", "data.validation_fraction=0.7"], d, &["ft.toml", "data.validation_fraction + data.test_fraction"]);
    assert_fails_with(&["finetune", ft, "--set", "data.label_fraction=0"], d, &["ft.toml", "data.label_fraction"]);
    assert_fails_with(&["finetune", ft, "--set", "data.max_seq_len=64"], d, &["data.max_seq_len", "max_position_embeddings"]);
    assert_fails_with(&["finetune", ft, "--set", "model.init_from=\"nowhere\""], d, &["model.init_from", "nowhere"]);
    assert_fails_with(&["finetune", ft, "--set", "data.labels=\"x\""], d, &["ft.toml", "unknown field `labels`"]);
    // A class too small for the requested splits is named.
    std::fs::create_dir_all(d.join("labeled/rare")).unwrap();
    std::fs::write(d.join("labeled/rare/1.txt"), "one lonely example").unwrap();
    assert_fails_with(&["finetune", ft], d, &["class \"rare\" has 1 example(s)"]);
    assert_fails_with(&["embed", "runs/t", "missing.txt", "--out", "e.npy"], d, &["missing.txt"]);
}

#[test]
fn simcse_continues_an_mlm_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = tiny_config(d, &alice(), "");
    assert!(run(&["pretrain", cfg.to_str().unwrap(), "--output-dir", "runs"], d).status.success());
    let simcse = format!(
        "[run]\nname = \"s\"\n[data]\npath = \"{}\"\nseq_len = 16\n[model]\ninit_from = \"runs/t\"\n[objective]\ntype = \"simcse\"\n[train]\nbatch_size = 16\nmax_steps = 10\nlr = 1e-4\neval_every = 5\neval_batches = 2\n",
        alice().display()
    );
    std::fs::write(d.join("simcse.toml"), simcse).unwrap();
    let out = run(&["pretrain", "simcse.toml", "--output-dir", "runs"], d);
    assert!(out.status.success(), "{}", text(&out));
    let s = summary(&d.join("runs/s"));
    assert_eq!(s["objective"], "simcse");
    assert_eq!(s["init_from"]["encoder"], "model.bert");
    assert!(s["final_eval"]["eval_retrieval_accuracy"].as_f64().is_some(), "{s}");
    assert!(s["unigram_baseline"].is_null());
    // Dropout is SimCSE's augmentation: without it the config is refused.
    assert_fails_with(&["pretrain", "simcse.toml", "--set", "model.hidden_dropout_prob=0.0", "--set", "model.attention_probs_dropout_prob=0.0"], d, &["simcse", "dropout"]);
    // Crop views need no dropout; each step sees twice the batch in rows.
    let crops = ["--set", "run.name=\"c\"", "--set", "objective.views=\"crops\"", "--set", "model.hidden_dropout_prob=0.0", "--set", "model.attention_probs_dropout_prob=0.0"];
    let out = run(&[&["pretrain", "simcse.toml", "--output-dir", "runs"][..], &crops[..]].concat(), d);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("regions of 60 tokens"), "{}", text(&out));
    let s = summary(&d.join("runs/c"));
    assert_eq!(s["examples_seen"], 2 * 16 * 10, "{s}");
    assert!(s["final_eval"]["eval_retrieval_accuracy"].as_f64().is_some(), "{s}");
    assert_fails_with(&[&["pretrain", "simcse.toml"][..], &crops[..], &["--set", "objective.crop_region=8"]].concat(), d, &["objective.crop_region", "shorter than one crop"]);
}

/// Writes an IDX image file (and its labels) of `n` 16×16 images in four classes: stripes
/// at four orientations with a random phase and noise, so that classes are learnable from
/// pixels and from augmentation-invariant features alike.
fn stripes_idx(dir: &Path, name: &str, n: usize, seed: u64) -> (PathBuf, PathBuf) {
    let side = 16usize;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, side as u8, 0, 0, 0, side as u8];
    images[4..8].copy_from_slice(&(n as u32).to_be_bytes());
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    for i in 0..n {
        let class = i % 4;
        let phase = next() * std::f64::consts::TAU;
        for y in 0..side {
            for x in 0..side {
                let t = match class {
                    0 => y as f64,
                    1 => x as f64,
                    2 => (x + y) as f64 * 0.7,
                    _ => (x as f64 - y as f64) * 0.7,
                };
                let v = 0.5 + 0.4 * (t * 1.2 + phase).sin() + 0.1 * (next() - 0.5);
                images.push((v.clamp(0.0, 1.0) * 255.0) as u8);
            }
        }
        labels.push(class as u8);
    }
    let (img, lab) = (dir.join(format!("{name}-images.idx")), dir.join(format!("{name}-labels.idx")));
    std::fs::write(&img, images).unwrap();
    std::fs::write(&lab, labels).unwrap();
    (img, lab)
}

/// `--set` arguments pointing a smoke config at generated stripes.
fn stripes_args(dir: &Path) -> Vec<String> {
    let (train, train_labels) = stripes_idx(dir, "train", 256, 1);
    let (test, test_labels) = stripes_idx(dir, "test", 64, 2);
    let mut args = Vec::new();
    for (k, p) in [("path", train), ("labels", train_labels), ("test_path", test), ("test_labels", test_labels)] {
        args.push("--set".to_string());
        args.push(format!("data.{k}=\"{}\"", p.display()));
    }
    args
}

fn vision_run(config: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["pretrain".into(), repo().join("configs").join(config).display().to_string(), "--output-dir".into(), "runs".into()];
    args.extend(stripes_args(dir));
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&args.iter().map(String::as_str).collect::<Vec<_>>(), dir)
}

#[test]
fn simclr_smoke_learns_evaluates_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // With kNN and the linear probe every epoch during training too (243 training images in
    // batches of 32: 7 steps an epoch), which must not change the training itself: the
    // resumed run below, without them, ends with the same weights.
    let out = vision_run("smoke-simclr.toml", d, &["--set", "train.max_steps=16", "--set", "train.batch_size=32", "--set", "train.eval_every=8", "--set", "train.checkpoint_every=8", "--set", "train.log_every=1", "--set", "run.name=full", "--set", "eval.every_epochs=1"]);
    assert!(out.status.success(), "{}", text(&out));
    let periodic: Vec<u64> = metrics(&d.join("runs/full")).iter().filter(|m| m.get("frozen_knn_accuracy").is_some() && m.get("frozen_linear_probe_accuracy").is_some()).map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(periodic, vec![7, 14]);
    let s = summary(&d.join("runs/full"));
    assert_eq!(s["objective"], "simclr");
    assert!(s["eval_loss_drop"].as_f64().unwrap() > 0.0, "{s}");
    let e = &s["frozen_eval"];
    assert_eq!((e["train_images"].as_u64(), e["test_images"].as_u64()), (Some(256), Some(64)));
    for k in ["knn_accuracy", "linear_probe_accuracy"] {
        let acc = e[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{k} {acc}");
    }
    // kNN on pixels separates the stripes (neighbours share orientation and phase); a linear
    // probe on pixels cannot (a random phase averages every pixel out): the evaluation works.
    let pixels = run(&["eval", "runs/full", "--features", "pixels"], d);
    assert!(pixels.status.success(), "{}", text(&pixels));
    let p: Value = serde_json::from_slice(&std::fs::read(d.join("runs/full/eval-pixels.json")).unwrap()).unwrap();
    assert!(p["frozen_eval"]["knn_accuracy"].as_f64().unwrap() > 0.9, "{p}");
    // `eval` of the checkpoint reproduces the figures written at the end of training, and
    // `--against` pairs them with the pixels' on the same test images: the discordant counts
    // account for the whole difference in accuracy.
    let ckpt = run(&["eval", "runs/full", "--against", "pixels"], d);
    assert!(ckpt.status.success(), "{}", text(&ckpt));
    let c: Value = serde_json::from_slice(&std::fs::read(d.join("runs/full/eval-checkpoint.json")).unwrap()).unwrap();
    assert_eq!(c["frozen_eval"]["knn_accuracy"], e["knn_accuracy"]);
    let paired = &c["paired"];
    assert_eq!(paired["against_frozen_eval"]["knn_accuracy"], p["frozen_eval"]["knn_accuracy"], "{paired}");
    for (test, acc) in [("knn", "knn_accuracy"), ("linear_probe", "linear_probe_accuracy")] {
        let t = &paired[test];
        let count = |k: &str| t[k].as_u64().unwrap() as f64;
        let gap = c["frozen_eval"][acc].as_f64().unwrap() - paired["against_frozen_eval"][acc].as_f64().unwrap();
        assert!(((count("only_this_right") - count("only_against_right")) / 64.0 - gap).abs() < 1e-9, "{paired}");
        assert!((0.0..=1.0).contains(&t["p_value"].as_f64().unwrap()), "{paired}");
    }
    assert_fails_with(&["eval", "runs/full", "--features", "pixels", "--against", "pixels"], d, &["--against pixels"]);
    assert!(run(&["eval", "runs/full", "--features", "random"], d).status.success());
    // Stopped at step 8 and resumed: the same losses and weights as the uninterrupted run.
    let part = vision_run("smoke-simclr.toml", d, &["--set", "train.max_steps=8", "--set", "train.decay_steps=16", "--set", "train.batch_size=32", "--set", "train.eval_every=8", "--set", "train.checkpoint_every=8", "--set", "train.log_every=1", "--set", "run.name=part"]);
    assert!(part.status.success(), "{}", text(&part));
    let resumed = run(&["pretrain", "--resume", "runs/part", "--set", "train.max_steps=16"], d);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(train_losses(&d.join("runs/full")), train_losses(&d.join("runs/part")));
    let w = |r: &str| std::fs::read(d.join(r).join("checkpoints/step-00000016/model.safetensors")).unwrap();
    assert!(w("runs/full") == w("runs/part"), "weights differ after resume");
}

#[test]
fn mae_smoke_learns() {
    let dir = tempfile::tempdir().unwrap();
    let out = vision_run("smoke-mae.toml", dir.path(), &["--set", "train.max_steps=20", "--set", "train.batch_size=32", "--set", "train.eval_every=10", "--expect-loss-drop", "0.05"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = summary(&dir.path().join("runs/smoke-mae"));
    assert_eq!(s["objective"], "mae");
    assert!(s["frozen_eval"]["linear_probe_accuracy"].as_f64().is_some(), "{s}");
    // `eval --set` changes evaluation settings only, and the report records them.
    let d = dir.path();
    let mean = run(&["eval", "runs/smoke-mae", "--set", "model.pool=\"mean\"", "--set", "eval.knn_k=5"], d);
    assert!(mean.status.success(), "{}", text(&mean));
    let m: Value = serde_json::from_slice(&std::fs::read(d.join("runs/smoke-mae/eval-checkpoint.json")).unwrap()).unwrap();
    assert_eq!(m["overrides"], serde_json::json!(["model.pool=\"mean\"", "eval.knn_k=5"]), "{m}");
    assert_eq!(m["frozen_eval"]["knn_k"], 5, "{m}");
    assert_fails_with(&["eval", "runs/smoke-mae", "--set", "train.lr=1"], d, &["train.lr", "evaluation settings"]);
    assert_fails_with(&["eval", "runs/smoke-mae", "--set", "model.pool=\"max\""], d, &["model", "max"]);
}

#[test]
fn bad_image_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, _) = stripes_idx(d, "x", 8, 3);
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(d.join("short.idx"), &bytes[..bytes.len() - 100]).unwrap();
    let cfg = repo().join("configs/smoke-simclr.toml");
    let cfg = cfg.to_str().unwrap();
    let short = format!("data.path=\"{}\"", d.join("short.idx").display());
    assert_fails_with(&["pretrain", cfg, "--set", &short, "--output-dir", "runs"], d, &["short.idx", "bytes"]);
    std::fs::create_dir(d.join("empty")).unwrap();
    let empty = format!("data.path=\"{}\"", d.join("empty").display());
    // The smoke config names a labels file, which a folder of images cannot use.
    assert_fails_with(&["pretrain", cfg, "--set", &empty, "--output-dir", "runs"], d, &["empty", "a labels file applies only to IDX images"]);
    let mae = repo().join("configs/smoke-mae.toml");
    assert_fails_with(&["pretrain", mae.to_str().unwrap(), "--set", "model.arch=\"resnet\"", "--output-dir", "runs"], d, &["smoke-mae.toml", "model"]);
    assert_fails_with(&["pretrain", cfg, "--set", "objective.temperature=0", "--output-dir", "runs"], d, &["objective.temperature"]);
    assert_fails_with(&["eval", "nowhere"], d, &["nowhere", "not a run directory"]);
}

// ---------------------------------------------------------------------------------------
// Crashes and signals: SIGKILL at random steps, SIGTERM, a disk that fills.

/// Seed of the random kill points: `AUTODIDACT_KILL_SEED` to replay a failure, else the clock.
fn kill_seed() -> u64 {
    std::env::var("AUTODIDACT_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    })
}

/// The highest step of a training line in `metrics.jsonl` (0 when none yet; a torn last
/// line, as a kill leaves, is ignored).
fn last_logged_step(run_dir: &Path) -> u64 {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|m| m.get("loss").is_some()).filter_map(|m| m["step"].as_u64()).max().unwrap_or(0)
}

fn hidden_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect()
}

/// Starts `args`, waits until step `at` has been logged, then stops the process with
/// `signal` (`None`: SIGKILL). Returns the exit status, or `None` when the run finished first.
fn interrupt_at(args: &[String], cwd: &Path, run_dir: &Path, at: u64, signal: Option<&str>) -> Option<std::process::ExitStatus> {
    let mut child = bin().args(args).current_dir(cwd).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("start autodidact");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(status.success(), "exited before step {at}: {err}");
            return None;
        }
        if last_logged_step(run_dir) >= at {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    match signal {
        None => child.kill().unwrap(),
        Some(sig) => assert!(Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap().success()),
    }
    let out = child.wait_with_output().unwrap();
    if signal.is_some() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains("interrupted") && err.contains("--resume"), "{err}");
    }
    Some(out.status)
}

/// Runs `start` to completion as run `full`; then as run `chain`, stopped once with
/// `graceful` (`INT` or `TERM`) and killed with SIGKILL at three random steps, resumed after each. The chain must end
/// with the same per-step losses and byte-identical final weights, and leave no debris.
fn crash_and_resume_matches_an_uninterrupted_run(start: &[String], cwd: &Path, max_steps: u64, graceful: &str) {
    let seed = kill_seed();
    let mut rng = seed;
    let mut next_step = |after: u64| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let room = (max_steps - 1).saturating_sub(after).max(1);
        (after + 1 + (rng >> 33) % room).min(max_steps - 1)
    };
    let with_name = |name: &str| {
        let mut a = start.to_vec();
        a.extend(["--set".to_string(), format!("run.name=\"{name}\"")]);
        a
    };
    let full = run(&with_name("full").iter().map(String::as_str).collect::<Vec<_>>(), cwd);
    assert!(full.status.success(), "{}", text(&full));
    let chain_dir = cwd.join("runs/chain");
    let resume: Vec<String> = ["pretrain", "--resume", "runs/chain"].iter().map(|s| s.to_string()).collect();
    let mut kills = Vec::new();
    // The graceful stop first, in the first half, so that it cannot land after training has
    // ended; then SIGKILL anywhere.
    for (i, signal) in [Some(graceful), None, None, None].into_iter().enumerate() {
        let at = if signal.is_some() { next_step(0).min(max_steps / 2) } else { next_step(last_logged_step(&chain_dir)) };
        let args = if i == 0 { with_name("chain") } else { resume.clone() };
        if interrupt_at(&args, cwd, &chain_dir, at, signal).is_none() {
            break;
        }
        kills.push(at);
        if signal.is_some() {
            // A graceful stop checkpoints the step it stopped after.
            let newest = std::fs::read_dir(chain_dir.join("checkpoints")).unwrap().filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_prefix("step-").and_then(|s| s.parse::<u64>().ok())).max();
            assert_eq!(newest, Some(last_logged_step(&chain_dir)), "seed {seed}");
        }
    }
    let done = run(&resume.iter().map(String::as_str).collect::<Vec<_>>(), cwd);
    assert!(done.status.success(), "seed {seed}, kills at {kills:?}: {}", text(&done));
    assert!(kills.len() >= 2, "seed {seed}: the run finished before it could be interrupted ({kills:?})");
    assert_eq!(train_losses(&cwd.join("runs/full")), train_losses(&chain_dir), "seed {seed}, kills at {kills:?}");
    let w = |r: &str| std::fs::read(cwd.join(r).join(format!("checkpoints/step-{max_steps:08}/model.safetensors"))).unwrap();
    assert!(w("runs/full") == w("runs/chain"), "seed {seed}, kills at {kills:?}: final weights differ");
    assert_eq!(hidden_entries(&chain_dir), Vec::<String>::new());
    assert_eq!(hidden_entries(&chain_dir.join("checkpoints")), Vec::<String>::new());
}

#[test]
fn mlm_killed_at_random_steps_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = ["pretrain", repo().join("configs/smoke-mlm.toml").to_str().unwrap(), "--output-dir", "runs"]
        .iter()
        .map(|s| s.to_string())
        .chain(["train.max_steps=60", "train.checkpoint_every=7", "train.eval_every=20", "train.log_every=1"].iter().flat_map(|kv| ["--set".to_string(), kv.to_string()]))
        .collect();
    crash_and_resume_matches_an_uninterrupted_run(&args, dir.path(), 60, "INT");
}

#[test]
fn simclr_killed_at_random_steps_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut args: Vec<String> = ["pretrain", repo().join("configs/smoke-simclr.toml").to_str().unwrap(), "--output-dir", "runs"].iter().map(|s| s.to_string()).collect();
    args.extend(stripes_args(d));
    for kv in ["train.max_steps=24", "train.batch_size=32", "train.checkpoint_every=5", "train.eval_every=12", "train.log_every=1"] {
        args.extend(["--set".to_string(), kv.to_string()]);
    }
    crash_and_resume_matches_an_uninterrupted_run(&args, d, 24, "TERM");
}

#[test]
fn a_second_signal_exits_at_once_and_the_run_still_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = repo().join("configs/smoke-mlm.toml");
    // Big batches make a step last seconds, so both signals land inside one step
    // (standard signals sent back to back would merge into one).
    let sets = ["train.batch_size=1024", "train.max_steps=4", "train.warmup_steps=1", "train.log_every=1", "train.checkpoint_every=1"];
    let mut args = vec!["pretrain".to_string(), cfg.display().to_string(), "--output-dir".into(), "runs".into()];
    args.extend(sets.iter().flat_map(|kv| ["--set".to_string(), kv.to_string()]));
    let mut child = bin().args(&args).current_dir(d).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let run_dir = d.join("runs/smoke-mlm");
    while last_logged_step(&run_dir) < 1 {
        assert!(child.try_wait().unwrap().is_none(), "finished before the signals");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(Command::new("sh").args(["-c", &format!("kill -INT {pid}; sleep 0.1; kill -INT {pid}")]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let resumed = run(&["pretrain", "--resume", "runs/smoke-mlm"], d);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let steps: Vec<u64> = train_losses(&run_dir).iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, (1..=4).collect::<Vec<_>>());
}

#[test]
fn a_disk_that_fills_during_a_checkpoint_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = tiny_config(d, &alice(), "decay_steps = 12");
    let cfg = cfg.to_str().unwrap();
    let full = run(&["pretrain", cfg, "--set", "run.name=full", "--output-dir", "runs"], d);
    assert!(full.status.success(), "{}", text(&full));
    let part = run(&["pretrain", cfg, "--set", "run.name=part", "--set", "train.max_steps=8", "--output-dir", "runs"], d);
    assert!(part.status.success(), "{}", text(&part));
    // The next checkpoint's weights file is too big for the file-size limit: writes fail
    // with EFBIG as on a full disk (SIGXFSZ ignored, as the shell passes it on to exec).
    let ckpt = d.join("runs/part/checkpoints");
    let model_bytes = std::fs::metadata(ckpt.join("step-00000008/model.safetensors")).unwrap().len();
    let limit_kb = model_bytes / 2 / 1024;
    assert!(std::fs::metadata(d.join("runs/part/tokenizer.json")).unwrap().len() < limit_kb * 1024, "the limit must leave room for the run's small files");
    let full_disk = Command::new("bash")
        .args(["-c", &format!("trap '' XFSZ; ulimit -f {limit_kb}; exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_autodidact"), "pretrain", "--resume", "runs/part", "--set", "train.max_steps=12"])
        .current_dir(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&full_disk.stderr).into_owned();
    assert_eq!(full_disk.status.code(), Some(1), "{err}");
    assert!(err.contains("checkpoint") && err.contains("step-00000012") && !err.contains("panicked"), "{err}");
    let names: Vec<String> = std::fs::read_dir(&ckpt).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["step-00000004", "step-00000008"], "no partial checkpoint is left");
    // With space again, the run resumes from step 8 and ends as if nothing had happened.
    let resumed = run(&["pretrain", "--resume", "runs/part", "--set", "train.max_steps=12"], d);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(train_losses(&d.join("runs/full")), train_losses(&d.join("runs/part")));
    let w = |r: &str| std::fs::read(d.join(r).join("checkpoints/step-00000012/model.safetensors")).unwrap();
    assert!(w("runs/full") == w("runs/part"), "final weights differ");
}

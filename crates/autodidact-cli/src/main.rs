//! `autodidact`: self-supervised pretraining of compact specialist models.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use autodidact_train::TrainError;
use clap::{Args, Parser, Subcommand};

use autodidact_cli::config::Backend;
use autodidact_cli::{config, embed, export, finetune, pretrain, vision};

/// Pretrain compact specialist encoders on unlabeled data with self-supervised objectives.
#[derive(Parser)]
#[command(name = "autodidact", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain a model from a TOML config (see configs/ and the README's config reference).
    Pretrain(PretrainCli),
    /// Fine-tune a classifier (or a linear probe) on labeled text from a TOML config.
    Finetune(FinetuneCli),
    /// Write one embedding per input text from a trained encoder.
    Embed(EmbedCli),
    /// Frozen-feature evaluation (kNN, linear probe) of an image run or of a baseline.
    Eval(EvalCli),
    /// Export a run's checkpoint as a HuggingFace model directory.
    Export(ExportCli),
    /// Tokenizer utilities.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
}

/// Options of every command that creates a run directory.
#[derive(Args)]
struct RunOptions {
    /// Override a config key, e.g. `--set train.lr=3e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Parent directory of the run directory (default: run.output_dir, else ./runs).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Compute backend (default: run.backend from the config, else flex).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Replace an existing run directory of the same name.
    #[arg(long)]
    overwrite: bool,
    /// Hide the progress bar.
    #[arg(long, short)]
    quiet: bool,
}

impl RunOptions {
    fn progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

#[derive(Args)]
struct FinetuneCli {
    /// The config file (see configs/finetune-*.toml and the README).
    config: PathBuf,
    #[command(flatten)]
    run: RunOptions,
}

#[derive(Args)]
struct EvalCli {
    /// An image pretraining run directory (its config.toml names the data).
    run_dir: PathBuf,
    /// What to evaluate: the newest valid checkpoint, or a baseline on the same data.
    #[arg(long, value_enum, default_value = "checkpoint")]
    features: vision::EvalSubject,
    /// Also score this subject on the same test images and compare the two with McNemar's
    /// paired test (e.g. `--against pixels`).
    #[arg(long, value_enum, value_name = "FEATURES")]
    against: Option<vision::EvalSubject>,
    /// Change an evaluation setting of the run's config for this evaluation only, e.g.
    /// `--set eval.knn_k=200` or `--set 'model.pool="mean"'` (repeatable; `eval.*` and
    /// `model.pool` only). The report records the changes.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "flex")]
    backend: Backend,
}

#[derive(Args)]
struct EmbedCli {
    /// A run directory (pretraining or fine-tuning) or a HuggingFace BERT directory.
    model_dir: PathBuf,
    /// Texts: a .txt file (one text per line) or a .jsonl file (one object per line).
    input: PathBuf,
    /// Output file (.safetensors with tensor `embeddings`, or .npy).
    #[arg(long)]
    out: PathBuf,
    /// Output format (default: from the extension).
    #[arg(long, value_enum)]
    format: Option<embed::EmbedFormat>,
    /// How token vectors become one vector.
    #[arg(long, value_enum, default_value = "mean")]
    pooling: PoolingArg,
    /// JSON field holding the text in .jsonl input.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Truncate texts to this many tokens (default: the encoder's maximum).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Hide the progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PoolingArg {
    /// The [CLS] vector.
    Cls,
    /// The mean over real tokens.
    Mean,
}

#[derive(Args)]
struct ExportCli {
    /// The run directory (as written by `pretrain`).
    run_dir: PathBuf,
    /// Output format: `hf` writes config.json, model.safetensors (transformers' names and
    /// layout), tokenizer.json, vocab.txt (WordPiece), tokenizer_config.json and
    /// special_tokens_map.json.
    #[arg(long, value_enum, default_value = "hf")]
    format: ExportFormat,
    /// The model directory to write.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Export the bare encoder (`BertModel`) without the MLM head.
    #[arg(long)]
    encoder_only: bool,
    /// Export this checkpoint directory of the run instead of the newest valid one.
    #[arg(long, value_name = "CHECKPOINT_DIR")]
    checkpoint: Option<PathBuf>,
    /// Replace DIR if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Also write sample inputs and this model's outputs on them to FILE (safetensors), for
    /// `scripts/reference/hf_export_check.py`.
    #[arg(long, value_name = "FILE")]
    parity_sample: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// HuggingFace transformers (BertForMaskedLM / BertModel).
    Hf,
}

#[derive(Args)]
struct PretrainCli {
    /// The config file. Optional with --resume (the run's own config.toml is used).
    config: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its newest valid checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    #[command(flatten)]
    run: RunOptions,
    /// Exit with status 3 unless the held-out loss fell by at least this fraction
    /// (e.g. 0.2 = 20%) between the first and the last evaluation: a CI guard.
    #[arg(long, value_name = "FRACTION")]
    expect_loss_drop: Option<f64>,
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Train a WordPiece or BPE tokenizer on a corpus and write tokenizer.json.
    Train(TokenizerTrainCli),
}

#[derive(Args)]
struct TokenizerTrainCli {
    /// Corpus: a file or a directory of .txt/.jsonl files (optionally .gz).
    #[arg(long)]
    input: PathBuf,
    /// Where to write tokenizer.json.
    #[arg(long)]
    out: PathBuf,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 8192)]
    vocab_size: usize,
    /// Subword model.
    #[arg(long, value_enum, default_value = "wordpiece")]
    kind: KindArg,
    /// Keep case (WordPiece lowercases by default).
    #[arg(long)]
    cased: bool,
    /// Minimum frequency of a merge.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// JSON field holding the text in .jsonl files.
    #[arg(long, default_value = "text")]
    text_field: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Wordpiece,
    Bpe,
}

/// Exit status when `--expect-loss-drop` is not met.
const EXIT_DID_NOT_LEARN: u8 = 3;
/// Exit status when SIGINT or SIGTERM stopped training after writing a checkpoint.
const EXIT_INTERRUPTED: u8 = 4;

fn main() -> ExitCode {
    autodidact_core::alloc::retain_freed_memory();
    let cli = Cli::parse();
    let resumable = matches!(cli.command, Command::Pretrain(_));
    match run(cli) {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<TrainError>() {
            Some(TrainError::Interrupted { step, checkpoint }) => {
                let run_dir = checkpoint.parent().and_then(std::path::Path::parent).unwrap_or(checkpoint);
                eprintln!("interrupted: stopped after step {step} and wrote {}", checkpoint.display());
                if resumable {
                    eprintln!("continue with: autodidact pretrain --resume {}", run_dir.display());
                } else {
                    eprintln!("fine-tuning runs do not resume yet: run the command again (with --overwrite)");
                }
                ExitCode::from(EXIT_INTERRUPTED)
            }
            _ => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Pretrain(args) => pretrain(args),
        Command::Finetune(args) => finetune(args),
        Command::Embed(args) => embed(args),
        Command::Eval(args) => eval(args),
        Command::Export(args) => export(args),
        Command::Tokenizer(TokenizerCommand::Train(args)) => tokenizer_train(args),
    }
}

fn export(args: ExportCli) -> Result<ExitCode> {
    let ExportFormat::Hf = args.format;
    let export_args = export::ExportArgs {
        run_dir: args.run_dir,
        checkpoint: args.checkpoint,
        out: args.out,
        encoder_only: args.encoder_only,
        overwrite: args.overwrite,
        parity_sample: args.parity_sample,
    };
    let checkpoint = export::run(&export_args)?;
    let class = if export_args.encoder_only { "BertModel" } else { "BertForMaskedLM" };
    println!("exported {} as {class} to {} (verified by reading it back)", checkpoint.display(), export_args.out.display());
    if let Some(sample) = &export_args.parity_sample {
        println!("parity sample  {}", sample.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(args: EvalCli) -> Result<ExitCode> {
    let r = vision::eval(&args.run_dir, args.features, args.against, &args.set, args.backend)?;
    print_frozen_eval(r["subject"].as_str().unwrap_or_default(), &r["frozen_eval"]);
    let p = &r["paired"];
    if p.is_object() {
        print_frozen_eval(p["against"].as_str().unwrap_or_default(), &p["against_frozen_eval"]);
        for (name, t) in [("kNN", &p["knn"]), ("linear probe", &p["linear_probe"])] {
            println!(
                "paired {name:<13} test images right only with {}: {}, only with {}: {}; p = {:.2e} (McNemar, exact)",
                r["subject"].as_str().unwrap_or_default(),
                t["only_this_right"],
                p["against"].as_str().unwrap_or_default(),
                t["only_against_right"],
                t["p_value"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    println!("written        {}/eval-{}.json", args.run_dir.display(), r["subject"].as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// One line of frozen-feature accuracies, labelled with what was scored.
fn print_frozen_eval(label: &str, e: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    if e.is_object() {
        println!(
            "{label:<16} kNN (k = {}) {:.2}%   linear probe {:.2}%   ({} train / {} test images, {} features)",
            e["knn_k"],
            100.0 * f(&e["knn_accuracy"]),
            100.0 * f(&e["linear_probe_accuracy"]),
            e["train_images"],
            e["test_images"],
            e["feature_dim"]
        );
    }
}

fn vision_pretrain(args: &PretrainCli, path: &std::path::Path) -> Result<ExitCode> {
    let config = config::load_vision(path, &args.run.set)?;
    let run_dir = match &args.resume {
        Some(dir) => {
            config::check_resume(dir, &config)?;
            dir.clone()
        }
        None => {
            let run_dir = config.run.run_dir(args.run.output_dir.as_deref());
            claim_run_dir(&run_dir, args.run.overwrite, true)?;
            run_dir
        }
    };
    let backend = args.run.backend.unwrap_or(config.run.backend);
    let r = vision::run(&config, &run_dir, args.resume.is_some(), backend, args.run.progress())?;
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    println!("run            {}", r["run_dir"].as_str().unwrap_or_default());
    println!("steps          {}  ({:.1} epochs, {} images, {:.1} images/s, {:.1} s)", r["steps"], f(&r["epochs"]), r["images_seen"], f(&r["images_per_s"]), f(&r["wall_time_s"]));
    println!("held-out loss  {:.4} -> {:.4}  ({:.1}% lower)", f(&r["initial_eval_loss"]), f(&r["final_eval"]["eval_loss"]), 100.0 * f(&r["eval_loss_drop"]));
    print_frozen_eval("frozen features", &r["frozen_eval"]);
    println!("summary        {}/summary.json", r["run_dir"].as_str().unwrap_or_default());
    Ok(exit_for_loss_drop(&r, args.expect_loss_drop))
}

/// `--expect-loss-drop`: exit status 3 when the held-out loss did not fall enough.
fn exit_for_loss_drop(report: &serde_json::Value, expected: Option<f64>) -> ExitCode {
    if let Some(expected) = expected {
        let drop = report["eval_loss_drop"].as_f64().unwrap_or(f64::NAN);
        if drop.is_nan() || drop < expected {
            eprintln!("error: held-out loss fell by {:.1}%, less than the expected {:.1}%", drop * 100.0, expected * 100.0);
            return ExitCode::from(EXIT_DID_NOT_LEARN);
        }
    }
    ExitCode::SUCCESS
}

fn pretrain(args: PretrainCli) -> Result<ExitCode> {
    if let Some(f) = args.expect_loss_drop
        && !(0.0..1.0).contains(&f)
    {
        bail!("--expect-loss-drop {f}: must be a fraction in [0, 1)");
    }
    let config_path = match (&args.resume, &args.config) {
        (_, Some(path)) => path.clone(),
        (Some(run_dir), None) => run_dir.join("config.toml"),
        (None, None) => bail!("give a CONFIG file, or --resume RUN_DIR"),
    };
    if config::is_vision(&config_path, &args.run.set)? {
        return vision_pretrain(&args, &config_path);
    }
    let (config, run_dir) = match (&args.resume, &args.config) {
        (Some(run_dir), config) => {
            let path = config.clone().unwrap_or_else(|| run_dir.join("config.toml"));
            let loaded = config::load(&path, &args.run.set)?;
            config::check_resume(run_dir, &loaded)?;
            (loaded, run_dir.clone())
        }
        (None, Some(path)) => {
            let config = config::load(path, &args.run.set)?;
            let run_dir = config.run_dir(args.run.output_dir.as_deref());
            claim_run_dir(&run_dir, args.run.overwrite, true)?;
            (config, run_dir)
        }
        (None, None) => bail!("give a CONFIG file, or --resume RUN_DIR"),
    };
    let backend = args.run.backend.unwrap_or(config.run.backend);
    let report = pretrain::run(pretrain::PretrainArgs {
        config,
        run_dir,
        resume: args.resume.is_some(),
        backend,
        progress: args.run.progress(),
    })?;
    print_summary(&report);
    Ok(exit_for_loss_drop(&report, args.expect_loss_drop))
}

/// Refuses to reuse a directory that holds a run unless `overwrite` (then empties it).
fn claim_run_dir(run_dir: &std::path::Path, overwrite: bool, resumable: bool) -> Result<()> {
    if run_dir.join("checkpoints").exists() || run_dir.join("summary.json").exists() {
        if !overwrite {
            let resume = if resumable { format!("use --resume {} to continue it, ", run_dir.display()) } else { String::new() };
            bail!("run directory {} already holds a run: {resume}--overwrite to replace it, or --set run.name=NEW", run_dir.display());
        }
        std::fs::remove_dir_all(run_dir).with_context(|| format!("cannot remove {}", run_dir.display()))?;
    }
    Ok(())
}

fn finetune(args: FinetuneCli) -> Result<ExitCode> {
    let config = config::load_finetune(&args.config, &args.run.set)?;
    let run_dir = config.run.run_dir(args.run.output_dir.as_deref());
    claim_run_dir(&run_dir, args.run.overwrite, false)?;
    let backend = args.run.backend.unwrap_or(config.run.backend);
    let r = finetune::run(&config, &run_dir, backend, args.run.progress())?;
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    println!("run            {}", r["run_dir"].as_str().unwrap_or_default());
    println!("mode           {}, {} training examples ({}% of the labels)", r["mode"].as_str().unwrap_or_default(), r["examples"]["train"], 100.0 * f(&r["label_fraction"]));
    println!("steps          {} ({:.1} epochs, {:.1} s), best validation at step {}{}", r["steps"], f(&r["epochs"]), f(&r["wall_time_s"]), r["best_step"], if r["stopped_early"] == true { ", stopped early" } else { "" });
    println!("test           accuracy {:.2}%  macro-F1 {:.4}  ({} examples)", 100.0 * f(&r["test"]["accuracy"]), f(&r["test"]["macro_f1"]), r["test"]["examples"]);
    if let Some(knn) = r["test"]["knn_accuracy"].as_f64() {
        println!("kNN            accuracy {:.2}% (k = {}, frozen features)", 100.0 * knn, r["test"]["knn_k"]);
    }
    println!("summary        {}/summary.json", r["run_dir"].as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

fn embed(args: EmbedCli) -> Result<ExitCode> {
    let pooling = match args.pooling {
        PoolingArg::Cls => autodidact_models::bert::Pooling::Cls,
        PoolingArg::Mean => autodidact_models::bert::Pooling::Mean,
    };
    let embed_args = embed::EmbedArgs {
        model_dir: args.model_dir,
        input: args.input,
        text_field: args.text_field,
        out: args.out,
        format: args.format,
        pooling,
        batch_size: args.batch_size,
        max_seq_len: args.max_seq_len,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    let (n, dim) = embed::run(&embed_args)?;
    println!("wrote {n} embeddings of dimension {dim} to {}", embed_args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn print_summary(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let eval = &r["final_eval"];
    println!("run            {}", r["run_dir"].as_str().unwrap_or_default());
    println!("steps          {}  ({} tokens, {:.0} tokens/s, {:.1} s)", r["steps"], r["tokens_seen"], f(&r["tokens_per_s"]), f(&r["wall_time_s"]));
    println!("held-out loss  {:.4} -> {:.4}  ({:.1}% lower)", f(&r["initial_eval_loss"]), f(&eval["eval_loss"]), 100.0 * f(&r["eval_loss_drop"]));
    if r["unigram_baseline"].is_object() {
        println!(
            "masked-token accuracy  {:.2}%  (unigram baseline {:.2}%)   perplexity {:.1} (unigram {:.1})",
            100.0 * f(&eval["eval_accuracy"]),
            100.0 * f(&r["unigram_baseline"]["eval_accuracy"]),
            f(&eval["eval_perplexity"]),
            f(&r["unigram_baseline"]["eval_loss"]).exp()
        );
        println!(
            "  at replaced tokens    {:.2}%  (unigram baseline {:.2}%)   what the model infers from context",
            100.0 * f(&eval["eval_context_accuracy"]),
            100.0 * f(&r["unigram_baseline"]["eval_context_accuracy"]),
        );
    }
    if let Some(acc) = eval["eval_retrieval_accuracy"].as_f64() {
        println!("in-batch retrieval accuracy  {:.2}% (held-out, views without dropout)", 100.0 * acc);
    }
    println!("summary        {}/summary.json", r["run_dir"].as_str().unwrap_or_default());
}

fn tokenizer_train(args: TokenizerTrainCli) -> Result<ExitCode> {
    use autodidact_data::source::{TextFormat, TextSource};
    use autodidact_data::tokenizer::{TextTokenizer, TokenizerKind, TokenizerTrainSpec};
    let source = TextSource::open(&args.input, TextFormat::Auto, &args.text_field)?;
    let kind = match args.kind {
        KindArg::Wordpiece => TokenizerKind::WordPiece,
        KindArg::Bpe => TokenizerKind::Bpe,
    };
    let spec = TokenizerTrainSpec { kind, vocab_size: args.vocab_size, lowercase: !args.cased, min_frequency: args.min_frequency };
    let (tokenizer, stats) = TextTokenizer::train(&source, &spec)?;
    tokenizer.save(&args.out)?;
    println!(
        "wrote {} (vocab {}) from {} document(s), {} bytes; {} file(s) skipped, {} with invalid UTF-8",
        args.out.display(),
        tokenizer.vocab_size(),
        stats.documents,
        stats.bytes,
        stats.files_skipped.len(),
        stats.invalid_utf8_documents
    );
    Ok(ExitCode::SUCCESS)
}

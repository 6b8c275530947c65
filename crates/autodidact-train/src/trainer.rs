//! The training loop. One function, read top to bottom:
//! batch → forward → loss → backward → accumulate → clip → optimizer → schedule → log →
//! evaluate → checkpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use autodidact_core::objective::{BatchSize, BatchStream, Objective};
use autodidact_core::seed::{Stream, derive_seed};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::checkpoint::{Checkpoints, TrainState};
use crate::error::{Result, TrainError};
use crate::metrics::MetricsLog;
use crate::optim::build_optimizer;
use crate::params::{clip_global_norm, with_stable_ids};
use crate::schedule::LrSchedule;
use crate::signals::StopOnSignal;

/// AdamW settings (Loshchilov & Hutter 2019). Biases and LayerNorm parameters get no weight
/// decay, as in BERT and HF `transformers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWSettings {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay for matrices and embeddings.
    pub weight_decay: f64,
}

/// A validated training configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Run seed: initialization, data order, masking and dropout all derive from it.
    pub seed: u64,
    /// Optimizer steps to run.
    pub max_steps: u64,
    /// Micro-batches per optimizer step.
    pub grad_accum: u64,
    /// Optimizer.
    pub adamw: AdamWSettings,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f64>,
    /// Log a training line every this many steps.
    pub log_every: u64,
    /// Evaluate every this many steps (0 = only at the start and the end).
    pub eval_every: u64,
    /// Checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Stop when an evaluation metric has not improved for some evaluations, and keep the
    /// best model (returned, and written to `checkpoints/best/`).
    pub early_stopping: Option<EarlyStopping>,
    /// Checkpoints to keep.
    pub keep_last: usize,
    /// Batches prepared ahead of the trainer by the data thread.
    pub prefetch: usize,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// What a NaN or infinite loss or gradient norm does to the run.
    pub on_nonfinite: NonFinitePolicy,
    /// With [`NonFinitePolicy::Skip`]: stop with an error once more steps than this were
    /// skipped in the whole run.
    pub max_skipped_steps: u64,
    /// Stop gracefully on SIGINT / SIGTERM: finish the step, write a checkpoint, return
    /// [`TrainError::Interrupted`] (see [`crate::signals`]). For programs, not tests.
    pub handle_signals: bool,
}

/// What a step whose loss or gradient norm is NaN or infinite does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinitePolicy {
    /// Stop with [`TrainError::NonFinite`] naming the step; the checkpoints on disk are the
    /// last good ones.
    #[default]
    Stop,
    /// Leave the weights and optimizer untouched for that step, count it
    /// (`skipped_steps` in the summary, a `skipped` line in `metrics.jsonl`) and go on.
    Skip,
}

/// Early stopping on an evaluation metric.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    /// The metric as logged (`eval_loss`, `eval_accuracy`, ...). Losses and perplexities are
    /// minimized, everything else maximized.
    pub metric: String,
    /// Evaluations without improvement before stopping.
    pub patience: u64,
}

impl EarlyStopping {
    /// The metric as a score to maximize (missing: worst).
    fn score(&self, eval: &BTreeMap<String, f64>) -> f64 {
        let v = eval.get(&self.metric).copied().unwrap_or(f64::NAN);
        let lower_is_better = self.metric.contains("loss") || self.metric.contains("perplexity");
        let score = if lower_is_better { -v } else { v };
        if score.is_nan() { f64::NEG_INFINITY } else { score }
    }
}

/// Paths of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The run directory.
    pub root: PathBuf,
}

impl RunDir {
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(self.root.join("checkpoints"))
    }
}

/// What a finished run reports (the trainer's part of `summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Objective name.
    pub objective: String,
    /// Steps completed.
    pub steps: u64,
    /// Examples consumed.
    pub examples_seen: u64,
    /// Tokens consumed.
    pub tokens_seen: u64,
    /// Wall time of training in seconds (all sessions of a resumed run).
    pub wall_time_s: f64,
    /// Tokens per second over the whole run.
    pub tokens_per_s: f64,
    /// Examples per second over the whole run.
    pub examples_per_s: f64,
    /// Fraction of step time spent waiting for data (this session).
    pub data_wait_fraction: f64,
    /// Evaluation loss before training.
    pub initial_eval_loss: Option<f64>,
    /// Final evaluation: `eval_loss`, `eval_accuracy`, ...
    pub final_eval: BTreeMap<String, f64>,
    /// Relative fall of the evaluation loss: `1 - final / initial`.
    pub eval_loss_drop: Option<f64>,
    /// Training loss per step of this session, for determinism checks.
    pub loss_history: Vec<f64>,
    /// Parameters in the objective.
    pub num_params: usize,
    /// Checkpoint written last.
    pub last_checkpoint: Option<PathBuf>,
    /// With early stopping: the step of the best evaluation, whose model is returned.
    pub best_step: Option<u64>,
    /// With early stopping: the best evaluation.
    pub best_eval: Option<BTreeMap<String, f64>>,
    /// True when early stopping ended the run before `max_steps`.
    pub stopped_early: bool,
    /// Steps skipped for a non-finite loss or gradient (whole run).
    pub skipped_steps: u64,
}

/// Prepares a model for training: stable parameter ids (so saved optimizer state matches
/// it in any process) and initialization forced in a fixed order under the run seed.
pub fn prepare_model<M: Module>(model: M, seed: u64, device: &Device) -> M {
    device.seed(derive_seed(seed, Stream::Init, 0));
    with_stable_ids(model)
}

/// An evaluation of the model during training: named figures, or a message.
pub type EvalFn<'a, O> = Box<dyn FnMut(&O) -> std::result::Result<BTreeMap<String, f64>, String> + 'a>;

/// An evaluation the trainer runs every `every` steps besides its own held-out loss (e.g.
/// kNN and linear-probe accuracy of frozen features). Its figures go to `metrics.jsonl` on
/// the evaluation line of that step; it must not change the objective (training after it is
/// bit-identical to training without it).
pub struct PeriodicEval<'a, O> {
    /// Steps between evaluations (not at the last step: the caller evaluates the final model).
    pub every: u64,
    /// The evaluation: named figures, or a message.
    pub run: EvalFn<'a, O>,
}

/// Runs (or resumes) training.
///
/// `objective` must be built on `device` (an autodiff device) and passed through
/// [`prepare_model`]. When `resume` is true, the newest valid checkpoint of `run` is
/// loaded, `metrics.jsonl` is cut back to it, and training continues bit-for-bit as if it
/// had never stopped.
///
/// # Errors
/// I/O failures in the run directory, a non-finite loss or gradient, a dead data thread.
pub fn train<O, S>(objective: O, stream: S, device: &Device, run: &RunDir, cfg: &TrainConfig, resume: bool) -> Result<(O, TrainSummary)>
where
    O: Objective,
    S: BatchStream<Batch = O::Batch>,
{
    train_with(objective, stream, device, run, cfg, resume, None)
}

/// [`train`] with a [`PeriodicEval`].
///
/// # Errors
/// As [`train`], and a failed periodic evaluation.
pub fn train_with<O, S>(mut objective: O, mut stream: S, device: &Device, run: &RunDir, cfg: &TrainConfig, resume: bool, mut periodic: Option<PeriodicEval<'_, O>>) -> Result<(O, TrainSummary)>
where
    O: Objective,
    S: BatchStream<Batch = O::Batch>,
{
    let checkpoints = run.checkpoints();
    // What a process killed while writing left behind: partial checkpoints, temporary files.
    for dir in [run.root.clone(), checkpoints.dir().to_path_buf()] {
        for note in autodidact_core::fsutil::recover_interrupted_writes(&dir).map_err(|e| TrainError::io(&dir, e))? {
            eprintln!("note: {note}");
        }
    }
    let signals = if cfg.handle_signals { Some(StopOnSignal::install().map_err(|e| TrainError::io("signal handlers", e))?) } else { None };
    let mut optimizer = build_optimizer(&cfg.adamw);
    let mut state = TrainState::default();
    let mut last_checkpoint = None;
    if resume {
        let (latest, warnings) = checkpoints.latest_valid();
        for w in warnings {
            eprintln!("warning: {w}");
        }
        if let Some(ckpt) = latest {
            let (m, o, s) = crate::checkpoint::load(&ckpt.path, objective, optimizer)?;
            (objective, optimizer, state) = (m, o, s);
            last_checkpoint = Some(ckpt.path);
        }
    }
    // Resuming without any checkpoint starts over, log included.
    let mut log = MetricsLog::open(&run.metrics(), resume.then_some(state.step).filter(|&s| s > 0))?;
    let eval_batches = stream.eval_batches().map_err(TrainError::Data)?;
    let inner = device.clone().inner();

    // The data thread produces micro-batches in order, starting at the resume position.
    let first_micro = state.step * cfg.grad_accum;
    let (tx, rx) = sync_channel(cfg.prefetch.max(1));
    let producer = std::thread::spawn(move || {
        let mut k = first_micro;
        loop {
            let batch = stream.train_batch(k);
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                break;
            }
            k += 1;
        }
    });

    let bar = progress_bar(cfg, state.step);
    let session_start = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut wait = Duration::ZERO;
    let mut window = Window::default();
    let mut loss_history = Vec::new();

    if state.step == 0 {
        let eval = evaluate(&objective, &eval_batches, &inner);
        state.initial_eval_loss = eval.get("eval_loss").copied();
        log_eval(&mut log, 0, &eval)?;
        state.last_eval = eval;
    }
    let mut best: Option<Best<O>> = None;
    let mut stopped_early = false;

    while state.step < cfg.max_steps {
        let step = state.step;
        let step_start = Instant::now();
        device.seed(derive_seed(cfg.seed, Stream::Model, step));
        let mut accumulator = GradientsAccumulator::<O>::new();
        let mut loss_sum = 0.0;
        for micro in 0..cfg.grad_accum {
            let t = Instant::now();
            let batch = recv(&rx, step * cfg.grad_accum + micro)?;
            wait += t.elapsed();
            let out = objective.forward(&batch, device);
            let loss = if cfg.grad_accum > 1 { out.loss / cfg.grad_accum as f64 } else { out.loss };
            let value = f64::from(loss.clone().into_scalar::<f32>());
            loss_sum += value;
            let grads = GradientsParams::from_grads(loss.backward(), &objective);
            accumulator.accumulate(&objective, grads);
            state.examples_seen += batch.examples() as u64;
            state.tokens_seen += batch.tokens() as u64;
            window.examples += batch.examples() as u64;
            window.tokens += batch.tokens() as u64;
        }
        let mut grads = accumulator.grads();
        let grad_norm = if loss_sum.is_finite() { clip_global_norm(&objective, &mut grads, cfg.clip_grad_norm) } else { f64::NAN };
        let lr = cfg.schedule.lr(step);
        let fault = if !loss_sum.is_finite() {
            Some(("loss", loss_sum))
        } else {
            (!grad_norm.is_finite()).then_some(("gradient norm", grad_norm))
        };
        if let Some((what, value)) = fault {
            let fault = TrainError::NonFinite { what, value, step: step + 1 };
            if cfg.on_nonfinite == NonFinitePolicy::Stop {
                return Err(fault);
            }
            state.skipped_steps += 1;
            if state.skipped_steps > cfg.max_skipped_steps {
                return Err(TrainError::TooManySkipped { skipped: state.skipped_steps, step: step + 1 });
            }
            bar.println(format!("warning: non-finite {what} ({value}) at step {}: step skipped ({} so far)", step + 1, state.skipped_steps));
            let mut rec = Map::new();
            rec.insert("step".into(), json!(step + 1));
            rec.insert("skipped".into(), json!(format!("non-finite {what}")));
            log.write(&rec)?;
        } else {
            objective = optimizer.step(lr, objective, grads);
            window.add(loss_sum, step_start.elapsed());
        }
        state.step += 1;
        loss_history.push(loss_sum);
        bar.set_position(state.step);
        bar.set_message(format!("loss {loss_sum:.4}  lr {lr:.2e}  {:.0} tok/s", window.tokens_per_s()));

        let mut last = state.step == cfg.max_steps;
        if state.step % cfg.log_every.max(1) == 0 || last {
            let mut rec = Map::new();
            rec.insert("step".into(), json!(state.step));
            rec.insert("loss".into(), json!(window.mean_loss()));
            rec.insert("lr".into(), json!(lr));
            rec.insert("grad_norm".into(), json!(grad_norm));
            rec.insert("tokens_per_s".into(), json!(window.tokens_per_s()));
            rec.insert("examples_per_s".into(), json!(window.examples_per_s()));
            rec.insert("elapsed_s".into(), json!(elapsed_before + session_start.elapsed().as_secs_f64()));
            log.write(&rec)?;
            window = Window::default();
        }
        if (cfg.eval_every > 0 && state.step % cfg.eval_every == 0) || last {
            let eval = evaluate(&objective, &eval_batches, &inner);
            log_eval(&mut log, state.step, &eval)?;
            bar.println(format!("step {:>6}  {}", state.step, format_eval(&eval)));
            if let Some(stopping) = &cfg.early_stopping {
                let score = stopping.score(&eval);
                match &mut best {
                    Some(b) if score <= b.score => {
                        b.evals_since += 1;
                        if b.evals_since >= stopping.patience && !last {
                            bar.println(format!("early stop at step {}: {} has not improved on step {}'s in {} evaluations", state.step, stopping.metric, b.step, stopping.patience));
                            stopped_early = true;
                            last = true;
                        }
                    }
                    _ => best = Some(Best { score, step: state.step, eval: eval.clone(), model: objective.clone(), evals_since: 0 }),
                }
            }
            state.last_eval = eval;
        }
        if let Some(p) = periodic.as_mut().filter(|p| p.every > 0 && state.step % p.every == 0 && !last) {
            let figures = (p.run)(&objective).map_err(|message| TrainError::Evaluation { step: state.step, message })?;
            log_eval(&mut log, state.step, &figures)?;
            bar.println(format!("step {:>6}  {}", state.step, format_eval(&figures)));
        }
        let interrupted = signals.as_ref().is_some_and(StopOnSignal::requested) && !last;
        if (cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0) || last || interrupted {
            state.elapsed_s = elapsed_before + session_start.elapsed().as_secs_f64();
            last_checkpoint = Some(checkpoints.save(&objective, &optimizer, &state, cfg.keep_last)?);
        }
        if interrupted {
            bar.finish_and_clear();
            let checkpoint = last_checkpoint.unwrap_or_default();
            return Err(TrainError::Interrupted { step: state.step, checkpoint });
        }
        if stopped_early {
            break;
        }
    }
    bar.finish_and_clear();
    drop(rx);
    let _ = producer.join();
    let (mut best_step, mut best_eval) = (None, None);
    if let Some(b) = best {
        let best_state = TrainState { step: b.step, last_eval: b.eval.clone(), ..state.clone() };
        checkpoints.save_best(&b.model, &optimizer, &best_state)?;
        (best_step, best_eval) = (Some(b.step), Some(b.eval));
        objective = b.model;
    }

    state.elapsed_s = elapsed_before + session_start.elapsed().as_secs_f64();
    let session = session_start.elapsed().as_secs_f64().max(1e-9);
    let final_loss = state.last_eval.get("eval_loss").copied();
    let summary = TrainSummary {
        objective: objective.name().to_string(),
        steps: state.step,
        examples_seen: state.examples_seen,
        tokens_seen: state.tokens_seen,
        wall_time_s: state.elapsed_s,
        tokens_per_s: state.tokens_seen as f64 / state.elapsed_s.max(1e-9),
        examples_per_s: state.examples_seen as f64 / state.elapsed_s.max(1e-9),
        data_wait_fraction: wait.as_secs_f64() / session,
        initial_eval_loss: state.initial_eval_loss,
        eval_loss_drop: match (state.initial_eval_loss, final_loss) {
            (Some(a), Some(b)) if a > 0.0 => Some(1.0 - b / a),
            _ => None,
        },
        final_eval: state.last_eval.clone(),
        loss_history,
        num_params: objective.num_params(),
        last_checkpoint,
        best_step,
        best_eval,
        stopped_early,
        skipped_steps: state.skipped_steps,
    };
    Ok((objective, summary))
}

/// The best model so far of a run with early stopping.
struct Best<O> {
    score: f64,
    step: u64,
    eval: BTreeMap<String, f64>,
    model: O,
    evals_since: u64,
}

fn recv<B>(rx: &Receiver<std::result::Result<B, String>>, k: u64) -> Result<B> {
    rx.recv().map_err(|_| TrainError::DataPipeline(k))?.map_err(TrainError::Data)
}

/// Scores the fixed evaluation batches without dropout or autodiff.
///
/// Returns `eval_loss` (target-weighted mean), `eval_<metric>` for each metric (a mean over
/// the targets it counts; absent when it counted none) and the objective's derived figures
/// (e.g. `eval_perplexity`).
pub fn evaluate<O: Objective>(objective: &O, batches: &[O::Batch], inner: &Device) -> BTreeMap<String, f64> {
    // Randomness inside an objective (MAE's patch masks) is the same at every evaluation;
    // training steps reseed the device themselves.
    inner.seed(derive_seed(0, Stream::Eval, 0));
    let model = objective.valid();
    let mut loss = 0.0;
    let mut targets = 0usize;
    let mut sums: BTreeMap<&'static str, (f64, usize)> = BTreeMap::new();
    for batch in batches {
        let out = model.forward(batch, inner);
        loss += f64::from(out.loss.into_scalar::<f32>()) * out.targets as f64;
        targets += out.targets;
        for m in out.metrics {
            let (sum, count) = sums.entry(m.name).or_default();
            *sum += f64::from(m.sum.into_scalar::<f32>());
            *count += m.count;
        }
    }
    let mut eval = BTreeMap::new();
    if targets == 0 {
        return eval;
    }
    let mean_loss = loss / targets as f64;
    eval.insert("eval_loss".to_string(), mean_loss);
    for (name, (sum, count)) in sums {
        if count > 0 {
            eval.insert(format!("eval_{name}"), sum / count as f64);
        }
    }
    for (name, value) in objective.derived_metrics(mean_loss) {
        eval.insert(format!("eval_{name}"), value);
    }
    eval
}

fn log_eval(log: &mut MetricsLog, step: u64, eval: &BTreeMap<String, f64>) -> Result<()> {
    let mut rec = Map::new();
    rec.insert("step".into(), json!(step));
    for (k, v) in eval {
        rec.insert(k.clone(), Value::from(*v));
    }
    log.write(&rec)
}

fn format_eval(eval: &BTreeMap<String, f64>) -> String {
    eval.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join("  ")
}

fn progress_bar(cfg: &TrainConfig, start: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(cfg.max_steps), if cfg.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len}  {msg}  ETA {eta}") {
        bar.set_style(style);
    }
    bar.set_position(start);
    bar
}

/// Running averages between two log lines.
#[derive(Default)]
struct Window {
    loss: f64,
    steps: u64,
    examples: u64,
    tokens: u64,
    time: Duration,
}

impl Window {
    fn add(&mut self, loss: f64, time: Duration) {
        self.loss += loss;
        self.steps += 1;
        self.time += time;
    }
    /// NaN (written as `null`) when every step of the window was skipped.
    fn mean_loss(&self) -> f64 {
        if self.steps == 0 { f64::NAN } else { self.loss / self.steps as f64 }
    }
    fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.time.as_secs_f64().max(1e-9)
    }
    fn examples_per_s(&self) -> f64 {
        self.examples as f64 / self.time.as_secs_f64().max(1e-9)
    }
}

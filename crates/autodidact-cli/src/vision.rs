//! Image pretraining (`pretrain` with `objective.type = "simclr" | "mae"`) and the
//! frozen-feature evaluation (`eval`): kNN and a linear probe on a labeled test set.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use autodidact_core::batch::ImageBatch;
use autodidact_core::eval::{accuracy, confusion_matrix, knn_predict, mcnemar};
use autodidact_core::objective::Objective;
use autodidact_data::augment::{Augment, CropSpec, ImageBatches, channel_stats, labeled_batches};
use autodidact_data::images::ImageSet;
use autodidact_models::heads::{ImageEncoderConfig, ProjectionHead};
use autodidact_models::mae::Mae;
use autodidact_objectives::image::{ImageFeatures, images_tensor};
use autodidact_objectives::mae::MaskedAutoencoder;
use autodidact_objectives::simclr::SimClr;
use autodidact_train::checkpoint;
use autodidact_train::probe::{ProbeConfig, linear_probe};
use autodidact_train::trainer::{PeriodicEval, RunDir, TrainSummary, prepare_model, train_with};
use burn::module::Module;
use burn::tensor::Device;
use serde_json::{Value, json};

use crate::config::{AugmentPreset, Backend, VisionConfig, VisionObjective};
use crate::pretrain::{device_for, write_atomic};

/// Images per batch when extracting features for evaluation.
const FEATURE_BATCH: usize = 256;
/// Images sampled to measure the default normalization.
const STATS_IMAGES: usize = 10_000;

/// The data of a run, loaded and split.
pub struct VisionData {
    /// Training images (labels, when present, are used only for evaluation).
    pub train: Arc<ImageSet>,
    /// Labeled test images.
    pub test: Option<ImageSet>,
    /// Indices of `train` used for training and held out for the evaluation loss.
    pub split: (Vec<usize>, Vec<usize>),
    /// View generation for training.
    pub augment: Augment,
    /// Deterministic transform for feature extraction.
    pub eval_augment: Augment,
    /// The encoder config with channels and image size filled from the data.
    pub encoder: ImageEncoderConfig,
}

/// Loads the images and resolves augmentation and encoder against them.
///
/// # Errors
/// Unreadable or inconsistent images, an augmentation that does not fit them.
pub fn load_data(config: &VisionConfig) -> Result<VisionData> {
    let d = &config.data;
    let mut train = ImageSet::open(&d.path, d.labels.as_deref(), d.skip_corrupt).context("data.path")?;
    let mut test = match &d.test_path {
        Some(p) => Some(ImageSet::open(p, d.test_labels.as_deref(), d.skip_corrupt).context("data.test_path")?),
        None => None,
    };
    if let Some(max) = d.max_images {
        train = train.subset(&(0..max.min(train.len())).collect::<Vec<_>>());
        test = test.map(|t| t.subset(&(0..max.min(t.len())).collect::<Vec<_>>()));
    }
    if let Some(t) = &test {
        if (t.channels, t.height, t.width) != (train.channels, train.height, train.width) {
            bail!("data.test_path: images are {}×{}×{}, the training images {}×{}×{}", t.height, t.width, t.channels, train.height, train.width, train.channels);
        }
        if t.labels.is_none() {
            bail!("data.test_path: the test images have no labels (give data.test_labels, or class sub-folders)");
        }
    }
    let a = &config.augment;
    let size = a.size.unwrap_or((train.height, train.width));
    let (mean, std) = match (&a.mean, &a.std) {
        (Some(m), Some(s)) => (m.clone(), s.clone()),
        (None, None) => channel_stats(&train, STATS_IMAGES),
        _ => bail!("augment.mean and augment.std: give both or neither"),
    };
    let default_preset = match config.objective {
        VisionObjective::Simclr(_) => AugmentPreset::Simclr,
        VisionObjective::Mae(_) => AugmentPreset::Mae,
    };
    let mut augment = match a.preset.unwrap_or(default_preset) {
        AugmentPreset::Simclr => Augment::simclr(size, train.channels, mean.clone(), std.clone()),
        AugmentPreset::Mae => Augment { crop: Some(CropSpec { scale: (0.2, 1.0), ..CropSpec::default() }), hflip: 0.5, ..Augment::eval(size, mean.clone(), std.clone()) },
        AugmentPreset::None => Augment::eval(size, mean.clone(), std.clone()),
    };
    if let Some(scale) = a.crop_scale {
        augment.crop = Some(CropSpec { scale, ..augment.crop.unwrap_or_default() });
    }
    augment.hflip = a.hflip.unwrap_or(augment.hflip);
    augment.jitter = a.jitter.or(augment.jitter);
    augment.grayscale = a.grayscale.unwrap_or(augment.grayscale);
    augment.blur = a.blur.or(augment.blur);
    augment.solarize = a.solarize.unwrap_or(augment.solarize);
    augment.validate(train.channels).context("augment")?;
    let eval_augment = Augment::eval(size, mean, std);

    if size.0 != size.1 && matches!(config.model, ImageEncoderConfig::Vit(_)) {
        bail!("augment.size: a ViT needs square views, got {}×{}", size.0, size.1);
    }
    let mut encoder = config.model.clone();
    encoder.fit_to_data(train.channels, size.0);
    encoder.validate()?;
    if encoder.in_channels() != train.channels {
        bail!("model.in_channels: {} but the images have {} channel(s)", encoder.in_channels(), train.channels);
    }
    if let ImageEncoderConfig::Vit(v) = &encoder
        && v.image_size != size.0
    {
        bail!("model.image_size: {} but the views are {}×{}", v.image_size, size.0, size.1);
    }
    let split = heldout_split(train.len(), d.heldout_fraction);
    Ok(VisionData { train: Arc::new(train), test, split, augment, eval_augment, encoder })
}

/// Every `1/fraction`-th image is held out, so the split is fixed and class-balanced in
/// expectation without reading labels.
fn heldout_split(n: usize, fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let stride = (1.0 / fraction).round().max(2.0) as usize;
    (0..n).partition(|i| i % stride != stride - 1)
}

/// The objective of a run.
enum VisionModel {
    SimClr(SimClr),
    Mae(MaskedAutoencoder),
}

/// Builds the objective for `config` on `device`, initialized under the run seed
/// ([`prepare_model`]): the weights training starts from, and the random-encoder baseline.
fn build(config: &VisionConfig, encoder: &ImageEncoderConfig, device: &Device) -> Result<VisionModel> {
    let seed = config.run.seed;
    Ok(match &config.objective {
        VisionObjective::Simclr(s) => {
            let dim = encoder.feature_dim();
            let head = ProjectionHead::new(dim, s.projection_hidden.unwrap_or(dim), s.projection_dim, device);
            VisionModel::SimClr(prepare_model(SimClr::new(encoder.init(device)?, head, s.temperature), seed, device))
        }
        VisionObjective::Mae(m) => {
            let ImageEncoderConfig::Vit(vit) = encoder else { bail!("model.arch: MAE needs a ViT encoder") };
            let mae = MaskedAutoencoder::new(Mae::init(vit, &m.decoder, device)?, m.mask_ratio, m.norm_pix_loss);
            VisionModel::Mae(prepare_model(mae, seed, device))
        }
    })
}

/// Runs image pretraining, then the frozen-feature evaluation when test labels exist;
/// writes and returns `summary.json`.
///
/// # Errors
/// Data, model, training or I/O errors, with context.
pub fn run(config: &VisionConfig, run_dir: &Path, resume: bool, backend: Backend, progress: bool) -> Result<Value> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    write_atomic(&run_dir.join("config.toml"), toml::to_string_pretty(config)?.as_bytes())?;
    let data = load_data(config)?;
    write_atomic(&run_dir.join("augment.json"), &serde_json::to_vec_pretty(&json!({ "train": data.augment, "eval": data.eval_augment }))?)?;
    let views = match config.objective {
        VisionObjective::Simclr(_) => 2,
        VisionObjective::Mae(_) => 1,
    };
    let (train_idx, heldout_idx) = data.split.clone();
    let seed = config.run.seed;
    let stream = ImageBatches::new(data.train.clone(), train_idx, data.augment.clone(), views, config.train.batch_size, seed)?
        .with_eval(heldout_idx, data.augment.clone(), config.train.eval_batches)?;
    let epochs = config.train.max_steps as f64 / stream.steps_per_epoch().max(1) as f64;
    let device = device_for(backend)?.autodiff();
    let cfg = config.train.train_config(seed, progress);
    let run = RunDir { root: run_dir.to_path_buf() };
    eprintln!(
        "{} training images ({}×{}×{}), {} held out; {} steps of {} images = {epochs:.1} epochs; backend {backend:?}",
        stream.steps_per_epoch() as usize * config.train.batch_size,
        data.train.height,
        data.train.width,
        data.train.channels,
        data.split.1.len(),
        config.train.max_steps,
        config.train.batch_size
    );
    let steps_per_epoch = stream.steps_per_epoch();
    let (summary, eval) = match build(config, &data.encoder, &device)? {
        VisionModel::SimClr(m) => {
            let periodic = periodic(config, &data, &device, steps_per_epoch);
            finish(train_with(announce(m), stream, &device, &run, &cfg, resume, periodic)?, config, &data, &device)?
        }
        VisionModel::Mae(m) => {
            let periodic = periodic(config, &data, &device, steps_per_epoch);
            finish(train_with(announce(m), stream, &device, &run, &cfg, resume, periodic)?, config, &data, &device)?
        }
    };
    let report = json!({
        "run": config.run.name,
        "run_dir": run_dir,
        "backend": format!("{backend:?}").to_lowercase(),
        "objective": summary.objective,
        "encoder": data.encoder,
        "num_params": summary.num_params,
        "steps": summary.steps,
        "epochs": epochs,
        "images_seen": summary.examples_seen,
        "wall_time_s": summary.wall_time_s,
        "images_per_s": summary.examples_per_s,
        "data_wait_fraction": summary.data_wait_fraction,
        "skipped_steps": summary.skipped_steps,
        "initial_eval_loss": summary.initial_eval_loss,
        "final_eval": summary.final_eval,
        "eval_loss_drop": summary.eval_loss_drop,
        "last_checkpoint": summary.last_checkpoint,
        "data": { "train_images": data.train.len(), "skipped": data.train.skipped, "test_images": data.test.as_ref().map(ImageSet::len) },
        "frozen_eval": eval,
    });
    write_atomic(&run_dir.join("summary.json"), &serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

fn announce<M: Module>(m: M) -> M {
    eprintln!("model: {} parameters", m.num_params());
    m
}

fn finish<O>(trained: (O, TrainSummary), config: &VisionConfig, data: &VisionData, device: &Device) -> Result<(TrainSummary, Value)>
where
    O: Objective<Batch = ImageBatch> + ImageFeatures,
{
    let (objective, summary) = trained;
    let (model, inner) = (objective.valid(), device.clone().inner());
    let eval = frozen_eval(&|b: &ImageBatch| features(&model, b, &inner), config, data)?;
    Ok((summary, eval.map_or(Value::Null, |e| e.report)))
}

/// The frozen-feature evaluation every `eval.every_epochs` epochs during training (when the
/// data has labels and a test set), logged as `frozen_knn_accuracy` and
/// `frozen_linear_probe_accuracy` in `metrics.jsonl`.
fn periodic<'a, O>(config: &'a VisionConfig, data: &'a VisionData, device: &Device, steps_per_epoch: u64) -> Option<PeriodicEval<'a, O>>
where
    O: Objective<Batch = ImageBatch> + ImageFeatures,
{
    let every = config.eval.every_epochs * steps_per_epoch;
    if every == 0 || data.test.is_none() || data.train.labels.is_none() {
        return None;
    }
    let inner = device.clone().inner();
    let run = move |objective: &O| -> std::result::Result<std::collections::BTreeMap<String, f64>, String> {
        let model = objective.valid();
        let e = frozen_eval(&|b: &ImageBatch| features(&model, b, &inner), config, data).map_err(|e| format!("{e:#}"))?;
        let e = e.map_or(Value::Null, |e| e.report);
        Ok(["knn_accuracy", "linear_probe_accuracy"].iter().filter_map(|k| e[*k].as_f64().map(|v| (format!("frozen_{k}"), v))).collect())
    };
    Some(PeriodicEval { every, run: Box::new(run) })
}

fn features<M: ImageFeatures>(model: &M, batch: &ImageBatch, device: &Device) -> Vec<f32> {
    model.features(images_tensor(batch, device)).into_data().try_into_vec::<f32>().unwrap_or_default()
}

/// A frozen-feature evaluation: its report, and the test predictions behind it.
struct FrozenEval {
    report: Value,
    truth: Vec<usize>,
    knn: Vec<usize>,
    probe: Vec<usize>,
}

/// kNN and linear-probe accuracy of `extract`'s features: fitted on the labeled training
/// images, scored on the test images. `None` when either has no labels.
fn frozen_eval(extract: &dyn Fn(&ImageBatch) -> Vec<f32>, config: &VisionConfig, data: &VisionData) -> Result<Option<FrozenEval>> {
    let (Some(test), Some(train_labels)) = (&data.test, &data.train.labels) else {
        eprintln!("no labeled test set (data.test_path) or no training labels (data.labels): frozen-feature evaluation skipped");
        return Ok(None);
    };
    let e = &config.eval;
    let start = std::time::Instant::now();
    let all = |set: &ImageSet| -> Result<(Vec<f32>, usize)> {
        let idx: Vec<usize> = (0..set.len()).collect();
        let mut out = Vec::new();
        for b in labeled_batches(set, &idx, &data.eval_augment, FEATURE_BATCH)? {
            out.extend(extract(&b));
        }
        let dim = out.len() / set.len().max(1);
        Ok((out, dim))
    };
    let (train_f, dim) = all(&data.train)?;
    let (test_f, _) = all(test)?;
    let features_s = start.elapsed().as_secs_f64();
    let train_y: Vec<usize> = train_labels.iter().map(|&l| l as usize).collect();
    let test_y: Vec<usize> = test.labels.as_ref().map(|l| l.iter().map(|&v| v as usize).collect()).unwrap_or_default();
    let classes = train_y.iter().chain(&test_y).max().map_or(1, |m| m + 1);
    let knn = knn_predict(&train_f, &train_y, &test_f, dim, classes, e.knn_k, e.knn_temperature);
    let knn_s = start.elapsed().as_secs_f64() - features_s;
    let probe_cfg = ProbeConfig { l2: e.probe_l2, steps: e.probe_steps, lr: e.probe_lr };
    let probe = linear_probe(&train_f, &train_y, &test_f, dim, classes, &probe_cfg, &Device::flex());
    let probe_s = start.elapsed().as_secs_f64() - features_s - knn_s;
    let report = json!({
        "feature_dim": dim,
        "train_images": train_y.len(),
        "test_images": test_y.len(),
        "knn_accuracy": accuracy(&confusion_matrix(&test_y, &knn, classes)),
        "knn_k": e.knn_k,
        "linear_probe_accuracy": accuracy(&confusion_matrix(&test_y, &probe, classes)),
        "linear_probe": { "l2": e.probe_l2, "steps": e.probe_steps, "lr": e.probe_lr, "standardized": true },
        "wall_time_s": start.elapsed().as_secs_f64(),
        "features_s": features_s,
        "knn_s": knn_s,
        "linear_probe_s": probe_s,
    });
    Ok(Some(FrozenEval { report, truth: test_y, knn, probe }))
}

/// What `eval` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSubject {
    /// The run's newest valid checkpoint.
    Checkpoint,
    /// Baseline: the normalized pixels themselves as features.
    Pixels,
    /// Baseline: a randomly initialized encoder of the run's architecture (run seed).
    Random,
}

impl EvalSubject {
    /// The name in file names and reports (`eval-<name>.json`).
    pub fn name(self) -> &'static str {
        match self {
            EvalSubject::Checkpoint => "checkpoint",
            EvalSubject::Pixels => "pixels",
            EvalSubject::Random => "random",
        }
    }
}

/// `autodidact eval RUN_DIR`: the frozen-feature evaluation of a finished (or running) run,
/// or of a baseline on the same data; writes `eval-<subject>.json` in the run directory.
/// With `against`, the other subject is scored on the same test images too, and the report
/// adds McNemar's paired test of the two (`paired`).
///
/// # Errors
/// Not a vision run directory, no valid checkpoint, `against` equal to `subject`, data or
/// model errors.
pub fn eval(run_dir: &Path, subject: EvalSubject, against: Option<EvalSubject>, overrides: &[String], backend: Backend) -> Result<Value> {
    let path = run_dir.join("config.toml");
    if !path.exists() {
        bail!("{} has no config.toml: not a run directory", run_dir.display());
    }
    if against == Some(subject) {
        bail!("--against {}: that is what --features already evaluates; name another subject", subject.name());
    }
    let evaluation_only = |o: &String| {
        let key = o.split('=').next().unwrap_or_default().trim();
        key.starts_with("eval.") || key == "model.pool"
    };
    if let Some(o) = overrides.iter().find(|o| !evaluation_only(o)) {
        bail!("--set {o}: eval changes only evaluation settings (eval.*, model.pool); the run's other settings are what it was trained with");
    }
    let config = crate::config::load_vision(&path, overrides)?;
    let data = load_data(&config)?;
    let device = device_for(backend)?;
    let score = |subject: EvalSubject| -> Result<(FrozenEval, Value)> {
        let mut checkpoint_used = Value::Null;
        let result = match subject {
            EvalSubject::Pixels => frozen_eval(&|b: &ImageBatch| b.pixels.clone(), &config, &data)?,
            EvalSubject::Random | EvalSubject::Checkpoint => {
                let mut model = build(&config, &data.encoder, &device)?;
                if subject == EvalSubject::Checkpoint {
                    let (ckpt, warnings) = RunDir { root: run_dir.to_path_buf() }.checkpoints().latest_valid();
                    warnings.iter().for_each(|w| eprintln!("warning: {w}"));
                    let Some(ckpt) = ckpt else { bail!("{}: no valid checkpoint", run_dir.display()) };
                    let weights = ckpt.path.join(checkpoint::MODEL_FILE);
                    match &mut model {
                        VisionModel::SimClr(m) => checkpoint::load_weights(&weights, m)?,
                        VisionModel::Mae(m) => checkpoint::load_weights(&weights, m)?,
                    }
                    checkpoint_used = json!(ckpt.path);
                }
                match model {
                    VisionModel::SimClr(m) => frozen_eval(&|b: &ImageBatch| features(&m, b, &device), &config, &data)?,
                    VisionModel::Mae(m) => frozen_eval(&|b: &ImageBatch| features(&m, b, &device), &config, &data)?,
                }
            }
        };
        let Some(result) = result else {
            bail!("{}: the run has no labeled test set (data.test_path with labels) and training labels to evaluate against", run_dir.display());
        };
        Ok((result, checkpoint_used))
    };
    let (result, checkpoint_used) = score(subject)?;
    let paired = match against {
        None => Value::Null,
        Some(other) => {
            let (o, _) = score(other)?;
            let test = |ours: &[usize], theirs: &[usize]| {
                let t = mcnemar(&result.truth, ours, theirs);
                json!({ "only_this_right": t.only_first, "only_against_right": t.only_second, "p_value": t.p_value })
            };
            json!({
                "against": other.name(),
                "test": "McNemar, exact",
                "knn": test(&result.knn, &o.knn),
                "linear_probe": test(&result.probe, &o.probe),
                "against_frozen_eval": o.report,
            })
        }
    };
    let report = json!({
        "run_dir": run_dir,
        "subject": subject.name(),
        "checkpoint": checkpoint_used,
        "overrides": overrides,
        "frozen_eval": result.report,
        "paired": paired,
    });
    write_atomic(&run_dir.join(format!("eval-{}.json", subject.name())), &serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

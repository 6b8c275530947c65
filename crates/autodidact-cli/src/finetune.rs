//! `autodidact finetune`: a classifier on a pretrained (or randomly initialized) encoder,
//! trained on few or many labels, selected on validation, reported on test.

use std::path::Path;

use anyhow::{Context, Result};
use autodidact_core::batch::ClassificationBatch;
use autodidact_core::eval::{accuracy, confusion_matrix, knn_predict, macro_f1};
use autodidact_data::labeled::{ClassificationData, Encoded, LabeledCorpus, LabeledFields, label_subset, stratified_split};
use autodidact_objectives::classify::SequenceClassifier;
use autodidact_train::params::with_stable_ids;
use autodidact_train::trainer::{RunDir, prepare_model, train};
use burn::module::Module;
use burn::tensor::Device;
use serde_json::{Value, json};

use crate::config::{Backend, FinetuneConfig};
use crate::init::Pretrained;
use crate::pretrain::{MODEL_CONFIG_FILE, device_for, write_atomic};

/// Neighbours in the kNN evaluation of frozen features (and its vote temperature, as in
/// Wu et al. 2018 and solo-learn).
const KNN_K: usize = 20;
const KNN_TEMPERATURE: f64 = 0.07;

/// Runs fine-tuning and writes `summary.json`; returns it.
///
/// # Errors
/// Data, model, training or I/O errors, with context.
pub fn run(config: &FinetuneConfig, run_dir: &Path, backend: Backend, progress: bool) -> Result<Value> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    write_atomic(&run_dir.join("config.toml"), toml::to_string_pretty(config)?.as_bytes())?;
    let d = &config.data;
    let m = &config.model;
    let seed = config.run.seed;

    let pretrained = Pretrained::open(&m.init_from).context("model.init_from")?;
    let fields = LabeledFields { text: d.text_field.clone(), label: d.label_field.clone() };
    let corpus = LabeledCorpus::open(&d.path, d.format, &fields, None).context("data.path")?;
    let (texts, labels, split, test_skipped) = match &d.test_path {
        None => {
            let split = stratified_split(&corpus.labels, &corpus.classes, d.validation_fraction, d.test_fraction, seed).context("data")?;
            (corpus.texts.clone(), corpus.labels.clone(), split, Value::Null)
        }
        Some(test_path) => {
            let test = LabeledCorpus::open(test_path, d.format, &fields, Some(&corpus.classes)).context("data.test_path")?;
            let mut split = stratified_split(&corpus.labels, &corpus.classes, d.validation_fraction, 0.0, seed).context("data")?;
            let offset = corpus.texts.len();
            split.test = (offset..offset + test.texts.len()).collect();
            let texts = corpus.texts.iter().chain(&test.texts).cloned().collect();
            let labels = corpus.labels.iter().chain(&test.labels).copied().collect();
            (texts, labels, split, json!(test.skipped))
        }
    };
    let train_idx = label_subset(&split.train, &labels, corpus.classes.len(), d.label_fraction, seed);
    let encoded = Encoded::new(&pretrained.tokenizer, &texts, &labels, d.max_seq_len)?;
    eprintln!(
        "{} classes; {} training examples ({}% of {} labels kept), {} validation, {} test; {} truncated to {} tokens",
        corpus.classes.len(),
        train_idx.len(),
        (d.label_fraction * 100.0),
        split.train.len(),
        split.validation.len(),
        split.test.len(),
        encoded.truncated,
        d.max_seq_len
    );

    let bert_config = config.bert_config()?;
    pretrained.tokenizer.save(&run_dir.join("tokenizer.json"))?;
    write_atomic(&run_dir.join(MODEL_CONFIG_FILE), &serde_json::to_vec_pretty(&bert_config)?)?;
    let device = device_for(backend)?.autodiff();
    let num_classes = corpus.classes.len();
    let head = |bert| SequenceClassifier::new(bert, num_classes, m.pooling, m.classifier_dropout, m.freeze_encoder, &device);
    let (objective, init) = if m.random_init {
        (prepare_model(head(bert_config.init(&device)), seed, &device), json!({ "dir": m.init_from, "random_init": true }))
    } else {
        // Built from this config (its dropout), with the pretrained weights.
        let (encoder, report) = pretrained.load_encoder(&bert_config, &device)?;
        (with_stable_ids(prepare_model(head(encoder), seed, &device)), report)
    };

    let test_batches = encoded.batches(&split.test, config.train.batch_size);
    let knn_train = if m.freeze_encoder { Some(encoded.batches(&train_idx, config.train.batch_size)) } else { None };
    let data = ClassificationData::new(encoded, train_idx.clone(), split.validation.clone(), config.train.batch_size, seed)?;
    let steps_per_epoch = data.steps_per_epoch();
    let train_cfg = config.train.train_config(seed, progress);
    let (trained, summary) = train(objective, data, &device, &RunDir { root: run_dir.to_path_buf() }, &train_cfg, false)?;

    let inner = device.inner();
    let model = trained.valid();
    let truth: Vec<usize> = test_batches.iter().flat_map(|b| b.labels.iter().map(|&l| l as usize)).collect();
    let predicted: Vec<usize> = test_batches.iter().flat_map(|b| model.predict(b, &inner)).map(|c| c as usize).collect();
    let confusion = confusion_matrix(&truth, &predicted, num_classes);
    let mut test = json!({
        "examples": truth.len(),
        "accuracy": accuracy(&confusion),
        "macro_f1": macro_f1(&confusion),
        "confusion_matrix": confusion,
    });
    if let Some(train_batches) = knn_train {
        let (train_feats, dim) = features(&model, &train_batches, &inner);
        let (test_feats, _) = features(&model, &test_batches, &inner);
        let train_labels: Vec<usize> = train_batches.iter().flat_map(|b| b.labels.iter().map(|&l| l as usize)).collect();
        let knn = knn_predict(&train_feats, &train_labels, &test_feats, dim, num_classes, KNN_K, KNN_TEMPERATURE);
        test["knn_accuracy"] = json!(accuracy(&confusion_matrix(&truth, &knn, num_classes)));
        test["knn_k"] = json!(KNN_K);
    }
    let report = json!({
        "run": config.run.name,
        "run_dir": run_dir,
        "backend": format!("{backend:?}").to_lowercase(),
        "init_from": init,
        "mode": if m.freeze_encoder { "linear probe (frozen encoder)" } else { "full fine-tuning" },
        "pooling": m.pooling,
        "classes": corpus.classes,
        "label_fraction": d.label_fraction,
        "examples": {
            "train": train_idx.len(),
            "train_available": split.train.len(),
            "validation": split.validation.len(),
            "test": split.test.len(),
            "train_per_class": per_class(&train_idx, &labels, num_classes),
        },
        "skipped": { "data": corpus.skipped, "test": test_skipped },
        "steps": summary.steps,
        "epochs": summary.steps as f64 / steps_per_epoch.max(1) as f64,
        "wall_time_s": summary.wall_time_s,
        "examples_per_s": summary.examples_per_s,
        "best_step": summary.best_step,
        "stopped_early": summary.stopped_early,
        "skipped_steps": summary.skipped_steps,
        "validation": summary.best_eval.clone().unwrap_or(summary.final_eval.clone()),
        "test": test,
        "checkpoint": RunDir { root: run_dir.to_path_buf() }.checkpoints().best().or(summary.last_checkpoint),
    });
    write_atomic(&run_dir.join("summary.json"), &serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

fn per_class(indices: &[usize], labels: &[usize], num_classes: usize) -> Vec<usize> {
    let mut counts = vec![0; num_classes];
    for &i in indices {
        counts[labels[i]] += 1;
    }
    counts
}

/// Pooled features of every example, row-major, and their width.
fn features(model: &SequenceClassifier, batches: &[ClassificationBatch], device: &Device) -> (Vec<f32>, usize) {
    let mut out = Vec::new();
    let mut dim = 0;
    for b in batches {
        let f = model.features(b, device);
        dim = f.dims()[1];
        out.extend(f.into_data().try_into_vec::<f32>().unwrap_or_default());
    }
    (out, dim)
}

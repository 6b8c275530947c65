//! Evaluation helpers against oracle cases; the trainer's handling of faults (NaN, killed
//! writes, damaged or malicious weight files) on a toy objective.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::Path;

use autodidact_train::TrainError;
use autodidact_train::checkpoint::{self, Checkpoints};
use autodidact_train::probe::{ProbeConfig, Standardizer, linear_probe};
use autodidact_train::schedule::{Decay, LrSchedule};
use autodidact_train::trainer::{AdamWSettings, NonFinitePolicy, RunDir, TrainConfig, TrainSummary, prepare_model, train};
use burn::tensor::Device;

/// Four well-separated Gaussian-ish clusters in 6 dimensions (deterministic jitter), with an
/// uninformative constant-offset feature of huge scale that standardization must tame.
fn clusters(n_per: usize, offset: usize) -> (Vec<f32>, Vec<usize>) {
    let dim = 6;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for c in 0..4 {
        for i in 0..n_per {
            let k = (i + offset) as f32;
            for j in 0..dim {
                let centre = if j == c { 3.0 } else { 0.0 };
                let jitter = ((k * 1.7 + j as f32 * 2.3 + c as f32).sin()) * 0.8;
                x.push(if j == 5 { 1000.0 + jitter } else { centre + jitter });
            }
            y.push(c);
        }
    }
    (x, y)
}

#[test]
fn linear_probe_separates_separable_clusters() {
    let (train, train_y) = clusters(50, 0);
    let (test, test_y) = clusters(20, 1000);
    let predicted = linear_probe(&train, &train_y, &test, 6, 4, &ProbeConfig::default(), &Device::flex());
    let correct = predicted.iter().zip(&test_y).filter(|(p, t)| p == t).count();
    assert_eq!(correct, test_y.len(), "{predicted:?}");
}

#[test]
fn standardizer_gives_zero_mean_unit_variance() {
    let (train, _) = clusters(10, 0);
    let z = Standardizer::fit(&train, 6).apply(&train);
    for j in 0..6 {
        let col: Vec<f64> = z.chunks_exact(6).map(|r| f64::from(r[j])).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3, "feature {j}: mean {mean} var {var}");
    }
}

// ---------------------------------------------------------------------------------------
// The trainer's fault handling, on a toy regression objective.

mod toy {
    use autodidact_core::objective::{BatchSize, BatchStream, Objective, ObjectiveOutput};
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, Tensor, TensorData};

    /// y = 2·x₀ − x₁ + 0.5, learned by one linear layer with a squared-error loss.
    #[derive(Module, Debug)]
    pub struct Regression {
        pub linear: Linear,
    }

    impl Regression {
        pub fn new(inputs: usize, device: &Device) -> Self {
            Self { linear: LinearConfig::new(inputs, 1).init(device) }
        }
    }

    pub struct Batch {
        pub x: Vec<f32>,
        pub y: Vec<f32>,
        /// Add `sqrt(0 · Σw)`: zero in the forward pass, a NaN gradient (0 · ∞) backwards.
        pub grad_bomb: bool,
    }

    impl BatchSize for Batch {
        fn examples(&self) -> usize {
            self.y.len()
        }
    }

    impl Objective for Regression {
        type Batch = Batch;
        fn name(&self) -> &'static str {
            "regression"
        }
        fn forward(&self, batch: &Batch, device: &Device) -> ObjectiveOutput {
            let n = batch.y.len();
            let x = Tensor::<2>::from_data(TensorData::new(batch.x.clone(), [n, 2]), device);
            let y = Tensor::<2>::from_data(TensorData::new(batch.y.clone(), [n, 1]), device);
            let diff = self.linear.forward(x) - y;
            let mut loss = (diff.clone() * diff).mean();
            if batch.grad_bomb {
                loss = loss + (self.linear.weight.val().sum() * 0.0).sqrt();
            }
            ObjectiveOutput { loss, targets: n, metrics: Vec::new() }
        }
    }

    /// Batch `k` is a pure function of `k`; the batches listed in `poison` carry `value`
    /// (NaN, an infinity) in one input.
    pub struct Stream {
        pub poison: Vec<u64>,
        pub value: f32,
        /// Batches whose loss is finite but whose gradient is NaN.
        pub grad_bombs: Vec<u64>,
        /// The batch that cannot be read.
        pub unreadable: Option<u64>,
    }

    fn batch(k: u64, poison: Option<f32>) -> Batch {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..8u64 {
            let a = ((k * 8 + i) as f32 * 0.37).sin();
            let b = ((k * 8 + i) as f32 * 0.91).cos();
            x.extend([a, b]);
            y.push(2.0 * a - b + 0.5);
        }
        if let Some(value) = poison {
            x[3] = value;
        }
        Batch { x, y, grad_bomb: false }
    }

    impl BatchStream for Stream {
        type Batch = Batch;
        fn train_batch(&mut self, k: u64) -> Result<Batch, String> {
            if self.unreadable == Some(k) {
                return Err(format!("shards/train-00000.bin: unexpected end of file at batch {k}"));
            }
            Ok(Batch { grad_bomb: self.grad_bombs.contains(&k), ..batch(k, self.poison.contains(&k).then_some(self.value)) })
        }
        fn eval_batches(&self) -> Result<Vec<Batch>, String> {
            Ok(vec![batch(1_000_000, None)])
        }
    }
}


fn toy_config(max_steps: u64, on_nonfinite: NonFinitePolicy) -> TrainConfig {
    TrainConfig {
        seed: 5,
        max_steps,
        grad_accum: 1,
        adamw: AdamWSettings { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        schedule: LrSchedule { peak: 0.05, min_lr: 0.0, warmup_steps: 0, total_steps: max_steps, decay: Decay::Constant },
        clip_grad_norm: None,
        log_every: 1,
        eval_every: 0,
        checkpoint_every: 3,
        early_stopping: None,
        keep_last: 10,
        prefetch: 2,
        progress: false,
        on_nonfinite,
        max_skipped_steps: 2,
        handle_signals: false,
    }
}

fn train_toy(root: &Path, cfg: &TrainConfig, poison: Vec<u64>, resume: bool) -> Result<(toy::Regression, TrainSummary), TrainError> {
    train_toy_on(root, cfg, toy::Stream { poison, value: f32::NAN, grad_bombs: Vec::new(), unreadable: None }, resume)
}

fn train_toy_on(root: &Path, cfg: &TrainConfig, stream: toy::Stream, resume: bool) -> Result<(toy::Regression, TrainSummary), TrainError> {
    let device = Device::flex().autodiff();
    let model = prepare_model(toy::Regression::new(2, &device), cfg.seed, &device);
    train(model, stream, &device, &RunDir { root: root.to_path_buf() }, cfg, resume)
}

fn checkpoint_steps(root: &Path) -> Vec<u64> {
    Checkpoints::new(root.join("checkpoints")).list().iter().map(|c| c.step).collect()
}

#[test]
fn the_toy_objective_learns() {
    let dir = tempfile::tempdir().unwrap();
    let (_, s) = train_toy(dir.path(), &toy_config(60, NonFinitePolicy::Stop), vec![], false).unwrap();
    let (first, last) = (s.initial_eval_loss.unwrap(), s.final_eval["eval_loss"]);
    assert!(last < 0.1 * first, "eval loss {first} -> {last}");
}

#[test]
fn a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_good_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    // Batch 7 (0-based) feeds step 8.
    let err = train_toy(dir.path(), &toy_config(12, NonFinitePolicy::Stop), vec![7], false).unwrap_err();
    assert!(matches!(err, TrainError::NonFinite { what: "loss", step: 8, .. }), "{err}");
    assert!(err.to_string().contains("at step 8"), "{err}");
    assert_eq!(checkpoint_steps(dir.path()), vec![3, 6]);
    for c in Checkpoints::new(dir.path().join("checkpoints")).list() {
        checkpoint::verify(&c.path).unwrap();
    }
    // An infinite input: an infinite loss, the same stop.
    let dir = tempfile::tempdir().unwrap();
    let err = train_toy_on(dir.path(), &toy_config(12, NonFinitePolicy::Stop), toy::Stream { poison: vec![4], value: f32::INFINITY, grad_bombs: Vec::new(), unreadable: None }, false).unwrap_err();
    assert!(matches!(err, TrainError::NonFinite { what: "loss", step: 5, value } if value.is_infinite()), "{err}");
    // A finite loss whose gradient is NaN: stopped on the gradient norm.
    let dir = tempfile::tempdir().unwrap();
    let err = train_toy_on(dir.path(), &toy_config(12, NonFinitePolicy::Stop), toy::Stream { poison: Vec::new(), value: 0.0, grad_bombs: vec![1], unreadable: None }, false).unwrap_err();
    assert!(matches!(err, TrainError::NonFinite { what: "gradient norm", step: 2, .. }), "{err}");
}

#[test]
fn unreadable_training_data_is_an_error_naming_it_and_keeps_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let stream = toy::Stream { poison: Vec::new(), value: 0.0, grad_bombs: Vec::new(), unreadable: Some(7) };
    let err = train_toy_on(dir.path(), &toy_config(12, NonFinitePolicy::Stop), stream, false).unwrap_err();
    assert!(matches!(err, TrainError::Data(_)), "{err:?}");
    assert!(err.to_string().contains("shards/train-00000.bin: unexpected end of file at batch 7"), "{err}");
    assert!(!checkpoint_steps(dir.path()).is_empty(), "checkpoints before the failure are kept");
}

#[test]
fn skip_policy_skips_counts_and_logs_nonfinite_steps() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { checkpoint_every: 1, ..toy_config(12, NonFinitePolicy::Skip) };
    let (_, s) = train_toy(dir.path(), &cfg, vec![7], false).unwrap();
    assert_eq!((s.steps, s.skipped_steps), (12, 1));
    assert!(s.final_eval["eval_loss"].is_finite());
    let lines = autodidact_train::metrics::read_all(&dir.path().join("metrics.jsonl")).unwrap();
    let skipped: Vec<_> = lines.iter().filter(|l| l.contains_key("skipped")).map(|l| l["step"].as_u64()).collect();
    assert_eq!(skipped, vec![Some(8)]);
    // The skipped step left the weights alone; the steps around it did not.
    let w = |step: u64| std::fs::read(dir.path().join(format!("checkpoints/step-{step:08}/model.safetensors"))).unwrap();
    assert!(w(8) == w(7) && w(9) != w(8) && w(7) != w(6));
    // Too many skips: the run diverged, and says so.
    let dir = tempfile::tempdir().unwrap();
    let err = train_toy(dir.path(), &toy_config(12, NonFinitePolicy::Skip), vec![2, 4, 5], false).unwrap_err();
    assert!(matches!(err, TrainError::TooManySkipped { skipped: 3, step: 6 }), "{err}");
}

#[test]
fn leftovers_of_a_killed_write_are_cleaned_up_when_a_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = toy_config(6, NonFinitePolicy::Stop);
    train_toy(root, &cfg, vec![], false).unwrap();
    // What a SIGKILL in the middle of writes leaves: a partial checkpoint, a temporary file,
    // and a directory moved aside whose replacement never arrived.
    let ckpts = root.join("checkpoints");
    std::fs::create_dir(ckpts.join(".step-00000009.partial-4242")).unwrap();
    std::fs::write(ckpts.join(".step-00000009.partial-4242/model.safetensors"), b"half").unwrap();
    std::fs::write(root.join(".metrics.jsonl.tmp-4242"), b"{\"st").unwrap();
    std::fs::rename(ckpts.join("step-00000006"), ckpts.join(".step-00000006.old-4242")).unwrap();
    let (_, s) = train_toy(root, &toy_config(9, NonFinitePolicy::Stop), vec![], true).unwrap();
    assert_eq!(s.loss_history.len(), 3, "resumed from the restored step-6 checkpoint");
    let hidden = |d: &Path| std::fs::read_dir(d).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count();
    assert_eq!((hidden(root), hidden(&ckpts)), (0, 0));
    assert_eq!(checkpoint_steps(root), vec![3, 6, 9]);
}

/// A `model.safetensors` for `toy::Regression` written by the trainer, and its bytes.
fn toy_checkpoint(root: &Path) -> (std::path::PathBuf, Vec<u8>) {
    train_toy(root, &toy_config(3, NonFinitePolicy::Stop), vec![], false).unwrap();
    let path = root.join("checkpoints/step-00000003/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// A safetensors file from a JSON header and a data section.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

#[test]
fn damaged_or_malicious_weight_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bytes) = toy_checkpoint(dir.path());
    let device = Device::flex();
    let mut model = toy::Regression::new(2, &device);
    checkpoint::load_weights(&good, &mut model).unwrap();

    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let weight = r#""linear.weight":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}"#;
    let bias = |dtype: &str, offsets: &str| format!(r#""linear.bias":{{"dtype":"{dtype}","shape":[1],"data_offsets":{offsets}}}"#);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", Vec::new()),
        ("truncated in the header", bytes[..8 + header_len / 2].to_vec()),
        ("truncated in the data", bytes[..bytes.len() - 3].to_vec()),
        ("header length beyond the file", { let mut b = bytes.clone(); b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes()); b }),
        ("header that is not JSON", safetensors_bytes("{not json", &[0; 12])),
        ("overlapping offsets", safetensors_bytes(&format!("{{{weight},{}}}", bias("F32", "[4,8]")), &[0; 8])),
        ("offsets beyond the data", safetensors_bytes(&format!("{{{weight},{}}}", bias("F32", "[8,4000]")), &[0; 12])),
        ("size that disagrees with the shape", safetensors_bytes(&format!("{{{weight},{}}}", bias("F32", "[8,10]")), &[0; 10])),
        ("wrong dtype", safetensors_bytes(&format!("{{{weight},{}}}", bias("I64", "[8,16]")), &[0; 16])),
        ("unknown dtype", safetensors_bytes(&format!("{{{weight},{}}}", bias("F17", "[8,12]")), &[0; 12])),
        ("a tensor missing", safetensors_bytes(&format!("{{{weight}}}"), &[0; 8])),
    ];
    for (case, content) in cases {
        let path = dir.path().join("case.safetensors");
        std::fs::write(&path, &content).unwrap();
        let mut model = toy::Regression::new(2, &device);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| checkpoint::load_weights(&path, &mut model)));
        let result = result.unwrap_or_else(|_| panic!("{case}: loading panicked"));
        let err = result.err().unwrap_or_else(|| panic!("{case}: loaded without an error"));
        assert!(err.to_string().contains("case.safetensors"), "{case}: {err}");
        eprintln!("{case}: {err}");
    }
    // A checkpoint of another model shape.
    let mut wider = toy::Regression::new(3, &device);
    let err = checkpoint::load_weights(&good, &mut wider).unwrap_err().to_string();
    assert!(err.contains("linear.weight") && err.contains("[3, 1]") && err.contains("[2, 1]"), "{err}");
    eprintln!("another shape: {err}");
}

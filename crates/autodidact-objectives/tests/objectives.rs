//! Losses against PyTorch golden values and analytic cases, and the objective contract.

#[path = "../../autodidact-models/tests/support/hf_fixture.rs"]
mod hf_fixture;

use autodidact_core::batch::MlmBatch;
use autodidact_core::objective::Objective;
use autodidact_models::bert::BertConfig;
use autodidact_objectives::losses::{correct_count, cross_entropy};
use autodidact_objectives::mlm::Mlm;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};

fn device() -> Device {
    Device::flex()
}

fn scalar(t: Tensor<1>) -> f64 {
    f64::from(t.into_scalar::<f32>())
}

fn logits(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Tensor<2> {
    let v: Vec<f32> = (0..rows).flat_map(|i| (0..cols).map(move |j| (i, j))).map(|(i, j)| f(i, j) as f32).collect();
    Tensor::from_data(TensorData::new(v, [rows, cols]), &device())
}

fn labels(v: &[i64]) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &device())
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() <= 1e-5 * expected.abs().max(1.0), "got {actual}, expected {expected}");
}

/// Case A: logits[i][j] = 3 sin(0.7 i + 1.3 j), M = 5, V = 7.
///
/// ```python
/// # scripts/golden/mlm_loss.py (torch 2.15.0)
/// logits = torch.tensor([[3.0 * math.sin(0.7*i + 1.3*j) for j in range(7)] for i in range(5)], dtype=torch.float32)
/// F.cross_entropy(logits, torch.tensor([0, 6, 3, 3, 1]))            # 4.3573494
/// F.cross_entropy(logits, labels, label_smoothing=0.1)              # 4.25608015
/// ```
fn case_a() -> Tensor<2> {
    logits(5, 7, |i, j| 3.0 * (0.7 * i as f64 + 1.3 * j as f64).sin())
}

#[test]
fn cross_entropy_matches_pytorch() {
    assert_close(scalar(cross_entropy(case_a(), labels(&[0, 6, 3, 3, 1]), 0.0)), 4.357_349_4);
}

#[test]
fn label_smoothing_matches_pytorch() {
    assert_close(scalar(cross_entropy(case_a(), labels(&[0, 6, 3, 3, 1]), 0.1)), 4.256_080_15);
}

/// Case B: the ignore_index form of MLM, gathered first. logits[b][t][j] = 2 cos(0.5 b + 0.9 t - 0.4 j),
/// labels [[-100, 2, -100, 5], [1, -100, -100, 0]].
///
/// ```python
/// F.cross_entropy(logits.view(-1, 7), labels.view(-1), ignore_index=-100)   # 2.03528881
/// ```
#[test]
fn gathered_masked_positions_match_pytorch_ignore_index() {
    let all = logits(8, 7, |r, j| 2.0 * (0.5 * (r / 4) as f64 + 0.9 * (r % 4) as f64 - 0.4 * j as f64).cos());
    let positions = labels(&[1, 3, 4, 7]);
    let picked = all.select(0, positions);
    assert_close(scalar(cross_entropy(picked.clone(), labels(&[2, 5, 1, 0]), 0.0)), 2.035_288_81);
    // torch: argmax over those rows = [2, 6, 1, 6] → 2 of 4 correct.
    assert_close(scalar(correct_count(picked, labels(&[2, 5, 1, 0]))), 2.0);
}

#[test]
fn uniform_logits_give_log_vocab() {
    // Analytic: with equal logits every class has p = 1/V, so the loss is ln V for any labels.
    let v = 50;
    let loss = scalar(cross_entropy(logits(6, v, |_, _| 0.37), labels(&[0, 1, 7, 49, 3, 3]), 0.0));
    assert_close(loss, (v as f64).ln());
}

#[test]
fn confident_correct_logits_give_near_zero_loss() {
    let loss = scalar(cross_entropy(logits(3, 4, |i, j| if i == j { 30.0 } else { 0.0 }), labels(&[0, 1, 2]), 0.0));
    assert!(loss < 1e-9, "{loss}");
}

fn tiny_bert(vocab: usize) -> BertConfig {
    BertConfig {
        vocab_size: vocab,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
    }
}

fn tiny_batch() -> MlmBatch {
    let (b, t) = (4, 12);
    let original: Vec<u32> = (0..b * t).map(|i| 5 + ((i * 7 + i / t) % 20) as u32).collect();
    let mut input_ids = original.clone();
    let masked_positions: Vec<u32> = (0..b * t).filter(|i| i % 5 == 2 && i % t != t - 1).map(|i| i as u32).collect();
    for &p in &masked_positions {
        input_ids[p as usize] = 4; // [MASK]
    }
    let mut attention_mask = vec![1u8; b * t];
    attention_mask[b * t - 1] = 0; // one padded position
    MlmBatch {
        batch_size: b,
        seq_len: t,
        masked_labels: masked_positions.iter().map(|&p| original[p as usize]).collect(),
        input_ids,
        token_type_ids: vec![0; b * t],
        attention_mask,
        masked_positions,
    }
}

/// The shared objective contract: a finite loss on a fresh model, and a loss that falls when
/// fitting one tiny batch.
#[test]
fn mlm_objective_loss_is_finite_and_falls() {
    let device = device().autodiff();
    device.seed(1);
    let mut objective = Mlm::init(&tiny_bert(32), 0.0, &device);
    let batch = tiny_batch();
    let mut optimizer = AdamWConfig::new().init();
    let first = scalar(objective.forward(&batch, &device).loss);
    assert!(first.is_finite());
    // A fresh model predicts close to uniformly: the loss starts near ln V.
    assert!((first - 32f64.ln()).abs() < 0.5, "{first}");
    let mut last = first;
    for _ in 0..40 {
        let out = objective.forward(&batch, &device);
        last = scalar(out.loss.clone());
        let grads = GradientsParams::from_grads(out.loss.backward(), &objective);
        objective = optimizer.step(3e-3, objective, grads);
    }
    assert!(last.is_finite());
    assert!(last < 0.5 * first, "loss fell only from {first} to {last}");
    // Evaluation without autodiff agrees with the training forward (no dropout here).
    let valid = objective.valid();
    let eval = scalar(valid.forward(&batch, &device.clone().inner()).loss);
    assert!(eval.is_finite());
}

#[test]
fn padding_does_not_change_real_positions() {
    // The same batch with and without one extra padded position must give the same logits
    // at the real positions: the attention mask works.
    let device = device();
    device.seed(3);
    let objective = Mlm::init(&tiny_bert(32), 0.0, &device);
    let mut batch = tiny_batch();
    batch.attention_mask = vec![1; batch.input_ids.len()];
    let base = scalar(objective.forward(&batch, &device).loss);
    let mut padded = batch.clone();
    // Replace the last token of every row by padding with garbage ids; no masked position sits there.
    for r in 0..padded.batch_size {
        let i = r * padded.seq_len + padded.seq_len - 1;
        assert!(!padded.masked_positions.contains(&(i as u32)));
        padded.input_ids[i] = 31;
        padded.attention_mask[i] = 0;
    }
    let masked_garbage = scalar(objective.forward(&padded, &device).loss);
    let mut changed = padded.clone();
    for r in 0..changed.batch_size {
        changed.input_ids[r * changed.seq_len + changed.seq_len - 1] = 17;
    }
    let masked_other = scalar(objective.forward(&changed, &device).loss);
    assert!((masked_garbage - masked_other).abs() < 1e-6, "padded tokens leak into real positions");
    assert!((base - masked_garbage).abs() > 1e-7, "the mask should change the context");
}

/// Continued pretraining from a transformers-saved BERT starts where transformers is: our
/// MLM loss on the fixture's batch (same masked positions and labels, dropout off) equals
/// `BertForMaskedLM(..., labels=labels).loss` (`scripts/golden/hf_bert_fixture.py`).
#[test]
fn mlm_loss_on_a_transformers_checkpoint_matches_transformers() {
    use autodidact_models::bert::BertForMaskedLM;
    use autodidact_models::hf;
    let fx = hf_fixture::load();
    let config = hf::read_config(&fx.dir).unwrap();
    let (model, _) = hf::load_weights(BertForMaskedLM::init(&config, &device()), &hf::weights_path(&fx.dir).unwrap()).unwrap();
    let masked: Vec<(u32, u32)> = fx.labels.iter().enumerate().filter(|(_, l)| **l >= 0).map(|(i, l)| (i as u32, *l as u32)).collect();
    let batch = MlmBatch {
        batch_size: fx.batch,
        seq_len: fx.seq,
        input_ids: fx.input_ids.clone(),
        token_type_ids: fx.token_type_ids.clone(),
        attention_mask: fx.attention_mask.clone(),
        masked_positions: masked.iter().map(|m| m.0).collect(),
        masked_labels: masked.iter().map(|m| m.1).collect(),
    };
    // `device()` has no autodiff, so dropout is off, as in transformers' eval mode.
    let loss = scalar(Mlm::from_model(model, 0.0).forward(&batch, &device()).loss);
    eprintln!("MLM loss: ours {loss}, transformers {}", fx.loss);
    assert!((loss - f64::from(fx.loss)).abs() < 1e-4, "ours {loss}, transformers {}", fx.loss);
}

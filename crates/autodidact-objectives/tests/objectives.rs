//! Losses against PyTorch golden values and analytic cases, and the objective contract.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

#[path = "../../autodidact-models/tests/support/hf_fixture.rs"]
mod hf_fixture;

use autodidact_core::batch::{ClassificationBatch, ImageBatch, MlmBatch};
use autodidact_core::objective::Objective;
use autodidact_models::bert::{BertConfig, Pooling};
use autodidact_objectives::classify::SequenceClassifier;
use autodidact_objectives::simcse::{PairViews, SimCse};
use autodidact_models::heads::{ImageEncoderConfig, ProjectionHead};
use autodidact_models::mae::{Mae, MaeDecoderConfig, PatchMask};
use autodidact_models::resnet::ResNetConfig;
use autodidact_models::vit::{VitConfig, VitPool, patchify};
use autodidact_objectives::losses::{correct_count, cross_entropy, info_nce, mae_loss, nt_xent};
use autodidact_objectives::mae::MaskedAutoencoder;
use autodidact_objectives::simclr::SimClr;
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

/// `steps` AdamW steps on one batch; returns the objective and its first and last loss.
fn fit<O: Objective>(mut objective: O, batch: &O::Batch, lr: f64, steps: usize) -> (O, f64, f64) {
    let device = device().autodiff();
    let mut optimizer = AdamWConfig::new().init();
    let first = scalar(objective.forward(batch, &device).loss);
    let mut last = first;
    for _ in 0..steps {
        let out = objective.forward(batch, &device);
        last = scalar(out.loss.clone());
        let grads = GradientsParams::from_grads(out.loss.backward(), &objective);
        objective = optimizer.step(lr, objective, grads);
    }
    (objective, first, last)
}

/// The shared objective contract: a finite loss on a fresh model, a loss that falls when
/// fitting one tiny batch, and a finite evaluation loss without autodiff. Returns the first
/// and the last training loss.
fn objective_contract<O: Objective>(objective: O, batch: &O::Batch, lr: f64, steps: usize) -> (f64, f64) {
    let device = device().autodiff();
    let (objective, first, last) = fit(objective, batch, lr, steps);
    assert!(first.is_finite());
    assert!(last.is_finite());
    assert!(last < 0.5 * first, "loss fell only from {first} to {last}");
    let eval = scalar(objective.valid().forward(batch, &device.inner()).loss);
    assert!(eval.is_finite());
    (first, last)
}

#[test]
fn mlm_objective_loss_is_finite_and_falls() {
    let device = device().autodiff();
    device.seed(1);
    let (first, _) = objective_contract(Mlm::init(&tiny_bert(32), 0.0, &device), &tiny_batch(), 3e-3, 40);
    // A fresh model predicts close to uniformly: the loss starts near ln V.
    assert!((first - 32f64.ln()).abs() < 0.5, "{first}");
}

/// `eval_context_accuracy` counts only the targets the encoder saw replaced: its sum and count
/// equal the accuracy of the same batch restricted to those targets, and the rest of the
/// accuracy is that of the kept (copyable) targets.
#[test]
fn mlm_context_accuracy_counts_only_replaced_targets() {
    let mut batch = tiny_batch();
    for (i, &p) in batch.masked_positions.iter().enumerate() {
        if i % 3 == 0 {
            batch.input_ids[p as usize] = batch.masked_labels[i]; // kept, as BERT's 10%
        }
    }
    let replaced = batch.replaced_targets();
    assert!(replaced.iter().any(|&r| r) && replaced.iter().any(|&r| !r), "{replaced:?}");
    let dev = device().autodiff();
    dev.seed(3);
    let (trained, _, _) = fit(Mlm::init(&tiny_bert(32), 0.0, &dev), &batch, 3e-3, 40);
    let model = trained.valid();
    let metric = |b: &MlmBatch, name: &str| {
        let out = model.forward(b, &device());
        let m = out.metrics.into_iter().find(|m| m.name == name).unwrap();
        (scalar(m.sum), m.count)
    };
    let subset = |keep: bool| {
        let mut b = batch.clone();
        let chosen: Vec<usize> = (0..replaced.len()).filter(|&i| replaced[i] == keep).collect();
        b.masked_positions = chosen.iter().map(|&i| batch.masked_positions[i]).collect();
        b.masked_labels = chosen.iter().map(|&i| batch.masked_labels[i]).collect();
        b
    };
    let (all, all_n) = metric(&batch, "accuracy");
    let (context, context_n) = metric(&batch, "context_accuracy");
    let (replaced_hits, replaced_n) = metric(&subset(true), "accuracy");
    let (kept_hits, kept_n) = metric(&subset(false), "accuracy");
    assert_eq!((all_n, context_n), (replaced_n + kept_n, replaced_n));
    assert_eq!(context, replaced_hits);
    assert_eq!(all - context, kept_hits);
    // The fitted model gets some of each right, so the split is not trivially zero.
    assert!(context > 0.0 && kept_hits > 0.0, "context {context}, kept {kept_hits}");
}

/// Case D (`scripts/golden/info_nce.py`, torch 2.15.0):
///
/// ```python
/// z1 = [[sin(0.3 i + 0.7 j)]], z2 = [[cos(0.5 i - 0.2 j) + 0.1 j]], i < 4, j < 3
/// F.cross_entropy(F.normalize(z1) @ F.normalize(z2).T / tau, torch.arange(4))
/// # tau=0.1: 1.93581486   tau=0.05: 2.64278579
/// ```
#[test]
fn info_nce_matches_pytorch() {
    let z1 = logits(4, 3, |i, j| (0.3 * i as f64 + 0.7 * j as f64).sin());
    let z2 = logits(4, 3, |i, j| (0.5 * i as f64 - 0.2 * j as f64).cos() + 0.1 * j as f64);
    assert_close(scalar(info_nce(z1.clone(), z2.clone(), 0.1).0), 1.935_814_86);
    assert_close(scalar(info_nce(z1, z2, 0.05).0), 2.642_782_79);
}

/// Analytic case: identical, mutually orthogonal embeddings (scaled, to check the
/// normalization) give positives of similarity 1 and negatives of 0, so the loss is
/// `-ln(e^{1/τ} / (e^{1/τ} + N - 1))`.
#[test]
fn info_nce_of_identical_orthogonal_embeddings_is_analytic() {
    let (n, tau) = (4usize, 0.5f64);
    let z = logits(n, n, |i, j| if i == j { 3.0 + i as f64 } else { 0.0 });
    let expected = -((1.0 / tau).exp() / ((1.0 / tau).exp() + (n - 1) as f64)).ln();
    assert_close(scalar(info_nce(z.clone(), z, tau).0), expected);
}

/// Four sentences that differ only in their last token: a fresh encoder embeds them almost
/// identically, so SimCSE starts near chance (ln 4) and must learn to tell them apart.
fn tiny_sentences() -> MlmBatch {
    let (b, t) = (4, 12);
    let input_ids: Vec<u32> = (0..b * t).map(|i| if i % t == t - 1 { 5 + (i / t) as u32 } else { 10 + (i % t) as u32 }).collect();
    MlmBatch {
        batch_size: b,
        seq_len: t,
        input_ids,
        token_type_ids: vec![0; b * t],
        attention_mask: vec![1; b * t],
        masked_positions: Vec::new(),
        masked_labels: Vec::new(),
    }
}

#[test]
fn simcse_objective_loss_is_finite_and_falls() {
    let device = device().autodiff();
    device.seed(2);
    let config = BertConfig { hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1, ..tiny_bert(32) };
    let (first, _) = objective_contract(SimCse::new(config.init(&device), 0.05, Pooling::Mean, PairViews::Dropout), &tiny_sentences(), 1e-3, 30);
    assert!(first > 0.5 * 4f64.ln(), "{first}");
}

/// Crop views without dropout: the batch holds the four sentences, then four other pieces of
/// them (their tokens shifted by one position, a different last token), and each sentence
/// must find its own other piece.
#[test]
fn simcse_on_crop_views_loss_is_finite_and_falls() {
    let device = device().autodiff();
    device.seed(4);
    let config = BertConfig { hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0, ..tiny_bert(32) };
    let first = tiny_sentences();
    let (b, t) = (first.batch_size, first.seq_len);
    let mut input_ids = first.input_ids.clone();
    input_ids.extend(first.input_ids.chunks(t).flat_map(|row| row[1..].iter().copied().chain([row[t - 1] + 10])));
    let batch = MlmBatch { batch_size: 2 * b, input_ids, token_type_ids: vec![0; 2 * b * t], attention_mask: vec![1; 2 * b * t], ..first };
    let (first, _) = objective_contract(SimCse::new(config.init(&device), 0.05, Pooling::Mean, PairViews::Crops), &batch, 1e-3, 30);
    assert!(first > 0.5 * 4f64.ln(), "{first}");
}

#[test]
fn classifier_objective_loss_is_finite_and_falls() {
    let device = device().autodiff();
    device.seed(3);
    let mlm = tiny_batch();
    let batch = ClassificationBatch {
        batch_size: mlm.batch_size,
        seq_len: mlm.seq_len,
        input_ids: mlm.input_ids,
        token_type_ids: mlm.token_type_ids,
        attention_mask: mlm.attention_mask,
        labels: vec![0, 1, 2, 1],
    };
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let classifier = SequenceClassifier::new(tiny_bert(32).init(&device), 3, pooling, 0.0, false, &device);
        let (first, _) = objective_contract(classifier, &batch, 3e-3, 40);
        assert!((first - 3f64.ln()).abs() < 0.3, "{first}");
    }
}

/// A linear probe trains the classifier only: the frozen encoder's weights do not move.
#[test]
fn frozen_encoder_stays_fixed_while_the_head_learns() {
    let device = device().autodiff();
    device.seed(4);
    let mlm = tiny_batch();
    let batch = ClassificationBatch { batch_size: 4, seq_len: 12, input_ids: mlm.input_ids, token_type_ids: mlm.token_type_ids, attention_mask: mlm.attention_mask, labels: vec![0, 1, 2, 1] };
    let mut probe = SequenceClassifier::new(tiny_bert(32).init(&device), 3, Pooling::Mean, 0.0, true, &device);
    let values = |p: &SequenceClassifier| {
        let enc = p.bert.embeddings.word_embeddings.weight.val().into_data().try_into_vec::<f32>().unwrap();
        let head = p.classifier.weight.val().into_data().try_into_vec::<f32>().unwrap();
        (enc, head)
    };
    let (enc0, head0) = values(&probe);
    let mut optimizer = AdamWConfig::new().init();
    for _ in 0..3 {
        let loss = probe.forward(&batch, &device).loss;
        let grads = GradientsParams::from_grads(loss.backward(), &probe);
        probe = optimizer.step(1e-2, probe, grads);
    }
    let (enc1, head1) = values(&probe);
    assert_eq!(enc0, enc1, "the frozen encoder changed");
    assert_ne!(head0, head1, "the head did not learn");
}

/// Mean pooling averages real tokens only: padding does not move it.
#[test]
fn mean_pooling_ignores_padding() {
    use burn::tensor::Bool;
    let device = device();
    let hidden = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 100.0, 100.0], [1, 3, 2]), &device);
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true, true, false], [1, 2 + 1]), &device);
    let pooled = Pooling::Mean.pool(hidden.clone(), Some(mask)).into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(pooled, vec![2.0, 3.0]);
    let cls = Pooling::Cls.pool(hidden, None).into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(cls, vec![1.0, 2.0]);
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

/// NT-Xent inputs of `scripts/golden/nt_xent.py` (torch 2.15.0):
///
/// ```python
/// z1 = [[sin(0.3 i + 0.7 j)]], z2 = [[cos(0.5 i - 0.2 j) + 0.1 j]], i < 4, j < 3
/// z = F.normalize(torch.cat([z1, z2]));  sim = z @ z.T / tau;  sim.fill_diagonal_(-inf)
/// F.cross_entropy(sim, torch.cat([torch.arange(4, 8), torch.arange(0, 4)]))
/// # tau=0.5: 2.03157163   tau=0.1: 2.46761131
/// ```
#[test]
fn nt_xent_matches_pytorch() {
    let z1 = logits(4, 3, |i, j| (0.3 * i as f64 + 0.7 * j as f64).sin());
    let z2 = logits(4, 3, |i, j| (0.5 * i as f64 - 0.2 * j as f64).cos() + 0.1 * j as f64);
    assert_close(scalar(nt_xent(z1.clone(), z2.clone(), 0.5).0), 2.031_571_63);
    assert_close(scalar(nt_xent(z1, z2, 0.1).0), 2.467_611_31);
}

/// Analytic case: both views identical and the images' embeddings mutually orthogonal, so
/// each anchor's partner has similarity 1 and its `2N − 2` negatives 0:
/// `-ln(e^{1/τ} / (e^{1/τ} + 2N − 2))`. SimCSE's form would count only `N − 1` negatives.
#[test]
fn nt_xent_of_identical_orthogonal_views_is_analytic() {
    let (n, tau) = (4usize, 0.5f64);
    let z = logits(n, n, |i, j| if i == j { 2.0 + i as f64 } else { 0.0 });
    let expected = -((1.0 / tau).exp() / ((1.0 / tau).exp() + (2 * n - 2) as f64)).ln();
    assert_close(scalar(nt_xent(z.clone(), z, tau).0), expected);
}

fn mae_images(n: usize, c: usize) -> Tensor<4> {
    let v: Vec<f32> = (0..n * c * 16).map(|k| ((0.37 * k as f64 + 0.5).sin() * 2.0 + 0.25) as f32).collect();
    Tensor::from_data(TensorData::new(v, [n, c, 4, 4]), &device())
}

fn mae_pred(n: usize, dim: usize) -> Tensor<3> {
    let v: Vec<f32> = (0..n * 4 * dim).map(|k| (0.23 * k as f64 - 0.4).cos() as f32).collect();
    Tensor::from_data(TensorData::new(v, [n, 4, dim]), &device())
}

fn mask(v: &[f32], n: usize) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), [n, v.len() / n]), &device())
}

/// MAE loss of `scripts/golden/mae_loss.py` (the official `patchify` and `forward_loss`,
/// torch 2.15.0), 4×4 images, patch 2:
///
/// ```python
/// imgs.flat[k] = sin(0.37 k + 0.5) * 2 + 0.25;  pred.flat[k] = cos(0.23 k - 0.4)
/// # case A: N=2, C=1, mask [[1,0,1,0],[0,1,1,1]]: norm_pix 1.31035578, raw 2.69290018
/// # case B: N=1, C=3, mask [[0,1,0,1]]:            norm_pix 1.62460113, raw 3.05693078
/// ```
/// Case B has three channels, so it also pins the channel-last patch order.
#[test]
fn mae_loss_matches_pytorch() {
    let a = (patchify(mae_images(2, 1), 2), mae_pred(2, 4), mask(&[1., 0., 1., 0., 0., 1., 1., 1.], 2));
    assert_close(scalar(mae_loss(a.1.clone(), a.0.clone(), a.2.clone(), true)), 1.310_355_78);
    assert_close(scalar(mae_loss(a.1, a.0, a.2, false)), 2.692_900_18);
    let b = (patchify(mae_images(1, 3), 2), mae_pred(1, 12), mask(&[0., 1., 0., 1.], 1));
    assert_close(scalar(mae_loss(b.1.clone(), b.0.clone(), b.2.clone(), true)), 1.624_601_13);
    assert_close(scalar(mae_loss(b.1, b.0, b.2, false)), 3.056_930_78);
}

/// Oracle: a perfect prediction of the (normalized) targets has zero loss, and unmasked
/// patches do not count however wrong they are.
#[test]
fn mae_loss_reads_only_masked_patches() {
    let target = patchify(mae_images(1, 1), 2);
    let [_, l, p] = target.dims();
    let mean = target.clone().mean_dim(2);
    let centered = target.clone() - mean;
    let normalized = centered.clone() / ((centered.square().sum_dim(2) / (p - 1) as f64) + 1e-6).sqrt();
    let wrong_visible = normalized.clone() + mask(&[0., 100., 0., 100.], 1).reshape([1, l, 1]);
    assert!(scalar(mae_loss(wrong_visible, target, mask(&[1., 0., 1., 0.], 1), true)) < 1e-10);
}

#[test]
fn patch_mask_hides_the_requested_fraction() {
    let device = device();
    device.seed(3);
    let m = PatchMask::random(3, 16, 0.75, &device);
    let hidden = m.mask.clone().sum_dim(1).into_data().try_into_vec::<f32>().unwrap_or_default();
    assert_eq!(hidden, vec![12.0; 3]);
    // The kept patches are exactly the unmasked ones.
    let kept = m.mask.gather(1, m.keep).sum();
    assert_eq!(scalar(kept), 0.0);
}

fn tiny_resnet() -> ImageEncoderConfig {
    ImageEncoderConfig::Resnet(ResNetConfig { in_channels: 1, width: 4, blocks: vec![1, 1] })
}

/// Two views of four 8×8 images: view 1 is view 0 with a little deterministic noise, so a
/// fresh encoder already pairs them somewhat but must learn to separate the images.
fn tiny_views(n: usize, c: usize, side: usize) -> ImageBatch {
    let len = c * side * side;
    let base: Vec<f32> = (0..n * len).map(|k| ((k * 7919) % 23) as f32 / 23.0 - 0.5).collect();
    let noisy: Vec<f32> = base.iter().enumerate().map(|(k, v)| v + 0.05 * ((k as f32) * 1.3).sin()).collect();
    ImageBatch { batch_size: n, views: 2, channels: c, height: side, width: side, pixels: [base, noisy].concat(), labels: Vec::new() }
}

#[test]
fn simclr_objective_loss_is_finite_and_falls() {
    let device = device().autodiff();
    device.seed(5);
    let encoder = tiny_resnet();
    let head = ProjectionHead::new(encoder.feature_dim(), 16, 8, &device);
    let simclr = SimClr::new(encoder.init(&device).expect("valid config"), head, 0.5);
    let (first, last) = objective_contract(simclr, &tiny_views(4, 1, 8), 1e-2, 60);
    // A fresh encoder is near chance among the 2N − 1 = 7 candidates.
    assert!(first > 0.5 * 7f64.ln(), "{first} {last}");
}

#[test]
fn mae_objective_loss_is_finite_and_falls() {
    let device = device().autodiff();
    device.seed(6);
    let vit = VitConfig { image_size: 8, patch_size: 2, in_channels: 1, dim: 16, depth: 1, heads: 2, mlp_ratio: 2, pool: VitPool::Cls };
    let decoder = MaeDecoderConfig { dim: 8, depth: 1, heads: 2 };
    let mae = MaskedAutoencoder::new(Mae::init(&vit, &decoder, &device).expect("valid config"), 0.75, false);
    // The same smooth image four times: masked patches are predictable from their position.
    let image: Vec<f32> = (0..64).map(|k| ((k % 8) as f32 * 0.4).sin() + ((k / 8) as f32 * 0.3).cos()).collect();
    let batch = ImageBatch { batch_size: 4, views: 1, channels: 1, height: 8, width: 8, pixels: image.repeat(4), labels: Vec::new() };
    objective_contract(mae, &batch, 1e-2, 80);
}

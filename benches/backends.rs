//! Training-step throughput of burn's CPU backends (flex vs ndarray) on the quickstart model,
//! to choose the default backend. Interleaved repetitions, warm-up excluded, medians.
//!
//! ```text
//! cargo bench -p autodidact --bench backends            # quickstart shape
//! BENCH_STEPS=5 cargo bench -p autodidact --bench backends
//! ```

use std::time::Instant;

use autodidact::core::batch::MlmBatch;
use autodidact::core::objective::Objective;
use autodidact::models::bert::BertConfig;
use autodidact::objectives::mlm::Mlm;
use autodidact::burn::module::Module;
use autodidact::burn::optim::{AdamWConfig, GradientsParams};
use autodidact::burn::tensor::Device;

fn batch(seq: usize, rows: usize, vocab: u32, k: usize) -> MlmBatch {
    let n = seq * rows;
    let ids: Vec<u32> = (0..n).map(|i| 5 + ((i * 2654435761 + k * 97) % (vocab as usize - 5)) as u32).collect();
    let masked_positions: Vec<u32> = (0..n as u32).filter(|i| (i * 7 + k as u32) % 100 < 15).collect();
    let masked_labels = masked_positions.iter().map(|&p| ids[p as usize]).collect();
    let mut input_ids = ids;
    for &p in &masked_positions {
        input_ids[p as usize] = 4;
    }
    MlmBatch { batch_size: rows, seq_len: seq, token_type_ids: vec![0; n], attention_mask: vec![1; n], input_ids, masked_positions, masked_labels }
}

/// Seconds per training step (forward, backward, AdamW) on `device`.
fn time_steps(device: &Device, config: &BertConfig, batches: &[MlmBatch], steps: usize) -> Vec<f64> {
    let device = device.clone().autodiff();
    device.seed(0);
    let mut model = Mlm::init(config, 0.0, &device);
    let mut optim = AdamWConfig::new().init();
    let mut times = Vec::new();
    for s in 0..steps + 2 {
        let t = Instant::now();
        let out = model.forward(&batches[s % batches.len()], &device);
        let _ = out.loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let _ = model.num_params();
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let steps: usize = std::env::var("BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let (seq, rows, vocab) = (128, 32, 4096);
    let config = BertConfig {
        vocab_size: vocab as usize,
        hidden_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 512,
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        max_position_embeddings: seq,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
    };
    let batches: Vec<MlmBatch> = (0..4).map(|k| batch(seq, rows, vocab, k)).collect();
    #[allow(deprecated)]
    let backends = [("flex", Device::flex()), ("ndarray", Device::ndarray())];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
    for _round in 0..3 {
        for (i, (_, device)) in backends.iter().enumerate() {
            results[i].extend(time_steps(device, &config, &batches, steps));
        }
    }
    let tokens = (seq * rows) as f64;
    println!("MLM training step, BERT h128 L2 A4 ffn512, vocab {vocab}, batch {rows}x{seq}, {} threads", std::thread::available_parallelism().map_or(1, |n| n.get()));
    let base = median(results[0].clone());
    for ((name, _), times) in backends.iter().zip(results) {
        let m = median(times);
        println!("{name:>8}: {:7.1} ms/step  {:8.0} tokens/s  {:.2}x flex", m * 1e3, tokens / m, base / m);
    }
}

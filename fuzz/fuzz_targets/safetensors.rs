//! Any bytes as a weights file: as a transformers `model.safetensors` imported with
//! `model.init_from` (the seed is the tiny BERT fixture) and as an autodidact checkpoint's
//! `model.safetensors`. An error naming the file or loaded weights, never a panic.
#![no_main]

mod scratch;

use autodidact_models::bert::{BertConfig, BertForMaskedLM};
use autodidact_train::checkpoint::load_weights;
use burn::tensor::Device;
use libfuzzer_sys::fuzz_target;

/// The shape of `crates/autodidact-models/tests/fixtures/hf-bert-tiny`.
fn config() -> BertConfig {
    BertConfig {
        vocab_size: 136,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 37,
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        max_position_embeddings: 40,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-3,
    }
}

fuzz_target!(|data: &[u8]| {
    let path = scratch::file("model.safetensors", data);
    let device = Device::flex();
    let _ = autodidact_models::hf::load_weights(BertForMaskedLM::init(&config(), &device), &path);
    let mut model = BertForMaskedLM::init(&config(), &device);
    let _ = load_weights(&path, &mut model);
});

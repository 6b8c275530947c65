//! Any bytes as a checkpoint's `model.safetensors` for a small BERT: an error naming the
//! file or loaded weights, never a panic.
#![no_main]

mod scratch;

use autodidact_models::bert::BertConfig;
use autodidact_train::checkpoint::load_weights;
use burn::tensor::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch::file("model.safetensors", data);
    let config = BertConfig {
        vocab_size: 16,
        hidden_size: 4,
        num_hidden_layers: 1,
        num_attention_heads: 1,
        intermediate_size: 8,
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        max_position_embeddings: 8,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
    };
    let mut model = config.init(&Device::flex());
    let _ = load_weights(&path, &mut model);
});

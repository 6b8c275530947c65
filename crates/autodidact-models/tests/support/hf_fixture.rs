//! The HuggingFace BERT parity fixture written by `scripts/golden/hf_bert_fixture.py`
//! (transformers 5.24, torch 2.15): a tiny random `BertForMaskedLM` saved with
//! `save_pretrained`, a padded batch of sentence pairs with masked tokens, and what
//! transformers computes for it. Shared by the tests of several crates (`#[path]`).
#![allow(dead_code)]

use std::path::PathBuf;

/// The fixture's inputs and transformers' outputs.
pub struct HfFixture {
    pub dir: PathBuf,
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
    pub attention_mask: Vec<u8>,
    /// `-100` where no prediction is scored.
    pub labels: Vec<i64>,
    /// `[batch, seq, hidden]`.
    pub last_hidden_state: Vec<f32>,
    /// `[batch, seq, vocab]`.
    pub logits: Vec<f32>,
    pub loss: f32,
}

/// The fixture's directory, from this crate's directory as cargo gives it to the running
/// tests (else as compiled in, which in a binary reused from another checkout's build names
/// that checkout: see `crate_dir` in autodidact-data's tests).
pub fn fixture_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from).join("../autodidact-models/tests/fixtures/hf-bert-tiny")
}

fn le<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect()
}

pub fn load() -> HfFixture {
    let dir = fixture_dir();
    let bytes = std::fs::read(dir.join("expected.safetensors")).expect("fixture present");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let ints = |name: &str| le(st.tensor(name).expect(name).data(), i64::from_le_bytes);
    let floats = |name: &str| le(st.tensor(name).expect(name).data(), f32::from_le_bytes);
    let shape = st.tensor("input_ids").expect("input_ids").shape().to_vec();
    HfFixture {
        batch: shape[0],
        seq: shape[1],
        input_ids: ints("input_ids").into_iter().map(|v| v as u32).collect(),
        token_type_ids: ints("token_type_ids").into_iter().map(|v| v as u32).collect(),
        attention_mask: ints("attention_mask").into_iter().map(|v| v as u8).collect(),
        labels: ints("labels"),
        last_hidden_state: floats("last_hidden_state"),
        logits: floats("logits"),
        loss: floats("loss")[0],
        dir,
    }
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

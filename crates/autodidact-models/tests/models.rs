//! BERT against HuggingFace transformers: logit parity on a transformers-saved checkpoint,
//! bit-exact export/import round trips, and clear errors for checkpoints that do not fit.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

#[path = "support/cpu_kernels.rs"]
mod cpu_kernels;
#[path = "support/hf_fixture.rs"]
mod hf_fixture;

use std::path::Path;

use autodidact_models::bert::{BertConfig, BertForMaskedLM, BertInput};
use autodidact_models::hf::{self, HfArchitecture};
use autodidact_models::ModelError;
use burn::tensor::Device;
use hf_fixture::{fixture_dir, max_abs_diff};

fn device() -> Device {
    Device::flex()
}

fn imported() -> (BertConfig, BertForMaskedLM, hf::ImportReport) {
    let dir = fixture_dir();
    let config = hf::read_config(&dir).expect("fixture config");
    let model = BertForMaskedLM::init(&config, &device());
    let (model, report) = hf::load_weights(model, &hf::weights_path(&dir).expect("weights")).expect("fixture loads");
    (config, model, report)
}

fn floats(t: burn::tensor::Tensor<3>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

#[test]
fn config_json_is_read_with_its_fields() {
    let config = hf::read_config(&fixture_dir()).expect("fixture config");
    assert_eq!((config.vocab_size, config.hidden_size, config.intermediate_size), (136, 32, 37));
    assert_eq!((config.num_hidden_layers, config.num_attention_heads, config.max_position_embeddings), (2, 4, 40));
    assert_eq!(config.layer_norm_eps, 1e-3);
}

#[test]
fn transformers_checkpoint_gives_transformers_logits() {
    let fx = hf_fixture::load();
    let (config, model, report) = imported();
    assert_eq!(report.architecture, HfArchitecture::BertForMaskedLM);
    assert!(report.initialized.is_empty() && report.ignored.is_empty(), "{report:?}");
    let input = || BertInput::from_host(&fx.input_ids, &fx.token_type_ids, &fx.attention_mask, fx.batch, fx.seq, &device());

    let hidden = floats(model.bert.forward(input()));
    let d_hidden = max_abs_diff(&hidden, &fx.last_hidden_state);
    assert!(d_hidden < 1e-4, "hidden states differ by {d_hidden}");
    let logits = floats(model.forward(input()));
    assert_eq!(logits.len(), fx.batch * fx.seq * config.vocab_size);
    let d_logits = max_abs_diff(&logits, &fx.logits);
    eprintln!("max |ours - transformers|: hidden {d_hidden:.2e}, logits {d_logits:.2e}");
    assert!(d_logits < 1e-4, "logits differ by {d_logits}");
}

/// Every tensor transformers saved comes back out of our export under the same name, shape,
/// dtype and bytes.
#[test]
fn export_reproduces_the_transformers_file() {
    let (_, model, _) = imported();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("model.safetensors");
    hf::save_weights(&model, HfArchitecture::BertForMaskedLM, &out).expect("export");
    let theirs = std::fs::read(fixture_dir().join("model.safetensors")).expect("read");
    let ours = std::fs::read(&out).expect("read");
    let (theirs, ours) = (safetensors::SafeTensors::deserialize(&theirs).expect("theirs"), safetensors::SafeTensors::deserialize(&ours).expect("ours"));
    let mut names = ours.names();
    names.sort();
    let mut expected = theirs.names();
    expected.sort();
    assert_eq!(names, expected);
    for name in names {
        let (a, b) = (ours.tensor(name).expect("ours"), theirs.tensor(name).expect("theirs"));
        assert_eq!((a.dtype(), a.shape()), (b.dtype(), b.shape()), "{name}");
        assert!(a.data() == b.data(), "{name}: values differ");
    }
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&std::fs::read(&out).expect("read")).expect("header");
    assert_eq!(metadata.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
}

#[test]
fn masked_lm_round_trip_is_bit_exact() {
    let config = hf::read_config(&fixture_dir()).expect("config");
    device().seed(1);
    let original = BertForMaskedLM::init(&config, &device());
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("model.safetensors");
    hf::save_weights(&original, HfArchitecture::BertForMaskedLM, &path).expect("export");
    device().seed(2);
    let fresh = BertForMaskedLM::init(&config, &device());
    assert!(!hf::differing_tensors(&original, &fresh).is_empty(), "different seeds must give different weights");
    let (back, report) = hf::load_weights(fresh, &path).expect("import");
    assert_eq!(hf::differing_tensors(&original, &back), Vec::<String>::new());
    assert!(report.initialized.is_empty());
}

/// A bare `BertModel` file loads into the encoder; the MLM head is reported as initialized
/// and its decoder is the loaded word-embedding table.
#[test]
fn bare_encoder_round_trip_initializes_the_head() {
    let (config, model, _) = imported();
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("model.safetensors");
    hf::save_weights(&model, HfArchitecture::BertModel, &path).expect("export");
    let bytes = std::fs::read(&path).expect("read");
    let names = safetensors::SafeTensors::deserialize(&bytes).expect("st").names().into_iter().map(str::to_string).collect::<Vec<_>>();
    assert!(names.iter().all(|n| n.starts_with("embeddings.") || n.starts_with("encoder.")), "{names:?}");

    let (back, report) = hf::load_weights(BertForMaskedLM::init(&config, &device()), &path).expect("import");
    assert_eq!(report.architecture, HfArchitecture::BertModel);
    let mut initialized = report.initialized.clone();
    initialized.sort();
    assert_eq!(initialized, ["cls.predictions.bias", "cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.dense.bias", "cls.predictions.transform.dense.weight"]);
    let differing = hf::differing_tensors(&model, &back);
    assert!(!differing.is_empty() && differing.iter().all(|n| n.starts_with("cls.")), "{differing:?}");
}

fn write_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture_dir().join("config.json")).expect("read")).expect("json");
    edit(&mut json);
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&json).expect("json")).expect("write");
}

#[test]
fn unsupported_configs_name_the_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (field, value) in [("hidden_act", "\"relu\""), ("model_type", "\"roberta\""), ("position_embedding_type", "\"relative_key\""), ("num_attention_heads", "5")] {
        write_config(tmp.path(), |j| j[field] = serde_json::from_str(value).expect("value"));
        let err = hf::read_config(tmp.path()).expect_err(field).to_string();
        assert!(err.contains("config.json") && err.contains(field), "{err}");
    }
    std::fs::write(tmp.path().join("config.json"), b"{ not json").expect("write");
    assert!(matches!(hf::read_config(tmp.path()), Err(ModelError::HfConfig { .. })));
}

#[test]
fn weights_that_do_not_fit_list_the_tensors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A model of another width: every tensor is mis-shaped, and the error says which.
    write_config(tmp.path(), |j| {
        j["hidden_size"] = 16.into();
        j["num_attention_heads"] = 2.into();
    });
    let config = hf::read_config(tmp.path()).expect("config");
    let weights = fixture_dir().join("model.safetensors");
    let err = hf::load_weights(BertForMaskedLM::init(&config, &device()), &weights).expect_err("misfit").to_string();
    assert!(err.contains("bert.embeddings.word_embeddings.weight: shape [136, 32] in the file, the model (config.json) needs [136, 16]"), "{err}");
    assert!(err.contains("more)"), "long lists are cut: {err}");

    // One layer fewer: the file has tensors the model does not.
    write_config(tmp.path(), |j| j["num_hidden_layers"] = 1.into());
    let config = hf::read_config(tmp.path()).expect("config");
    let err = hf::load_weights(BertForMaskedLM::init(&config, &device()), &weights).expect_err("extra layer").to_string();
    assert!(err.contains("unexpected tensor bert.encoder.layer.1.attention.self.query.weight"), "{err}");
}

#[test]
fn damaged_or_absent_weights_are_reported() {
    let (config, _, _) = imported();
    let tmp = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).expect("read");
    let path = tmp.path().join("model.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).expect("write");
    let err = hf::load_weights(BertForMaskedLM::init(&config, &device()), &path).expect_err("truncated").to_string();
    assert!(err.contains("model.safetensors") && err.contains("truncated"), "{err}");
    std::fs::write(&path, b"PK\x03\x04 a zip file").expect("write");
    let err = hf::load_weights(BertForMaskedLM::init(&config, &device()), &path).expect_err("not safetensors").to_string();
    assert!(err.contains("not a safetensors file"), "{err}");

    let empty = tempfile::tempdir().expect("tempdir");
    std::fs::write(empty.path().join("pytorch_model.bin"), b"").expect("write");
    let err = hf::weights_path(empty.path()).expect_err("no safetensors").to_string();
    assert!(err.contains("safe_serialization=True"), "{err}");
}

/// A bare `BertModel` saved by transformers (pooler included) loads into the encoder: the
/// pooler is reported unused, the MLM head initialized, and the hidden states are
/// transformers' own.
#[test]
fn transformers_bert_model_loads_as_the_encoder() {
    let fx = hf_fixture::load();
    let dir = fixture_dir().with_file_name("hf-bert-tiny-encoder");
    let config = hf::read_config(&dir).expect("config");
    let (model, report) = hf::load_weights(BertForMaskedLM::init(&config, &device()), &hf::weights_path(&dir).expect("weights")).expect("loads");
    assert_eq!(report.architecture, HfArchitecture::BertModel);
    assert_eq!(report.ignored, ["pooler.dense.bias", "pooler.dense.weight"]);
    assert_eq!(report.initialized.len(), 5, "{report:?}");
    let hidden = floats(model.bert.forward(BertInput::from_host(&fx.input_ids, &fx.token_type_ids, &fx.attention_mask, fx.batch, fx.seq, &device())));
    let d = max_abs_diff(&hidden, &fx.last_hidden_state);
    assert!(d < 1e-4, "hidden states differ by {d}");
}

/// Half-precision checkpoints (common on the Hub) are cast to f32 on load.
#[test]
fn bf16_checkpoints_are_cast_to_f32() {
    use burn::tensor::bf16;
    let fx = hf_fixture::load();
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data().chunks_exact(4).flat_map(|c| bf16::from_f32(f32::from_le_bytes(c.try_into().expect("4 bytes"))).to_le_bytes()).collect();
            (name, view.shape().to_vec(), data)
        })
        .collect();
    let views = converted.iter().map(|(n, shape, data)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), data).expect("view")));
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("model.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).expect("serialize")).expect("write");

    let config = hf::read_config(&fixture_dir()).expect("config");
    let (model, _) = hf::load_weights(BertForMaskedLM::init(&config, &device()), &path).expect("bf16 loads");
    let logits = floats(model.forward(BertInput::from_host(&fx.input_ids, &fx.token_type_ids, &fx.attention_mask, fx.batch, fx.seq, &device())));
    // bf16 keeps 8 bits of mantissa: close to, not equal to, the f32 logits.
    let d = max_abs_diff(&logits, &fx.logits);
    assert!(d > 1e-6 && d < 0.1, "bf16 logits differ by {d}");
}

#[test]
fn vit_features_are_the_class_token_or_the_patch_mean() {
    use autodidact_models::vit::{VitConfig, VitPool};
    use burn::tensor::{Tensor, TensorData};
    let device = device();
    let pixels: Vec<f32> = (0..2 * 64).map(|k| (k as f32 * 0.37).sin()).collect();
    let images = Tensor::<4>::from_data(TensorData::new(pixels, [2, 1, 8, 8]), &device);
    for pool in [VitPool::Cls, VitPool::Mean] {
        let vit = VitConfig { image_size: 8, patch_size: 4, in_channels: 1, dim: 8, depth: 1, heads: 2, mlp_ratio: 2, pool }.init(&device);
        // [2 images, class token + 4 patches, 8]
        let tokens = vit.encode_tokens(vit.embed_patches(images.clone(), None)).into_data().try_to_vec::<f32>().unwrap();
        let token = |i: usize, t: usize, d: usize| tokens[(i * 5 + t) * 8 + d];
        let got = vit.forward(images.clone()).into_data().try_to_vec::<f32>().unwrap();
        for (i, d) in (0..2).flat_map(|i| (0..8).map(move |d| (i, d))) {
            let expected = match pool {
                VitPool::Cls => token(i, 0, d),
                VitPool::Mean => (1..5).map(|t| token(i, t, d)).sum::<f32>() / 4.0,
            };
            assert!((got[i * 8 + d] - expected).abs() < 1e-5, "{pool:?}, image {i}, dim {d}: {} vs {expected}", got[i * 8 + d]);
        }
    }
}

/// MAE embeds only the visible patches: `embed_patches` with `keep` gives the rows of the
/// full embedding that `keep` names, position embeddings included.
#[test]
fn vit_embeds_only_the_kept_patches() {
    use autodidact_models::vit::{VitConfig, VitPool};
    use burn::tensor::{Int, Tensor, TensorData};
    let device = device();
    let pixels: Vec<f32> = (0..2 * 64).map(|k| (k as f32 * 0.53).cos()).collect();
    let images = Tensor::<4>::from_data(TensorData::new(pixels, [2, 1, 8, 8]), &device);
    let vit = VitConfig { image_size: 8, patch_size: 4, in_channels: 1, dim: 8, depth: 1, heads: 2, mlp_ratio: 2, pool: VitPool::Cls }.init(&device);
    let keep = [[3usize, 0], [1, 2]];
    let index = Tensor::<2, Int>::from_data(TensorData::new(keep.iter().flatten().map(|&i| i as i64).collect::<Vec<_>>(), [2, 2]), &device);
    let all = vit.embed_patches(images.clone(), None).into_data().try_to_vec::<f32>().unwrap(); // [2, 4, 8]
    let some = vit.embed_patches(images, Some(index)).into_data().try_to_vec::<f32>().unwrap(); // [2, 2, 8]
    for (b, j, d) in (0..2).flat_map(|b| (0..2).flat_map(move |j| (0..8).map(move |d| (b, j, d)))) {
        let expected = all[(b * 4 + keep[b][j]) * 8 + d];
        assert!((some[(b * 2 + j) * 8 + d] - expected).abs() < 1e-5, "image {b}, kept {j}, dim {d}");
    }
}

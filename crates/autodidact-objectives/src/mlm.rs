//! Masked language modelling (Devlin et al. 2019, §3.1, "Task #1: Masked LM").

use autodidact_core::batch::MlmBatch;
use autodidact_core::objective::{MetricSum, Objective, ObjectiveOutput};
use autodidact_models::bert::{BertConfig, BertForMaskedLM, BertInput};
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::losses::{cross_entropy, hits};

/// MLM: a BERT encoder with its tied MLM head, trained to recover masked tokens.
#[derive(Module, Debug)]
pub struct Mlm {
    /// Encoder and head.
    pub model: BertForMaskedLM,
    label_smoothing: f64,
}

impl Mlm {
    /// A freshly initialized model.
    pub fn init(config: &BertConfig, label_smoothing: f64, device: &Device) -> Self {
        Self { model: BertForMaskedLM::init(config, device), label_smoothing }
    }

    /// Wraps an existing model.
    pub fn from_model(model: BertForMaskedLM, label_smoothing: f64) -> Self {
        Self { model, label_smoothing }
    }
}

fn ints(values: &[u32], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(), [values.len()]), device)
}

impl Objective for Mlm {
    type Batch = MlmBatch;

    fn name(&self) -> &'static str {
        "mlm"
    }

    fn forward(&self, batch: &MlmBatch, device: &Device) -> ObjectiveOutput {
        let input = BertInput::from_host(&batch.input_ids, &batch.token_type_ids, &batch.attention_mask, batch.batch_size, batch.seq_len, device);
        let labels = ints(&batch.masked_labels, device);
        let logits = self.model.forward_masked(input, ints(&batch.masked_positions, device)); // (M, V)
        let hits = hits(logits.clone().detach(), labels.clone());
        let replaced = batch.replaced_targets();
        let weights = Tensor::<1>::from_data(TensorData::new(replaced.iter().map(|&r| f32::from(u8::from(r))).collect::<Vec<_>>(), [replaced.len()]), device);
        let targets = batch.num_masked();
        ObjectiveOutput {
            loss: cross_entropy(logits, labels, self.label_smoothing),
            targets,
            metrics: vec![
                MetricSum { name: "accuracy", sum: hits.clone().sum(), count: targets },
                // Targets the encoder saw replaced ([MASK] or a random token): only context
                // tells what they were. The others (10% by default) can be copied.
                MetricSum { name: "context_accuracy", sum: (hits * weights).sum(), count: replaced.iter().filter(|&&r| r).count() },
            ],
        }
    }

    fn derived_metrics(&self, loss: f64) -> Vec<(&'static str, f64)> {
        vec![("perplexity", loss.exp())]
    }
}

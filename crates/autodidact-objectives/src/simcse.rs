//! Unsupervised SimCSE (Gao et al. 2021): a sentence encoded twice, with dropout as the only
//! augmentation, must be told apart from the other sentences of the batch.

use autodidact_core::batch::MlmBatch;
use autodidact_core::objective::{MetricSum, Objective, ObjectiveOutput};
use autodidact_models::bert::{BertInput, BertModel, Pooling};
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use crate::losses::{correct_count, info_nce};

/// SimCSE on a BERT encoder. Batches are token sequences (an [`MlmBatch`] whose masked
/// targets are empty and ignored).
#[derive(Module, Debug)]
pub struct SimCse {
    /// The encoder (checkpoint prefix `bert.`).
    pub bert: BertModel,
    temperature: f64,
    #[module(skip)]
    pooling: Pooling,
}

impl SimCse {
    /// Wraps an encoder. The encoder's dropout is the augmentation, so it must be non-zero.
    pub fn new(bert: BertModel, temperature: f64, pooling: Pooling) -> Self {
        Self { bert, temperature, pooling }
    }

    fn embed(&self, batch: &MlmBatch, device: &Device) -> Tensor<2> {
        let input = BertInput::from_host(&batch.input_ids, &batch.token_type_ids, &batch.attention_mask, batch.batch_size, batch.seq_len, device);
        let mask = input.attention_mask.clone();
        self.pooling.pool(self.bert.forward(input), mask)
    }
}

impl Objective for SimCse {
    type Batch = MlmBatch;

    fn name(&self) -> &'static str {
        "simcse"
    }

    /// Two forward passes draw two dropout masks: the two views of each sentence.
    fn forward(&self, batch: &MlmBatch, device: &Device) -> ObjectiveOutput {
        let (z1, z2) = (self.embed(batch, device), self.embed(batch, device));
        let (loss, logits) = info_nce(z1, z2, self.temperature);
        let n = batch.batch_size;
        let labels = Tensor::<1, Int>::arange(0..n as i64, device);
        ObjectiveOutput {
            loss,
            targets: n,
            // How often a sentence's nearest neighbour in the batch is its other view.
            metrics: vec![MetricSum { name: "retrieval_accuracy", sum: correct_count(logits.detach(), labels) }],
        }
    }
}

//! Unsupervised SimCSE (Gao et al. 2021): a sentence encoded twice, with dropout as the only
//! augmentation, must be told apart from the other sentences of the batch. With
//! [`PairViews::Crops`] the two views are instead two crops of the same document (the
//! independent cropping of Izacard et al. 2022), the rest unchanged.

use autodidact_core::batch::MlmBatch;
use autodidact_core::objective::{MetricSum, Objective, ObjectiveOutput};
use autodidact_models::bert::{BertInput, BertModel, Pooling};
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::losses::{correct_count, info_nce};

/// Where the two views of an example come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairViews {
    /// Each sequence of the batch encoded twice: two dropout masks (Gao et al. 2021).
    #[default]
    Dropout,
    /// The batch holds `2N` rows, the second views of the `N` examples after the first
    /// (two crops of one document, `autodidact_data::mlm::CropViews`), each encoded once.
    Crops,
}

/// SimCSE on a BERT encoder. Batches are token sequences (an [`MlmBatch`] whose masked
/// targets are empty and ignored).
#[derive(Module, Debug)]
pub struct SimCse {
    /// The encoder (checkpoint prefix `bert.`).
    pub bert: BertModel,
    temperature: f64,
    #[module(skip)]
    pooling: Pooling,
    #[module(skip)]
    views: PairViews,
}

impl SimCse {
    /// Wraps an encoder. With [`PairViews::Dropout`] the encoder's dropout is the
    /// augmentation, so it must be non-zero.
    pub fn new(bert: BertModel, temperature: f64, pooling: Pooling, views: PairViews) -> Self {
        Self { bert, temperature, pooling, views }
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

    /// Dropout views: two forward passes draw two dropout masks. Crop views: one forward
    /// pass over both halves of the batch.
    fn forward(&self, batch: &MlmBatch, device: &Device) -> ObjectiveOutput {
        let (z1, z2, n) = match self.views {
            PairViews::Dropout => (self.embed(batch, device), self.embed(batch, device), batch.batch_size),
            PairViews::Crops => {
                let n = batch.batch_size / 2;
                let z = self.embed(batch, device);
                (z.clone().slice(0..n), z.slice(n..2 * n), n)
            }
        };
        let (loss, logits) = info_nce(z1, z2, self.temperature);
        let labels = Tensor::<1, Int>::arange(0..n as i64, device);
        ObjectiveOutput {
            loss,
            targets: n,
            // How often an example's nearest neighbour in the batch is its other view.
            metrics: vec![MetricSum { name: "retrieval_accuracy", sum: correct_count(logits.detach(), labels), count: n }],
        }
    }
}

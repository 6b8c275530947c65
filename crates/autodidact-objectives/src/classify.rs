//! Sequence classification on a (pre)trained encoder: fine-tuning, or a linear probe on
//! frozen features (BERT, Devlin et al. 2019, §4.1).

use autodidact_core::batch::ClassificationBatch;
use autodidact_core::objective::{MetricSum, Objective, ObjectiveOutput};
use autodidact_models::bert::{BertInput, BertModel, Pooling};
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::losses::{correct_count, cross_entropy};

/// An encoder, a pooling, dropout and a linear classifier.
#[derive(Module, Debug)]
pub struct SequenceClassifier {
    /// The encoder (checkpoint prefix `bert.`).
    pub bert: BertModel,
    /// `hidden → classes`.
    pub classifier: Linear,
    dropout: Dropout,
    #[module(skip)]
    pooling: Pooling,
}

impl SequenceClassifier {
    /// A new head (N(0, 0.02) weights, zero bias, as HF initializes it) on `bert`. With
    /// `freeze_encoder` (a linear probe) the encoder is frozen with burn's `Module::freeze`:
    /// its parameters take no gradients and its dropout is off, so autodiff records nothing
    /// for it (merely detaching its output would leave every step's encoder graph behind).
    pub fn new(bert: BertModel, num_classes: usize, pooling: Pooling, dropout: f64, freeze_encoder: bool, device: &Device) -> Self {
        let bert = if freeze_encoder { bert.freeze() } else { bert };
        let classifier = LinearConfig::new(bert.hidden_size(), num_classes)
            .with_initializer(burn::nn::Initializer::Normal { mean: 0.0, std: 0.02 })
            .init(device);
        Self { bert, classifier, dropout: DropoutConfig::new(dropout).init(), pooling }
    }

    /// The pooled sequence representation.
    ///
    /// # Shapes
    /// - output: `[batch, hidden]`
    pub fn features(&self, batch: &ClassificationBatch, device: &Device) -> Tensor<2> {
        let input = BertInput::from_host(&batch.input_ids, &batch.token_type_ids, &batch.attention_mask, batch.batch_size, batch.seq_len, device);
        let mask = input.attention_mask.clone();
        self.pooling.pool(self.bert.forward(input), mask)
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - output: `[batch, classes]`
    pub fn logits(&self, batch: &ClassificationBatch, device: &Device) -> Tensor<2> {
        self.classifier.forward(self.dropout.forward(self.features(batch, device)))
    }

    /// Arg-max class of each sequence.
    pub fn predict(&self, batch: &ClassificationBatch, device: &Device) -> Vec<u32> {
        let n = batch.batch_size;
        let classes = self.logits(batch, device).argmax(1).reshape([n]);
        classes.into_data().try_into_vec_as::<i64>().unwrap_or_default().into_iter().map(|c| c as u32).collect()
    }
}

impl Objective for SequenceClassifier {
    type Batch = ClassificationBatch;

    fn name(&self) -> &'static str {
        "classification"
    }

    fn forward(&self, batch: &ClassificationBatch, device: &Device) -> ObjectiveOutput {
        let n = batch.batch_size;
        let labels = Tensor::<1, Int>::from_data(TensorData::new(batch.labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>(), [n]), device);
        let logits = self.logits(batch, device);
        let correct = correct_count(logits.clone().detach(), labels.clone());
        ObjectiveOutput { loss: cross_entropy(logits, labels, 0.0), targets: n, metrics: vec![MetricSum { name: "accuracy", sum: correct, count: n }] }
    }
}

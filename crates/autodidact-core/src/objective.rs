//! The contract between the trainer and a self-supervised method.
//!
//! An objective is a burn [`Module`] (its parameters are what the optimizer updates) that
//! turns one batch into a differentiable loss plus metric sums. The trainer knows nothing
//! else about it: adding a method is one objective type plus one config variant.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

/// A quantity summed over some of the targets of a batch; evaluation divides the sums of all
/// batches by the number of targets they are over.
#[derive(Debug, Clone)]
pub struct MetricSum {
    /// Name as logged (`eval_<name>` in `metrics.jsonl`).
    pub name: &'static str,
    /// Sum over `count` of the batch's targets, a scalar tensor (read only at evaluation).
    pub sum: Tensor<1>,
    /// Number of targets summed: all of them for most metrics.
    pub count: usize,
}

/// What an objective returns for one batch.
#[derive(Debug, Clone)]
pub struct ObjectiveOutput {
    /// Mean loss over the batch's targets: the tensor to differentiate.
    pub loss: Tensor<1>,
    /// Number of targets the mean is over (masked tokens, views, ...), to weight batches.
    pub targets: usize,
    /// Metric sums over the same targets.
    pub metrics: Vec<MetricSum>,
}

/// Size of a batch, for throughput figures.
pub trait BatchSize {
    /// Examples (sequences, images) in the batch.
    fn examples(&self) -> usize;
    /// Tokens in the batch, for text; 0 otherwise.
    fn tokens(&self) -> usize {
        0
    }
}

impl BatchSize for crate::batch::MlmBatch {
    fn examples(&self) -> usize {
        self.batch_size
    }
    fn tokens(&self) -> usize {
        self.num_tokens()
    }
}

impl BatchSize for crate::batch::ClassificationBatch {
    fn examples(&self) -> usize {
        self.batch_size
    }
    fn tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }
}

impl BatchSize for crate::batch::ImageBatch {
    fn examples(&self) -> usize {
        self.batch_size
    }
}

/// A self-supervised training objective: encoder + head + loss.
pub trait Objective: Module + 'static {
    /// The host-side batch this objective consumes.
    type Batch: BatchSize + Send + 'static;

    /// Short name (`"mlm"`, `"simclr"`, ...), recorded in summaries.
    fn name(&self) -> &'static str;

    /// Loss and metrics for one batch. Called on the autodiff device when training and on
    /// [`Module::valid`] copies when evaluating; dropout follows from that.
    fn forward(&self, batch: &Self::Batch, device: &Device) -> ObjectiveOutput;

    /// Figures derived from the aggregated evaluation (e.g. perplexity from the loss).
    /// `loss` is the target-weighted mean evaluation loss.
    fn derived_metrics(&self, loss: f64) -> Vec<(&'static str, f64)> {
        let _ = loss;
        Vec::new()
    }
}

/// A deterministic stream of batches: training batch `k` is a pure function of `k` (and the
/// run seed), so the data position of a run is its step count and resuming needs no state.
pub trait BatchStream: Send + 'static {
    /// The batch type.
    type Batch: BatchSize + Send + 'static;
    /// The `k`-th training micro-batch of the run.
    ///
    /// # Errors
    /// Data that can no longer be read (a shard file changed or vanished under the run), as
    /// a message naming the file.
    fn train_batch(&mut self, k: u64) -> Result<Self::Batch, String>;
    /// The fixed evaluation batches (the same at every evaluation).
    ///
    /// # Errors
    /// As [`BatchStream::train_batch`].
    fn eval_batches(&self) -> Result<Vec<Self::Batch>, String>;
}

//! SimCLR (Chen et al. 2020): two augmented views of each image, an encoder and a projection
//! head, NT-Xent over the other `2N − 2` views of the batch as negatives.

use autodidact_core::batch::ImageBatch;
use autodidact_core::objective::{MetricSum, Objective, ObjectiveOutput};
use autodidact_models::heads::{ImageEncoder, ProjectionHead};
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::image::{ImageFeatures, images_tensor};
use crate::losses::{correct_count, nt_xent, nt_xent_labels};

/// Encoder + projection head + NT-Xent.
#[derive(Module, Debug)]
pub struct SimClr {
    /// The encoder f(·) kept after pretraining (checkpoint prefix `encoder.`).
    pub encoder: ImageEncoder,
    /// The projection head g(·), discarded after pretraining.
    pub projection: ProjectionHead,
    temperature: f64,
}

impl SimClr {
    /// Composes an encoder and a head with the loss temperature (SimCLR: 0.5 for CIFAR-size
    /// images at batch 256–1024, 0.1–0.2 for larger batches).
    pub fn new(encoder: ImageEncoder, projection: ProjectionHead, temperature: f64) -> Self {
        Self { encoder, projection, temperature }
    }
}

impl ImageFeatures for SimClr {
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.encoder.forward(images)
    }
}

impl Objective for SimClr {
    type Batch = ImageBatch;

    fn name(&self) -> &'static str {
        "simclr"
    }

    /// Both views go through the encoder in one batch of `2N`, so BatchNorm statistics span
    /// both (as in lightly and solo-learn on a single device).
    fn forward(&self, batch: &ImageBatch, device: &Device) -> ObjectiveOutput {
        assert!(batch.views == 2, "SimCLR needs two views per image, the batch has {}", batch.views);
        let n = batch.batch_size;
        let z = self.projection.forward(self.encoder.forward(images_tensor(batch, device)));
        let [_, d] = z.dims();
        let (loss, logits) = nt_xent(z.clone().slice([0..n, 0..d]), z.slice([n..2 * n, 0..d]), self.temperature);
        ObjectiveOutput {
            loss,
            targets: 2 * n,
            // How often a view's nearest neighbour among the other 2N − 1 is its partner.
            metrics: vec![MetricSum { name: "retrieval_accuracy", sum: correct_count(logits.detach(), nt_xent_labels(n, device)), count: 2 * n }],
        }
    }
}

//! Masked autoencoding of images (He et al. 2021): hide most patches, encode the rest,
//! reconstruct the hidden ones.

use autodidact_core::batch::ImageBatch;
use autodidact_core::objective::{Objective, ObjectiveOutput};
use autodidact_models::mae::{Mae, PatchMask};
use autodidact_models::vit::patchify;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::image::{ImageFeatures, images_tensor};
use crate::losses::mae_loss;

/// The MAE model with its masking ratio and target normalization.
#[derive(Module, Debug)]
pub struct MaskedAutoencoder {
    /// Encoder and decoder (the encoder is `model.encoder`).
    pub model: Mae,
    mask_ratio: f64,
    norm_pix_loss: bool,
}

impl MaskedAutoencoder {
    /// MAE's defaults are `mask_ratio = 0.75`, `norm_pix_loss = true`.
    pub fn new(model: Mae, mask_ratio: f64, norm_pix_loss: bool) -> Self {
        Self { model, mask_ratio, norm_pix_loss }
    }
}

impl ImageFeatures for MaskedAutoencoder {
    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.model.encoder.forward(images)
    }
}

impl Objective for MaskedAutoencoder {
    type Batch = ImageBatch;

    fn name(&self) -> &'static str {
        "mae"
    }

    /// Uses the first view of each image; the mask is drawn from the device generator, which
    /// the trainer seeds per step (and per evaluation), so runs and resumes are reproducible.
    fn forward(&self, batch: &ImageBatch, device: &Device) -> ObjectiveOutput {
        let images = images_tensor(batch, device);
        let [_, c, h, w] = images.dims();
        let n = batch.batch_size;
        let images = images.slice([0..n, 0..c, 0..h, 0..w]);
        let patches = self.model.encoder.config().num_patches();
        let mask = PatchMask::random(n, patches, self.mask_ratio, device);
        let pred = self.model.forward(images.clone(), &mask);
        let target = patchify(images, self.model.encoder.config().patch_size);
        ObjectiveOutput { loss: mae_loss(pred, target, mask.mask, self.norm_pix_loss), targets: n, metrics: Vec::new() }
    }
}

//! What image objectives share: uploading a batch, and the features evaluation reads.

use autodidact_core::batch::ImageBatch;
use burn::tensor::{Device, Tensor, TensorData};

/// An objective whose encoder turns images into feature vectors (for kNN and linear-probe
/// evaluation of the frozen encoder).
pub trait ImageFeatures {
    /// # Shapes
    /// - `images`: `[batch, channels, height, width]`, output: `[batch, feature_dim]`
    fn features(&self, images: Tensor<4>) -> Tensor<2>;
}

/// All views of a batch as one tensor, view-major (the first `batch_size` rows are view 0).
///
/// # Shapes
/// - output: `[views * batch_size, channels, height, width]`
pub fn images_tensor(batch: &ImageBatch, device: &Device) -> Tensor<4> {
    let shape = [batch.views * batch.batch_size, batch.channels, batch.height, batch.width];
    Tensor::from_data(TensorData::new(batch.pixels.clone(), shape), device)
}

//! Image augmentation with torchvision semantics, and the image batch streams built on it.
//!
//! [`Augment`] turns one `u8` HWC image into one normalized `f32` CHW view of a fixed size,
//! following torchvision's transforms step by step (`RandomResizedCrop`, `RandomHorizontalFlip`,
//! `ColorJitter` in `RandomApply`, `RandomGrayscale`, `GaussianBlur`, `RandomSolarize`,
//! `Normalize`), so recipes from the literature carry over by their published numbers.
//!
//! [`ImageBatches`] draws multi-view training batches (SimCLR's two views, or one) as a pure
//! function of the batch index and the seed: each image of a batch gets its own RNG, seeded
//! from the batch seed and its position, so augmenting images on worker threads changes
//! nothing in the result.

use std::sync::Arc;

use autodidact_core::batch::ImageBatch;
use autodidact_core::objective::BatchStream;
use autodidact_core::seed::{Stream, derive_seed, mix64};
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma, Pixel, Rgb};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::images::ImageSet;
use crate::mlm::EpochSampler;

/// ITU-R 601-2 luma weights (R, G, B), as PIL's `convert("L")`.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Random resized crop (torchvision `RandomResizedCrop`; Szegedy et al. 2015, "Going deeper
/// with convolutions", §6): a crop covering a random fraction `scale` of the image area with a
/// log-uniform aspect ratio in `ratio`, resized to the output size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CropSpec {
    /// Range of the crop area as a fraction of the image area.
    pub scale: (f32, f32),
    /// Range of the crop aspect ratio (width / height).
    pub ratio: (f32, f32),
}

impl Default for CropSpec {
    /// torchvision's defaults, also SimCLR's: scale (0.08, 1), ratio (3/4, 4/3).
    fn default() -> Self {
        Self { scale: (0.08, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) }
    }
}

/// Colour jitter (torchvision `ColorJitter`), applied with probability `p`. Each strength `s`
/// draws a factor uniformly from `[max(0, 1 - s), 1 + s]` (hue: a shift from `[-hue, hue]`);
/// 0 disables that adjustment. The four adjustments run in a random order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JitterSpec {
    /// Brightness strength: the image is multiplied by the factor.
    pub brightness: f32,
    /// Contrast strength: the image is blended with the mean of its grayscale version.
    pub contrast: f32,
    /// Saturation strength: the image is blended with its grayscale version (RGB only).
    pub saturation: f32,
    /// Hue strength in `[0, 0.5]`: the hue is rotated by a fraction of a turn (RGB only).
    pub hue: f32,
    /// Probability of applying the jitter at all.
    pub p: f32,
}

/// Gaussian blur (torchvision `GaussianBlur`), applied with probability `p`, with `sigma`
/// drawn uniformly from the range. The kernel is about 10% of the output size on each axis
/// (made odd), as in SimCLR (Chen et al. 2020, appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlurSpec {
    /// Probability of blurring.
    pub p: f32,
    /// Range of the standard deviation, in output pixels.
    pub sigma: (f32, f32),
}

/// How one image becomes one view: geometry (crop, resize, flip), photometric changes on
/// `[0, 1]` values, then per-channel normalization `(x - mean) / std`.
///
/// Probabilities are in `[0, 1]`; 0 disables a step. A serde struct with unknown fields
/// rejected, so configuration files can embed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Output (height, width).
    pub size: (usize, usize),
    /// Random resized crop; without it the whole image is resized to `size`.
    #[serde(default)]
    pub crop: Option<CropSpec>,
    /// Probability of a horizontal flip.
    #[serde(default)]
    pub hflip: f32,
    /// Colour jitter.
    #[serde(default)]
    pub jitter: Option<JitterSpec>,
    /// Probability of converting an RGB view to grayscale (kept as 3 channels).
    #[serde(default)]
    pub grayscale: f32,
    /// Gaussian blur.
    #[serde(default)]
    pub blur: Option<BlurSpec>,
    /// Probability of solarizing (`x >= 0.5` becomes `1 - x`; BYOL, Grill et al. 2020, table 6).
    #[serde(default)]
    pub solarize: f32,
    /// Per-channel mean subtracted after the photometric steps, in `[0, 1]` units.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: Vec<f32>,
}

impl Augment {
    /// SimCLR's augmentation (Chen et al. 2020, appendix A, and its CIFAR-10 variant in B.9):
    /// random resized crop (scale 0.08–1, ratio 3/4–4/3), horizontal flip with p 0.5, colour
    /// jitter of strength 1 (brightness, contrast, saturation 0.4 and hue 0.1) with p 0.8,
    /// grayscale with p 0.2, and Gaussian blur (sigma 0.1–2, p 0.5) for outputs of at least
    /// 64×64 only: the CIFAR variant drops the blur because it hurts on small images.
    ///
    /// For 1-channel images only brightness and contrast jitter remain (saturation, hue and
    /// grayscale conversion mean nothing without colour).
    pub fn simclr(size: (usize, usize), channels: usize, mean: Vec<f32>, std: Vec<f32>) -> Self {
        let colour = channels == 3;
        Self {
            size,
            crop: Some(CropSpec::default()),
            hflip: 0.5,
            jitter: Some(JitterSpec {
                brightness: 0.4,
                contrast: 0.4,
                saturation: if colour { 0.4 } else { 0.0 },
                hue: if colour { 0.1 } else { 0.0 },
                p: 0.8,
            }),
            grayscale: if colour { 0.2 } else { 0.0 },
            blur: (size.0.min(size.1) >= 64).then_some(BlurSpec { p: 0.5, sigma: (0.1, 2.0) }),
            solarize: 0.0,
            mean,
            std,
        }
    }

    /// Evaluation transform: resize to `size` (nothing when the image already has it), then
    /// normalize. Deterministic.
    pub fn eval(size: (usize, usize), mean: Vec<f32>, std: Vec<f32>) -> Self {
        Self { size, crop: None, hflip: 0.0, jitter: None, grayscale: 0.0, blur: None, solarize: 0.0, mean, std }
    }

    /// Values per view: `channels * size.0 * size.1`.
    pub fn view_len(&self, channels: usize) -> usize {
        channels * self.size.0 * self.size.1
    }

    /// Checks the parameters for images of `channels` channels.
    ///
    /// # Errors
    /// An empty output size, a channel count other than 1 or 3, `mean`/`std` not of length
    /// `channels` or a non-positive std, a probability outside `[0, 1]`, an empty or inverted
    /// range, a negative jitter strength or a hue strength above 0.5.
    pub fn validate(&self, channels: usize) -> Result<()> {
        let bad = |msg: String| Err(DataError::Invalid(format!("augmentation: {msg}")));
        if self.size.0 == 0 || self.size.1 == 0 {
            return bad(format!("output size {}×{} is empty", self.size.0, self.size.1));
        }
        if !matches!(channels, 1 | 3) {
            return bad(format!("images must have 1 or 3 channels, got {channels}"));
        }
        if self.mean.len() != channels || self.std.len() != channels {
            return bad(format!("mean {:?} and std {:?} must have one value per channel ({channels})", self.mean, self.std));
        }
        if !self.mean.iter().all(|m| m.is_finite()) || !self.std.iter().all(|&s| s.is_finite() && s > 0.0) {
            return bad(format!("mean {:?} must be finite and std {:?} positive", self.mean, self.std));
        }
        let mut probs = vec![("hflip", self.hflip), ("grayscale", self.grayscale), ("solarize", self.solarize)];
        probs.extend(self.jitter.map(|j| ("jitter.p", j.p)));
        probs.extend(self.blur.map(|b| ("blur.p", b.p)));
        for (name, p) in probs {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} = {p} is not a probability in [0, 1]"));
            }
        }
        let range_ok = |(lo, hi): (f32, f32)| lo > 0.0 && lo <= hi && hi.is_finite();
        if let Some(c) = self.crop
            && (!range_ok(c.scale) || !range_ok(c.ratio))
        {
            return bad(format!("crop scale {:?} and ratio {:?} must be positive ranges (low <= high)", c.scale, c.ratio));
        }
        if let Some(j) = self.jitter {
            let strengths = [j.brightness, j.contrast, j.saturation];
            if !strengths.iter().all(|s| s.is_finite() && *s >= 0.0) || !(0.0..=0.5).contains(&j.hue) {
                return bad(format!("jitter strengths {strengths:?} must be >= 0 and hue {} in [0, 0.5]", j.hue));
            }
        }
        if let Some(b) = self.blur
            && !range_ok(b.sigma)
        {
            return bad(format!("blur sigma {:?} must be a positive range (low <= high)", b.sigma));
        }
        Ok(())
    }

    /// Augments one image into `out`.
    ///
    /// `image` is `u8` HWC (`h * w * c` bytes); `out` receives the normalized view, CHW,
    /// `c * size.0 * size.1` values. The steps, in torchvision's SimCLR order: random resized
    /// crop (or plain resize) with a triangle (bilinear, antialiased like PIL) filter on `u8`,
    /// scaling to `[0, 1]`, horizontal flip, colour jitter, grayscale, blur, solarize,
    /// normalize. Random draws come from `rng` only, in a fixed order.
    ///
    /// # Panics
    /// Buffers of the wrong length, `c` not 1 or 3, or `mean`/`std` shorter than `c`
    /// ([`Augment::validate`] catches the last two).
    pub fn apply<R: Rng + ?Sized>(&self, image: &[u8], h: usize, w: usize, c: usize, rng: &mut R, out: &mut [f32]) {
        assert!(matches!(c, 1 | 3), "augmentation needs 1 or 3 channels, got {c}");
        assert_eq!(image.len(), h * w * c, "image buffer does not hold {h}×{w}×{c} bytes");
        assert_eq!(out.len(), self.view_len(c), "output buffer does not hold one {c}×{}×{} view", self.size.0, self.size.1);
        let (oh, ow) = self.size;

        // Geometry, on u8 with the image crate's resampling.
        let resized;
        let hwc: &[u8] = match &self.crop {
            Some(spec) => {
                let (top, left, ch, cw) = crop_params(h, w, spec, rng);
                resized = crop_resize(image, (h, w, c), (top, left, ch, cw), (oh, ow));
                &resized
            }
            None if (h, w) == (oh, ow) => image,
            None => {
                resized = crop_resize(image, (h, w, c), (0, 0, h, w), (oh, ow));
                &resized
            }
        };

        // HWC u8 → CHW [0, 1], flipping while copying.
        let flip = self.hflip > 0.0 && rng.random::<f32>() < self.hflip;
        let plane = oh * ow;
        for y in 0..oh {
            for x in 0..ow {
                let sx = if flip { ow - 1 - x } else { x };
                for ch in 0..c {
                    out[ch * plane + y * ow + x] = f32::from(hwc[(y * ow + sx) * c + ch]) / 255.0;
                }
            }
        }

        if let Some(j) = &self.jitter
            && rng.random::<f32>() < j.p
        {
            color_jitter(out, c, plane, j, rng);
        }
        if c == 3 && self.grayscale > 0.0 && rng.random::<f32>() < self.grayscale {
            to_grayscale(out, plane);
        }
        if let Some(b) = &self.blur
            && rng.random::<f32>() < b.p
        {
            let sigma = uniform(rng, f64::from(b.sigma.0), f64::from(b.sigma.1)) as f32;
            gaussian_blur(out, (oh, ow), (blur_kernel_size(oh), blur_kernel_size(ow)), sigma);
        }
        if self.solarize > 0.0 && rng.random::<f32>() < self.solarize {
            for v in out.iter_mut() {
                if *v >= 0.5 {
                    *v = 1.0 - *v;
                }
            }
        }
        for ch in 0..c {
            let (m, s) = (self.mean[ch], self.std[ch]);
            for v in &mut out[ch * plane..(ch + 1) * plane] {
                *v = (*v - m) / s;
            }
        }
    }
}

/// `lo + (hi - lo) * U[0, 1)`, as torch's `uniform_`; a point when `lo == hi`.
fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// torchvision `RandomResizedCrop.get_params`: up to 10 attempts at a crop of random area
/// and log-uniform aspect ratio that fits, else a center crop clamped to the ratio range.
/// Returns (top, left, height, width). Python's `round` rounds half to even.
fn crop_params<R: Rng + ?Sized>(h: usize, w: usize, spec: &CropSpec, rng: &mut R) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    let (r0, r1) = (f64::from(spec.ratio.0), f64::from(spec.ratio.1));
    for _ in 0..10 {
        let target = area * uniform(rng, f64::from(spec.scale.0), f64::from(spec.scale.1));
        let aspect = uniform(rng, r0.ln(), r1.ln()).exp();
        let cw = (target * aspect).sqrt().round_ties_even();
        let ch = (target / aspect).sqrt().round_ties_even();
        if cw > 0.0 && cw <= w as f64 && ch > 0.0 && ch <= h as f64 {
            let (ch, cw) = (ch as usize, cw as usize);
            let top = rng.random_range(0..=h - ch);
            let left = rng.random_range(0..=w - cw);
            return (top, left, ch, cw);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < r0 {
        (((w as f64 / r0).round_ties_even() as usize).clamp(1, h), w)
    } else if in_ratio > r1 {
        (h, ((h as f64 * r1).round_ties_even() as usize).clamp(1, w))
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// Crops `(top, left, height, width)` out of an HWC image and resizes it to `(oh, ow)` with
/// the image crate's triangle filter (bilinear, with the support widened when shrinking).
fn crop_resize(image: &[u8], (h, w, c): (usize, usize, usize), region: (usize, usize, usize, usize), out: (usize, usize)) -> Vec<u8> {
    if c == 1 {
        crop_resize_as::<Luma<u8>>(image, (h, w), region, out)
    } else {
        crop_resize_as::<Rgb<u8>>(image, (h, w), region, out)
    }
}

fn crop_resize_as<P: Pixel<Subpixel = u8> + 'static>(
    image: &[u8],
    (h, w): (usize, usize),
    (top, left, ch, cw): (usize, usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<u8> {
    let buffer = ImageBuffer::<P, &[u8]>::from_raw(w as u32, h as u32, image).expect("the image length is checked by Augment::apply");
    let crop = imageops::crop_imm(&buffer, left as u32, top as u32, cw as u32, ch as u32);
    imageops::resize(&*crop, ow as u32, oh as u32, FilterType::Triangle).into_raw()
}

/// Luma of an RGB CHW image, one plane.
fn luma(img: &[f32], plane: usize) -> Vec<f32> {
    let (r, rest) = img.split_at(plane);
    let (g, b) = rest.split_at(plane);
    r.iter().zip(g).zip(b).map(|((r, g), b)| LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).collect()
}

/// torchvision `_blend`: `factor * img + (1 - factor) * other`, clamped to `[0, 1]`.
fn blend(v: f32, other: f32, factor: f32) -> f32 {
    (factor * v + (1.0 - factor) * other).clamp(0.0, 1.0)
}

/// torchvision `ColorJitter.forward` on a CHW `[0, 1]` image: the four factors are drawn
/// after a random permutation of the adjustments, then applied in that order.
fn color_jitter<R: Rng + ?Sized>(img: &mut [f32], c: usize, plane: usize, j: &JitterSpec, rng: &mut R) {
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let mut factor = |s: f32| (s > 0.0).then(|| uniform(rng, f64::from((1.0 - s).max(0.0)), f64::from(1.0 + s)) as f32);
    let brightness = factor(j.brightness);
    let contrast = factor(j.contrast);
    let saturation = factor(j.saturation);
    let hue = (j.hue > 0.0).then(|| uniform(rng, -f64::from(j.hue), f64::from(j.hue)) as f32);
    for op in order {
        match op {
            0 => {
                if let Some(f) = brightness {
                    img.iter_mut().for_each(|v| *v = blend(*v, 0.0, f));
                }
            }
            1 => {
                if let Some(f) = contrast {
                    let mean = if c == 3 { luma(img, plane).iter().sum::<f32>() } else { img.iter().sum::<f32>() } / plane as f32;
                    img.iter_mut().for_each(|v| *v = blend(*v, mean, f));
                }
            }
            2 => {
                if let (Some(f), 3) = (saturation, c) {
                    let gray = luma(img, plane);
                    for ch in img.chunks_exact_mut(plane) {
                        ch.iter_mut().zip(&gray).for_each(|(v, g)| *v = blend(*v, *g, f));
                    }
                }
            }
            _ => {
                if let (Some(shift), 3) = (hue, c) {
                    adjust_hue(img, plane, shift);
                }
            }
        }
    }
}

/// torchvision `adjust_hue` (tensor path: `_rgb2hsv`, rotate, `_hsv2rgb`).
fn adjust_hue(img: &mut [f32], plane: usize, shift: f32) {
    for i in 0..plane {
        let (r, g, b) = (img[i], img[plane + i], img[2 * plane + i]);
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let eqc = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eqc { 1.0 } else { maxc };
        let div = if eqc { 1.0 } else { cr };
        let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
        let hh = if maxc == r {
            bc - gc
        } else if maxc == g {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let hue = ((hh / 6.0 + 1.0) % 1.0 + shift).rem_euclid(1.0);
        let v = maxc;
        let sector = (hue * 6.0).floor();
        let f = hue * 6.0 - sector;
        let p = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
        let (r, g, b) = match (sector as i32).rem_euclid(6) {
            0 => (v, t, p),
            1 => (q, v, p),
            2 => (p, v, t),
            3 => (p, q, v),
            4 => (t, p, v),
            _ => (v, p, q),
        };
        (img[i], img[plane + i], img[2 * plane + i]) = (r, g, b);
    }
}

/// torchvision `rgb_to_grayscale(num_output_channels=3)`: luma replicated to R, G and B.
fn to_grayscale(img: &mut [f32], plane: usize) {
    let gray = luma(img, plane);
    for ch in img.chunks_exact_mut(plane) {
        ch.copy_from_slice(&gray);
    }
}

/// About 10% of `dim`, odd, at least 3 (SimCLR: `kernel_size = dim // 10`, made odd).
fn blur_kernel_size(dim: usize) -> usize {
    ((dim / 10) | 1).max(3)
}

/// torchvision `gaussian_blur` on a CHW image: a separable, normalized Gaussian of `kernel`
/// taps per axis (`linspace(-(k-1)/2, (k-1)/2)`), reflect padding.
fn gaussian_blur(img: &mut [f32], (h, w): (usize, usize), (kh, kw): (usize, usize), sigma: f32) {
    let taps = |k: usize| {
        let half = (k as f32 - 1.0) / 2.0;
        let pdf: Vec<f32> = (0..k).map(|i| (-0.5 * ((i as f32 - half) / sigma).powi(2)).exp()).collect();
        let sum: f32 = pdf.iter().sum();
        pdf.into_iter().map(|p| p / sum).collect::<Vec<f32>>()
    };
    let (ky, kx) = (taps(kh), taps(kw));
    let (ry, rx) = (kh / 2, kw / 2);
    // Horizontal pass into `padded`, whose rows are already reflect-padded vertically; then
    // the vertical pass accumulates whole shifted rows (contiguous, vectorizable).
    let mut row = vec![0.0f32; w + 2 * rx];
    let mut padded = vec![0.0f32; (h + 2 * ry) * w];
    for plane in img.chunks_exact_mut(h * w) {
        for y in 0..h {
            for (p, v) in row.iter_mut().enumerate() {
                *v = plane[y * w + reflect(p as isize - rx as isize, w)];
            }
            let dst = &mut padded[(y + ry) * w..(y + ry + 1) * w];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = kx.iter().zip(&row[x..x + kw]).map(|(k, v)| k * v).sum();
            }
        }
        for p in (0..ry).chain(h + ry..h + 2 * ry) {
            let src = reflect(p as isize - ry as isize, h) + ry;
            padded.copy_within(src * w..(src + 1) * w, p * w);
        }
        plane.fill(0.0);
        for (t, k) in ky.iter().enumerate() {
            for y in 0..h {
                let src = &padded[(y + t) * w..(y + t + 1) * w];
                plane[y * w..(y + 1) * w].iter_mut().zip(src).for_each(|(d, s)| *d += k * s);
            }
        }
    }
}

/// Reflect padding without repeating the edge (`-1 → 1`), folded until inside `[0, n)`.
fn reflect(mut i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * (n - 1) - i };
    }
    i as usize
}

/// Builds one batch: `views` views of each image of `indices`, image `i` drawn with an RNG
/// seeded by `mix64(batch_seed ^ i)`, images augmented in parallel.
fn render(set: &ImageSet, indices: &[usize], augment: &Augment, views: usize, batch_seed: u64) -> ImageBatch {
    let (bs, c) = (indices.len(), set.channels);
    let view_len = augment.view_len(c);
    let mut pixels = vec![0.0f32; views * bs * view_len];
    // Per image, its output slice in each view: view v of image i is chunk v·bs + i.
    let mut per_image: Vec<Vec<&mut [f32]>> = (0..bs).map(|_| Vec::with_capacity(views)).collect();
    for view in pixels.chunks_exact_mut(bs * view_len) {
        for (slot, chunk) in per_image.iter_mut().zip(view.chunks_exact_mut(view_len)) {
            slot.push(chunk);
        }
    }
    per_image.into_par_iter().zip(indices.par_iter()).enumerate().for_each(|(i, (outs, &index))| {
        let mut rng = StdRng::seed_from_u64(mix64(batch_seed ^ i as u64));
        for out in outs {
            augment.apply(set.image(index), set.height, set.width, c, &mut rng, out);
        }
    });
    let labels = match &set.labels {
        Some(labels) => indices.iter().map(|&i| labels[i]).collect(),
        None => Vec::new(),
    };
    ImageBatch { batch_size: bs, views, channels: c, height: augment.size.0, width: augment.size.1, pixels, labels }
}

fn check_indices(set: &ImageSet, indices: &[usize], what: &str) -> Result<()> {
    match indices.iter().find(|&&i| i >= set.len()) {
        Some(i) => Err(DataError::Invalid(format!("{what} index {i} is out of range for {} images", set.len()))),
        None => Ok(()),
    }
}

/// Multi-view image batches for self-supervised training: training batches drawn epoch by
/// epoch from the training indices with fresh augmentations, and fixed evaluation batches.
///
/// Training batch `k` is a pure function of `k` and the seed: the images at positions
/// `j·batch_size ..` of the seeded shuffle of epoch `e` (`k = e·steps_per_epoch + j`), each
/// augmented `views` times with an RNG seeded by `mix64(derive_seed(seed, Collate, k) ^ i)`
/// (`i` its position in the batch). Batches never straddle epochs and the last incomplete
/// batch of each epoch is dropped (`drop_last`): contrastive losses use the other images of a
/// batch as negatives, so every batch is full.
///
/// # Shapes
/// Each batch is an [`ImageBatch`] with `views` views of `batch_size` images, view-major.
#[derive(Debug)]
pub struct ImageBatches {
    set: Arc<ImageSet>,
    train: Vec<usize>,
    augment: Augment,
    views: usize,
    batch_size: usize,
    sampler: EpochSampler,
    seed: u64,
    eval: Vec<usize>,
    eval_augment: Augment,
    eval_batches: usize,
}

impl ImageBatches {
    /// Training batches of `batch_size` images from `train` (indices into `set`), each image
    /// as `views` views under `augment`. No evaluation batches until
    /// [`ImageBatches::with_eval`].
    ///
    /// # Errors
    /// An invalid augmentation for the set's channels, zero views, zero batch size, fewer
    /// training images than one batch, or an index out of range.
    pub fn new(set: Arc<ImageSet>, train: Vec<usize>, augment: Augment, views: usize, batch_size: usize, seed: u64) -> Result<Self> {
        augment.validate(set.channels)?;
        if views == 0 || batch_size == 0 {
            return Err(DataError::Invalid(format!("views ({views}) and batch_size ({batch_size}) must be positive")));
        }
        if train.len() < batch_size {
            return Err(DataError::Invalid(format!(
                "{} training images, fewer than one batch of {batch_size} (incomplete batches are dropped): use a smaller batch_size",
                train.len()
            )));
        }
        check_indices(&set, &train, "training")?;
        let sampler = EpochSampler::new(train.len(), seed);
        let eval_augment = augment.clone();
        Ok(Self { set, train, augment, views, batch_size, sampler, seed, eval: Vec::new(), eval_augment, eval_batches: 0 })
    }

    /// Evaluation batches: the images `eval` in order, in batches of `batch_size` (the last
    /// one may be partial), at most `max_batches` of them, with as many views as training.
    /// Augmentation draws are seeded from `(seed, Eval, batch)`, so every evaluation sees
    /// the same pixels.
    ///
    /// For a contrastive loss pass the training augmentation: under a deterministic
    /// (`Augment::eval`) one the views of an image are identical and the loss is trivial.
    ///
    /// # Errors
    /// An invalid augmentation or an index out of range.
    pub fn with_eval(mut self, eval: Vec<usize>, augment: Augment, max_batches: usize) -> Result<Self> {
        augment.validate(self.set.channels)?;
        if augment.size != self.augment.size {
            return Err(DataError::Invalid(format!("evaluation view size {:?} differs from the training view size {:?}", augment.size, self.augment.size)));
        }
        check_indices(&self.set, &eval, "evaluation")?;
        (self.eval, self.eval_augment, self.eval_batches) = (eval, augment, max_batches);
        Ok(self)
    }

    /// Full training batches per epoch (`train.len() / batch_size`).
    pub fn steps_per_epoch(&self) -> u64 {
        (self.train.len() / self.batch_size) as u64
    }

    /// The image set batches are drawn from.
    pub fn set(&self) -> &Arc<ImageSet> {
        &self.set
    }

    /// Views per image.
    pub fn views(&self) -> usize {
        self.views
    }

    /// Images per training batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

impl BatchStream for ImageBatches {
    type Batch = ImageBatch;

    fn train_batch(&mut self, k: u64) -> std::result::Result<ImageBatch, String> {
        let n = self.train.len() as u64;
        let bs = self.batch_size as u64;
        let per_epoch = self.steps_per_epoch();
        let (epoch, j) = (k / per_epoch, k % per_epoch);
        let indices: Vec<usize> = (j * bs..(j + 1) * bs).map(|p| self.train[self.sampler.index(epoch * n + p)]).collect();
        Ok(render(&self.set, &indices, &self.augment, self.views, derive_seed(self.seed, Stream::Collate, k)))
    }

    fn eval_batches(&self) -> std::result::Result<Vec<ImageBatch>, String> {
        Ok(self
            .eval
            .chunks(self.batch_size)
            .take(self.eval_batches)
            .enumerate()
            .map(|(b, idx)| render(&self.set, idx, &self.eval_augment, self.views, derive_seed(self.seed, Stream::Eval, b as u64)))
            .collect())
    }
}

/// The images `indices` in order as one-view batches of `batch_size` (the last may be
/// partial), labels filled when the set has them: inputs for feature extraction (kNN,
/// linear probes). An augmentation with random steps is drawn with fixed seeds.
///
/// # Errors
/// An invalid augmentation, a zero batch size, or an index out of range.
pub fn labeled_batches(set: &ImageSet, indices: &[usize], augment: &Augment, batch_size: usize) -> Result<Vec<ImageBatch>> {
    augment.validate(set.channels)?;
    if batch_size == 0 {
        return Err(DataError::Invalid("batch_size must be positive".into()));
    }
    check_indices(set, indices, "image")?;
    Ok(indices.chunks(batch_size).enumerate().map(|(b, idx)| render(set, idx, augment, 1, derive_seed(0, Stream::Eval, b as u64))).collect())
}

/// Per-channel mean and standard deviation of the pixel values in `[0, 1]` units, over at
/// most `max_images` images spread evenly through the set (all when it is smaller), for a
/// default normalization. A constant channel gets std 1, so normalizing stays finite.
///
/// Returns `(mean, std)`, one value per channel each.
pub fn channel_stats(set: &ImageSet, max_images: usize) -> (Vec<f32>, Vec<f32>) {
    let c = set.channels;
    let (n, m) = (set.len(), max_images.clamp(1, set.len().max(1)));
    let mut sum = vec![0.0f64; c];
    let mut sum_sq = vec![0.0f64; c];
    let mut count = 0u64;
    for s in 0..m.min(n) {
        let image = set.image(s * n / m);
        for px in image.chunks_exact(c) {
            for (ch, &v) in px.iter().enumerate() {
                let v = f64::from(v) / 255.0;
                sum[ch] += v;
                sum_sq[ch] += v * v;
            }
        }
        count += (image.len() / c.max(1)) as u64;
    }
    let count = count.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let std = sum_sq
        .iter()
        .zip(&mean)
        .map(|(sq, m)| {
            let s = (sq / count - m * m).max(0.0).sqrt();
            if s < 1e-6 { 1.0 } else { s as f32 }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hue_shift_matches_colorsys() {
        // Python: colorsys.hsv_to_rgb((h + shift) % 1, s, v) of colorsys.rgb_to_hsv(r, g, b).
        for (rgb, shift, expected) in [
            ([0.8, 0.3, 0.1], 0.2, [0.46, 0.8, 0.1]),
            ([0.2, 0.5, 0.9], -0.35, [0.57, 0.9, 0.2]),
            ([1.0, 0.0, 0.0], 1.0 / 3.0, [0.0, 1.0, 0.0]),
            ([0.4, 0.4, 0.4], 0.3, [0.4, 0.4, 0.4]),
        ] {
            let mut img = rgb.to_vec();
            adjust_hue(&mut img, 1, shift);
            for (a, b) in img.iter().zip(expected) {
                assert!((a - b).abs() < 1e-5, "{rgb:?} shifted by {shift}: {img:?}, expected {expected:?}");
            }
        }
    }

    #[test]
    fn crops_fit_follow_the_scale_range_and_fall_back_to_the_centre() {
        let spec = CropSpec::default();
        let mut rng = StdRng::seed_from_u64(0);
        let mut areas = Vec::new();
        for _ in 0..2000 {
            let (top, left, h, w) = crop_params(30, 40, &spec, &mut rng);
            assert!(h >= 1 && w >= 1 && top + h <= 30 && left + w <= 40);
            areas.push((h * w) as f64 / 1200.0);
        }
        let (lo, hi) = areas.iter().fold((1.0f64, 0.0f64), |(lo, hi), &a| (lo.min(a), hi.max(a)));
        assert!(lo < 0.12 && hi > 0.9, "areas span the scale range: {lo}..{hi}");
        // No wide crop (ratio 3–4) of 90% of the area fits a tall 40×10 image: the fallback is a
        // centre crop of full width 10 and height round(10 / 3) = 3.
        let strict = CropSpec { scale: (0.9, 1.0), ratio: (3.0, 4.0) };
        assert_eq!(crop_params(40, 10, &strict, &mut rng), (18, 0, 3, 10));
        // A wide image beyond the largest ratio: full height, width round(10 · 4/3) = 13.
        assert_eq!(crop_params(10, 100, &CropSpec { scale: (1.0, 1.0), ratio: (0.75, 4.0 / 3.0) }, &mut rng), (0, 43, 10, 13));
    }

    #[test]
    fn blur_keeps_constants_and_spreads_a_point() {
        assert_eq!((blur_kernel_size(32), blur_kernel_size(64), blur_kernel_size(224)), (3, 7, 23));
        assert_eq!([reflect(-1, 5), reflect(5, 5), reflect(-7, 5), reflect(3, 1)], [1, 3, 1, 0]);
        let mut flat = vec![0.7f32; 2 * 9 * 9];
        gaussian_blur(&mut flat, (9, 9), (7, 7), 1.5);
        assert!(flat.iter().all(|v| (v - 0.7).abs() < 1e-6));
        let mut point = vec![0.0f32; 9 * 9];
        point[4 * 9 + 4] = 1.0;
        gaussian_blur(&mut point, (9, 9), (5, 5), 1.0);
        assert!((point.iter().sum::<f32>() - 1.0).abs() < 1e-5, "mass kept away from the borders");
        assert!(point[4 * 9 + 4] < 1.0 && point[4 * 9 + 5] > 0.0 && (point[3 * 9 + 4] - point[4 * 9 + 5]).abs() < 1e-7);
    }

    #[test]
    fn jitter_factors_reach_their_limits() {
        // Contrast 0 blends every pixel to the mean of the luma; brightness 0 makes black.
        let mut img = vec![0.2, 0.8, 0.4, 0.6, 0.1, 0.9];
        let luma_mean = (LUMA[0] * 0.2 + LUMA[1] * 0.4 + LUMA[2] * 0.1 + LUMA[0] * 0.8 + LUMA[1] * 0.6 + LUMA[2] * 0.9) / 2.0;
        let contrast = img.iter().map(|&v| blend(v, luma_mean, 0.0)).collect::<Vec<_>>();
        assert!(contrast.iter().all(|v| (v - luma_mean).abs() < 1e-6));
        to_grayscale(&mut img, 2);
        assert_eq!(img[..2], img[2..4]);
        assert!((img[0] - (LUMA[0] * 0.2 + LUMA[1] * 0.4 + LUMA[2] * 0.1)).abs() < 1e-7);
        assert_eq!(blend(0.9, 0.0, 1.6), 1.0, "clamped");
    }
}

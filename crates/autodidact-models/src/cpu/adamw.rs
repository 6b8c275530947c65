//! AdamW's update of one parameter (Loshchilov & Hutter 2019, Algorithm 2) as one parallel
//! pass that writes the parameter and both moments.
//!
//! burn's `AdamW` computes the same update as about a dozen tensor operations, each a pass
//! of its own over the parameter's elements and, below 4M elements, on the calling thread
//! alone: the whole optimizer step ran on one core of two. The arithmetic here is burn's,
//! operation by operation in the same order and precision, so the results are the same bits.

use rayon::prelude::*;

use super::{ELEMENTS_PER_TASK, vectorized};

/// The constants of one AdamW step, as burn's `AdamW` takes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to the root of the second moment.
    pub epsilon: f32,
    /// Decoupled weight decay, scaled by the learning rate.
    pub weight_decay: f32,
    /// Learning rate.
    pub lr: f64,
    /// This step's number, from 1 (the bias corrections' exponent).
    pub time: usize,
}

/// `(parameter, first moment, second moment)` after one step of `s` from parameter `p` with
/// gradient `g`; `moments` are the previous step's, `None` at the first.
pub(super) fn step(p: &[f32], g: &[f32], moments: Option<(&[f32], &[f32])>, s: AdamWStep) -> [Vec<f32>; 3] {
    assert!(g.len() == p.len() && moments.is_none_or(|(m, v)| m.len() == p.len() && v.len() == p.len()), "AdamW operands differ in length");
    let len = p.len();
    let (f1, f2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
    let time = i32::try_from(s.time).unwrap_or(i32::MAX);
    let decay_rate = s.lr * f64::from(s.weight_decay);
    let k = Update {
        c1: 1.0 - s.beta_1.powi(time),
        c2: 1.0 - s.beta_2.powi(time),
        epsilon: s.epsilon,
        // burn scales by `1 − lr·wd` (computed in f64, applied in f32), and skips it at zero.
        keep: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
        lr: s.lr as f32,
    };
    let (mut new_p, mut new_m, mut new_v) = (Vec::with_capacity(len), Vec::with_capacity(len), Vec::with_capacity(len));
    new_p.spare_capacity_mut()[..len]
        .par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(new_m.spare_capacity_mut()[..len].par_chunks_mut(ELEMENTS_PER_TASK))
        .zip(new_v.spare_capacity_mut()[..len].par_chunks_mut(ELEMENTS_PER_TASK))
        .enumerate()
        .for_each(|(i, ((out_p, out_m), out_v))| {
            let (start, n) = (i * ELEMENTS_PER_TASK, out_p.len());
            let out_p = &mut out_p[..n];
            let (p, g) = (&p[start..][..n], &g[start..][..n]);
            let (out_m, out_v) = (&mut out_m[..n], &mut out_v[..n]);
            let previous = moments.map(|(m, v)| (&m[start..][..n], &v[start..][..n]));
            vectorized(#[inline(always)] || match previous {
                Some((m, v)) => (0..n).for_each(|j| {
                    let (m, v) = (m[j] * s.beta_1 + g[j] * f1, v[j] * s.beta_2 + (g[j] * g[j]) * f2);
                    out_p[j].write(updated(p[j], m, v, &k));
                    out_m[j].write(m);
                    out_v[j].write(v);
                }),
                None => (0..n).for_each(|j| {
                    let (m, v) = (g[j] * f1, (g[j] * g[j]) * f2);
                    out_p[j].write(updated(p[j], m, v, &k));
                    out_m[j].write(m);
                    out_v[j].write(v);
                }),
            });
        });
    #[allow(unsafe_code)]
    // SAFETY: the chunks cover the first `len` elements of each vector, and each chunk's loop
    // wrote every one of its elements in all three.
    unsafe {
        new_p.set_len(len);
        new_m.set_len(len);
        new_v.set_len(len);
    }
    [new_p, new_m, new_v]
}

/// The per-step constants of the parameter update.
struct Update {
    /// Bias corrections `1 − β₁ᵗ` and `1 − β₂ᵗ`.
    c1: f32,
    c2: f32,
    epsilon: f32,
    /// `1 − lr·wd`, where there is weight decay.
    keep: Option<f32>,
    lr: f32,
}

/// The parameter `p` after the step, from the new moments `m` and `v`:
/// `p·(1 − lr·wd) − lr · (m / c₁) / (√(v / c₂) + ε)`, in burn's order of operations.
#[inline(always)]
fn updated(p: f32, m: f32, v: f32, k: &Update) -> f32 {
    let delta = (m / k.c1) / ((v / k.c2).sqrt() + k.epsilon);
    let decayed = k.keep.map_or(p, |keep| p * keep);
    decayed - delta * k.lr
}

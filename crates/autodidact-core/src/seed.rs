//! Deterministic seed derivation.
//!
//! Every random stream in a run (masking, sampling order, dropout) is derived from the run
//! seed and a position (step, epoch, ...) by a stateless mix, so a resumed run regenerates
//! exactly the streams an uninterrupted one would have used without storing RNG state.

/// SplitMix64 finalizer (Steele et al. 2014): a bijective 64-bit mix with good avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a seed for stream `stream` at position `index` from the run seed.
pub fn derive_seed(seed: u64, stream: Stream, index: u64) -> u64 {
    mix64(mix64(seed ^ mix64(stream as u64)) ^ index)
}

/// The named random streams of a run; each gets independent seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Parameter initialization.
    Init = 1,
    /// Epoch permutation of the training sequences.
    Order = 2,
    /// Masking (or augmentation) of a training batch.
    Collate = 3,
    /// Dropout and other randomness inside the model at a step.
    Model = 4,
    /// Fixed masking of the evaluation batches.
    Eval = 5,
    /// Assignment of corpus pieces to the held-out split.
    Split = 6,
}

//! Learning-rate schedules as pure functions of the step (as nanoGPT's `get_lr`): a resumed
//! run needs only the step to continue the schedule exactly, so there is no scheduler state
//! to save.

use serde::{Deserialize, Serialize};

/// Shape of the decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Half-cosine from the peak to `min_lr` (Loshchilov & Hutter 2017, without restarts).
    #[default]
    Cosine,
    /// Straight line from the peak to `min_lr` (BERT's schedule).
    Linear,
    /// Stay at the peak.
    Constant,
}

/// Linear warm-up from 0 to `peak` over `warmup_steps`, then `decay` down to `min_lr` at
/// `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// Step at which the decay reaches `min_lr`.
    pub total_steps: u64,
    /// Decay shape.
    pub decay: Decay,
}

impl LrSchedule {
    /// Learning rate for optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let coeff = match self.decay {
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Linear => 1.0 - progress,
            Decay::Constant => 1.0,
        };
        self.min_lr + coeff * (self.peak - self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_reaches_min() {
        let s = LrSchedule { peak: 1.0, min_lr: 0.1, warmup_steps: 10, total_steps: 110, decay: Decay::Cosine };
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.55).abs() < 1e-12);
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
        assert!((s.lr(500) - 0.1).abs() < 1e-12);
        let l = LrSchedule { decay: Decay::Linear, ..s };
        assert!((l.lr(60) - 0.55).abs() < 1e-12);
        assert!(l.lr(30) > l.lr(31));
    }
}

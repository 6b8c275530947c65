//! The trainer's optimizer: AdamW with burn's arithmetic and burn's state (so checkpoints are
//! unchanged), each parameter's update computed by `autodidact_models::cpu::adamw_step`: one
//! parallel pass on flex, where burn's `AdamW` makes about a dozen passes on the calling
//! thread.

use autodidact_models::cpu::{AdamWStep, adamw_step};
use burn::module::ParamGroup;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::trainer::AdamWSettings;

/// AdamW (Loshchilov & Hutter 2019) for one group of parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl AdamW {
    /// AdamW with `settings` (its weight decay included).
    pub fn new(settings: &AdamWSettings) -> Self {
        Self { beta_1: settings.beta1 as f32, beta_2: settings.beta2 as f32, epsilon: settings.eps as f32, weight_decay: settings.weight_decay as f32 }
    }

    /// The same without weight decay.
    pub fn without_decay(self) -> Self {
        Self { weight_decay: 0.0, ..self }
    }
}

impl Optimizer for AdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(&self, lr: LearningRate, tensor: Tensor<D>, grad: Tensor<D>, state: Option<Self::State<D>>) -> (Tensor<D>, Option<Self::State<D>>) {
        let time = state.as_ref().map_or(1, |s| s.momentum.time + 1);
        let moments = state.map(|s| (s.momentum.moment_1, s.momentum.moment_2));
        let step = AdamWStep { beta_1: self.beta_1, beta_2: self.beta_2, epsilon: self.epsilon, weight_decay: self.weight_decay, lr, time };
        let (tensor, moment_1, moment_2) = adamw_step(tensor, grad, moments, step);
        (tensor, Some(AdamWState::new(AdaptiveMomentumState::new(time, moment_1, moment_2))))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

/// AdamW with decay on matrices only: parameters named `bias`, or LayerNorm `gamma`/`beta`,
/// get none (as BERT and HF `transformers`).
pub fn build_optimizer(settings: &AdamWSettings) -> ModuleOptimizer {
    let decay = AdamW::new(settings);
    let no_decay = ParamGroup::from_regex(r"(^|\.)(bias|gamma|beta)$").unwrap_or_else(|_| ParamGroup::from_predicate("bias"));
    ModuleOptimizer::from(decay).with_group(no_decay, decay.without_decay(), None)
}

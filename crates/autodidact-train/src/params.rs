//! Parameter bookkeeping: stable ids, global gradient norm and clipping.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Gives every parameter an id derived from its path in the module tree.
///
/// burn draws parameter ids at random, and optimizer state is keyed by id; with ids derived
/// from paths, a model rebuilt in another process (to resume) matches its saved optimizer
/// state.
pub fn with_stable_ids<M: Module>(module: M) -> M {
    struct Mapper {
        path: Vec<String>,
    }
    impl Mapper {
        fn id(&self, leaf: &str) -> ParamId {
            let mut h = DefaultHasher::new();
            self.path.join(".").hash(&mut h);
            leaf.hash(&mut h);
            ParamId::from(h.finish())
        }
    }
    impl ModuleMapper for Mapper {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (_, value, mapper) = param.consume();
            Param::from_mapped_value(self.id("float"), value, mapper)
        }
    }
    module.map(&mut Mapper { path: Vec::new() })
}

/// Global L2 norm of all gradients, and in-place scaling so it is at most `max_norm`
/// (Pascanu et al. 2013, §3.2; PyTorch's `clip_grad_norm_`). burn's own clipping is per
/// tensor, which changes the update direction; this keeps it.
///
/// Returns the norm before clipping. One device sync.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: Option<f64>) -> f64 {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g * self.factor);
            }
        }
    }
    let mut sum = SumSquares { grads, total: None };
    module.visit(&mut sum);
    let norm = sum.total.map_or(0.0, |t| f64::from(t.into_scalar::<f32>()).sqrt());
    if let Some(max) = max_norm
        && norm.is_finite()
        && norm > max
    {
        module.visit(&mut Scale { grads, factor: max / (norm + 1e-6) });
    }
    norm
}

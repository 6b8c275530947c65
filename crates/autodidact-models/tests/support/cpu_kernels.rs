//! The fast CPU paths of `autodidact_models::cpu` against burn's own operations.

use autodidact_models::cpu;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{DropoutConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};

/// The flex device's random generator is one per process: tests that seed it and draw from
/// it run one at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn flex() -> Device {
    Device::flex().autodiff()
}

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-5 * scale * 10.0, "{what}[{i}]: {x} vs burn's {y} (scale {scale})");
    }
}

/// Output, input gradient and weight (and bias) gradients of `conv` on `x` under the loss
/// `Σ y · r`, computed by `forward`.
fn conv_grads(conv: &Conv2d, x: &Tensor<4>, r: &Tensor<4>, forward: impl Fn(&Conv2d, Tensor<4>) -> Tensor<4>) -> Vec<Vec<f32>> {
    let x = x.clone().require_grad();
    let y = forward(conv, x.clone());
    let grads = (y.clone() * r.clone()).sum().backward();
    let mut out = vec![values(y), values(x.grad(&grads).expect("x grad")), values(conv.weight.val().grad(&grads).expect("weight grad"))];
    if let Some(b) = &conv.bias {
        out.push(values(b.val().grad(&grads).expect("bias grad")));
    }
    out
}

#[test]
fn fast_convolution_matches_burn_with_its_gradients() {
    let _rng = rng_lock();
    let device = flex();
    assert!(cpu::is_flex(&device), "the fast path is taken on flex");
    device.seed(7);
    // Enough images that the weight gradient is summed in groups of several images, the
    // last one partial, and (the maps being small) in products over several images each.
    const BATCH: usize = 37;
    // (in, out, kernel, stride, padding (top, left, bottom, right), dilation, bias, input height, width);
    // the last cases have kernel taps that fall entirely in the padding and uneven padding.
    let cases = [
        (3, 4, 3, 1, [1; 4], 1, false, 7, 6),
        (5, 8, 3, 2, [1; 4], 1, false, 9, 8),
        (4, 6, 1, 2, [0; 4], 1, false, 8, 8),
        (2, 3, 3, 1, [0; 4], 1, true, 5, 7),
        (3, 2, 5, 2, [2; 4], 1, false, 11, 10),
        (3, 2, 3, 1, [2; 4], 2, false, 9, 8),
        (2, 3, 3, 1, [1; 4], 1, false, 1, 2),
        (3, 2, 3, 2, [2, 0, 1, 3], 1, false, 4, 5),
    ];
    for (cin, cout, k, stride, [top, left, bottom, right], dilation, bias, h, w) in cases {
        let conv = Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([stride, stride])
            .with_dilation([dilation, dilation])
            .with_padding(PaddingConfig2d::Explicit(top, left, bottom, right))
            .with_bias(bias)
            .init(&device);
        let x = Tensor::<4>::random([BATCH, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
        let span = dilation * (k - 1) + 1;
        let ho = (h + top + bottom - span) / stride + 1;
        let wo = (w + left + right - span) / stride + 1;
        let r = Tensor::<4>::random([BATCH, cout, ho, wo], Distribution::Normal(0.0, 1.0), &device);
        let ours = conv_grads(&conv, &x, &r, cpu::conv2d);
        let burns = conv_grads(&conv, &x, &r, |c, x| c.forward(x));
        for ((name, a), b) in ["output", "input gradient", "weight gradient", "bias gradient"].iter().zip(&ours).zip(&burns) {
            assert_close(&format!("{name} of case in {cin} out {cout} k {k} stride {stride} pad {:?} dilation {dilation} size {h}x{w}", [top, left, bottom, right]), a, b);
        }
    }
}

#[test]
fn fast_convolution_without_autodiff_is_the_forward() {
    let _rng = rng_lock();
    let device = Device::flex();
    device.seed(1);
    let conv = Conv2dConfig::new([2, 3], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(&device);
    let x = Tensor::<4>::random([2, 2, 5, 5], Distribution::Normal(0.0, 1.0), &device);
    assert_close("output", &values(cpu::conv2d(&conv, x.clone())), &values(conv.forward(x)));
}

#[test]
fn fast_dropout_zeroes_at_the_rate_scales_the_rest_and_follows_the_seed() {
    let _rng = rng_lock();
    let device = flex();
    let layer = DropoutConfig::new(0.25).init();
    let x = Tensor::<2>::ones([300, 400], &device);
    let draw = |seed| {
        device.seed(seed);
        values(cpu::dropout(&layer, x.clone()))
    };
    let a = draw(3);
    let n = a.len() as f64;
    let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64;
    // 120,000 Bernoulli(0.25) draws: the standard deviation of the rate is 0.00125.
    assert!((zeros / n - 0.25).abs() < 0.01, "dropped fraction {}", zeros / n);
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6), "kept values are scaled by 1/keep");
    assert!(a == draw(3), "same device seed, same mask");
    assert!(a != draw(4), "another seed, another mask");
    // Both ends of the mask vary (chunks are seeded independently, not repeated).
    assert!(a[..1000] != a[a.len() - 1000..]);

    // Gradient: the mask itself (the output, for an input of ones).
    let xg = x.clone().require_grad();
    let y = cpu::dropout(&layer, xg.clone());
    let grad = values(xg.grad(&y.clone().sum().backward()).expect("grad"));
    assert!(grad == values(y), "the gradient is the scaled mask");

    // Outside training it is the identity, as burn's dropout.
    let inference = Tensor::<2>::ones([3, 4], &Device::flex());
    assert_eq!(values(cpu::dropout(&layer, inference.clone())), values(inference));
}

/// Output and input gradient of `f` at `x` under the loss `Σ f(x) · r`.
fn value_and_grad<const D: usize>(x: &Tensor<D>, r: &Tensor<D>, f: impl Fn(Tensor<D>) -> Tensor<D>) -> (Vec<f32>, Vec<f32>) {
    let x = x.clone().require_grad();
    let y = f(x.clone());
    let grads = (y.clone() * r.clone()).sum().backward();
    (values(y), values(x.grad(&grads).expect("input grad")))
}

fn assert_same_function<const D: usize>(what: &str, shape: [usize; D], scale: f64, ours: impl Fn(Tensor<D>) -> Tensor<D>, burns: impl Fn(Tensor<D>) -> Tensor<D>) {
    let device = flex();
    device.seed(11);
    let x = Tensor::<D>::random(shape, Distribution::Normal(0.0, scale), &device);
    let r = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let (y, dx) = value_and_grad(&x, &r, ours);
    let (y_burn, dx_burn) = value_and_grad(&x, &r, burns);
    assert_close(&format!("{what} output"), &y, &y_burn);
    assert_close(&format!("{what} input gradient"), &dx, &dx_burn);
}

#[test]
fn fused_gelu_and_softmax_match_burn_with_their_gradients() {
    let _rng = rng_lock();
    assert_same_function("gelu", [17, 33], 3.0, cpu::gelu, burn::tensor::activation::gelu);
    assert_same_function("softmax", [3, 5, 37], 4.0, cpu::softmax, |x| burn::tensor::activation::softmax(x, 2));
}

/// Cross-entropy with and without label smoothing, per row and differentiated, against
/// burn's `log_softmax` and `gather`; rows of 37 and of 8192 classes (an MLM vocabulary); a
/// label out of range gives that row a NaN loss instead of a panic.
#[test]
fn fused_cross_entropy_matches_burn_with_its_gradient() {
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Int, TensorData};
    let _rng = rng_lock();
    let device = flex();
    device.seed(17);
    for (rows, classes) in [(7, 37), (3, 8192)] {
        let x = Tensor::<2>::random([rows, classes], Distribution::Normal(0.0, 4.0), &device);
        let r = Tensor::<1>::random([rows], Distribution::Normal(0.0, 1.0), &device);
        let picks: Vec<i64> = (0..rows as i64).map(|i| (i * 5 + 3) % classes as i64).collect();
        let labels = || Tensor::<1, Int>::from_data(TensorData::new(picks.clone(), [rows]), &device);
        for smoothing in [0.0, 0.1] {
            let burns = |x: Tensor<2>| {
                let log_probs = log_softmax(x, 1);
                let nll = log_probs.clone().gather(1, labels().reshape([rows, 1])).reshape([rows]).neg();
                nll * (1.0 - smoothing) - log_probs.mean_dim(1).reshape([rows]) * smoothing
            };
            let run = |f: &dyn Fn(Tensor<2>) -> Tensor<1>| {
                let x = x.clone().require_grad();
                let y = f(x.clone());
                let grads = (y.clone() * r.clone()).sum().backward();
                (values(y), values(x.grad(&grads).expect("logits grad")))
            };
            let (ours, burn) = (run(&|x| cpu::cross_entropy(x, labels(), smoothing)), run(&burns));
            let what = format!("cross-entropy {rows}x{classes}, smoothing {smoothing}");
            assert_close(&format!("{what} loss"), &ours.0, &burn.0);
            assert_close(&format!("{what} logits gradient"), &ours.1, &burn.1);
        }
    }
    let x = Tensor::<2>::random([2, 5], Distribution::Normal(0.0, 1.0), &device);
    let loss = values(cpu::cross_entropy(x, Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 5], [2]), &device), 0.0));
    assert!(loss[0].is_finite() && loss[1].is_nan(), "{loss:?}");
}

/// Attention on packed projections (`[batch, seq, 3·hidden]`, rows `[q | k | v]`), with and
/// without a key bias and dropout on the probabilities, against burn's head split, batched
/// matmuls and softmax (and the fast dropout, drawn from the same seed): the output and the
/// gradient of the packed input.
#[test]
fn fused_attention_matches_burn_with_its_gradient() {
    let _rng = rng_lock();
    let device = flex();
    for (batch, seq, heads, dim) in [(2, 5, 3, 4), (3, 17, 2, 16)] {
        device.seed(23);
        let hidden = heads * dim;
        let qkv = Tensor::<3>::random([batch, seq, 3 * hidden], Distribution::Normal(0.0, 1.0), &device);
        let r = Tensor::<3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);
        let bias = Tensor::<2>::random([batch, seq], Distribution::Normal(0.0, 2.0), &device);
        let mut outputs = Vec::new();
        for (with_bias, rate) in [(false, 0.0), (true, 0.0), (true, 0.3)] {
            let layer = DropoutConfig::new(rate).init();
            let run = |ours: bool| {
                device.seed(5);
                let qkv = qkv.clone().require_grad();
                let bias = with_bias.then(|| bias.clone());
                let out = if ours {
                    cpu::attention(qkv.clone(), heads, bias, &layer)
                } else {
                    let split = |part: usize| qkv.clone().slice([0..batch, 0..seq, part * hidden..(part + 1) * hidden]).reshape([batch, seq, heads, dim]).swap_dims(1, 2);
                    let mut scores = split(0).matmul(split(1).transpose()) / (dim as f64).sqrt();
                    if let Some(bias) = bias {
                        scores = scores + bias.reshape([batch, 1, 1, seq]);
                    }
                    let probs = cpu::dropout(&layer, burn::tensor::activation::softmax(scores, 3));
                    probs.matmul(split(2)).swap_dims(1, 2).reshape([batch, seq, hidden])
                };
                let grads = (out.clone() * r.clone()).sum().backward();
                [values(out), values(qkv.grad(&grads).expect("qkv"))]
            };
            let (ours, burns) = (run(true), run(false));
            for ((name, a), b) in ["output", "qkv gradient"].iter().zip(&ours).zip(&burns) {
                assert_close(&format!("attention {batch}x{seq}, {heads} heads of {dim}, bias {with_bias}, dropout {rate}: {name}"), a, b);
            }
            outputs.push(ours[0].clone());
        }
        assert_ne!(outputs[1], outputs[2], "dropout changes the output");
    }
}

/// Picking rows per batch item (MAE's visible patches and unshuffle), with a row picked
/// twice so that the backward pass must add, against burn's gather; an index out of range
/// gives a row of NaN instead of a panic.
#[test]
fn fused_gather_rows_matches_burn_with_its_gradient() {
    use burn::tensor::{Int, TensorData};
    let _rng = rng_lock();
    let device = flex();
    device.seed(29);
    let (batch, n, dim, k) = (3, 7, 5, 4);
    let x = Tensor::<3>::random([batch, n, dim], Distribution::Normal(0.0, 1.0), &device);
    let r = Tensor::<3>::random([batch, k, dim], Distribution::Normal(0.0, 1.0), &device);
    let picks = vec![6i64, 0, 3, 0, 1, 2, 5, 4, 2, 2, 6, 1];
    let index = |picks: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(picks, [batch, k]), &device);
    let run = |ours: bool| {
        let x = x.clone().require_grad();
        let out = if ours { cpu::gather_rows(x.clone(), index(picks.clone())) } else { x.clone().gather(1, index(picks.clone()).reshape([batch, k, 1]).expand([batch, k, dim])) };
        let grads = (out.clone() * r.clone()).sum().backward();
        [values(out), values(x.grad(&grads).expect("x"))]
    };
    let (ours, burns) = (run(true), run(false));
    assert_close("gathered rows", &ours[0], &burns[0]);
    assert_close("input gradient", &ours[1], &burns[1]);

    let mut bad = picks.clone();
    bad[5] = n as i64;
    let out = values(cpu::gather_rows(x, index(bad)));
    let rows: Vec<&[f32]> = out.chunks(dim).collect();
    assert!(rows[5].iter().all(|v| v.is_nan()) && rows[4].iter().all(|v| v.is_finite()), "{out:?}");
}

#[test]
fn fused_layer_norm_matches_burn_with_all_gradients() {
    let _rng = rng_lock();
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    let device = flex();
    device.seed(5);
    let mut ln = LayerNormConfig::new(24).with_epsilon(1e-5).init(&device);
    ln.gamma = Param::from_tensor(Tensor::random([24], Distribution::Normal(1.0, 0.5), &device));
    ln.beta = Some(Param::from_tensor(Tensor::random([24], Distribution::Normal(0.0, 0.5), &device)));
    let x = Tensor::<3>::random([4, 9, 24], Distribution::Normal(2.0, 3.0), &device);
    let r = Tensor::<3>::random([4, 9, 24], Distribution::Normal(0.0, 1.0), &device);
    let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
        let xg = x.clone().require_grad();
        let y = f(xg.clone());
        let grads = (y.clone() * r.clone()).sum().backward();
        let beta = ln.beta.as_ref().expect("beta");
        [values(y), values(xg.grad(&grads).expect("x")), values(ln.gamma.val().grad(&grads).expect("gamma")), values(beta.val().grad(&grads).expect("beta"))]
    };
    let ours = run(&|x| cpu::layer_norm(&ln, 1e-5, x));
    let burns = run(&|x| ln.forward(x));
    for ((name, a), b) in ["output", "input gradient", "gamma gradient", "beta gradient"].iter().zip(&ours).zip(&burns) {
        assert_close(&format!("layer norm {name}"), a, b);
    }
}

#[test]
fn fused_affine_matches_burn_with_all_gradients_in_both_weight_layouts() {
    let _rng = rng_lock();
    use cpu::WeightLayout;
    let device = flex();
    device.seed(8);
    // Small; large enough for the products to run on all threads (≥ 192³ multiply-adds);
    // and with enough rows that the weight gradient is summed over slices of them and the
    // forward sets the bias block by block.
    for (batch, rows, d_in, d_out) in [(2, 5, 7, 3), (4, 75, 160, 192), (4, 1100, 40, 56)] {
        let x = Tensor::<3>::random([batch, rows, d_in], Distribution::Normal(0.0, 1.0), &device);
        let r = Tensor::<3>::random([batch, rows, d_out], Distribution::Normal(0.0, 1.0), &device);
        let bias = Tensor::<1>::random([d_out], Distribution::Normal(0.0, 1.0), &device).require_grad();
        for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
            let stored = if layout == WeightLayout::InOut { [d_in, d_out] } else { [d_out, d_in] };
            let weight = Tensor::<2>::random(stored, Distribution::Normal(0.0, 0.3), &device).require_grad();
            let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
                let xg = x.clone().require_grad();
                let y = f(xg.clone());
                let grads = (y.clone() * r.clone()).sum().backward();
                [values(y), values(xg.grad(&grads).expect("x")), values(weight.grad(&grads).expect("weight")), values(bias.grad(&grads).expect("bias"))]
            };
            let ours = run(&|x| cpu::affine(x, weight.clone(), bias.clone(), layout));
            let burns = run(&|x| {
                let w = if layout == WeightLayout::InOut { weight.clone() } else { weight.clone().transpose() };
                x.matmul(w.unsqueeze_dim(0)) + bias.clone().reshape([1, 1, d_out])
            });
            for ((name, a), b) in ["output", "input gradient", "weight gradient", "bias gradient"].iter().zip(&ours).zip(&burns) {
                assert_close(&format!("affine {layout:?} {rows}x{d_in}->{d_out} {name}"), a, b);
            }
        }
    }
}

#[test]
fn fused_residual_linear_matches_burn_with_all_gradients() {
    let _rng = rng_lock();
    use burn::nn::LinearConfig;
    let device = flex();
    device.seed(9);
    let no_dropout = DropoutConfig::new(0.0).init();
    // One block of output rows; several (the residual added block by block).
    for (batch, rows, d_in, d_out) in [(2, 5, 7, 3), (4, 1100, 40, 56)] {
        let layer = LinearConfig::new(d_in, d_out).init(&device);
        let x = Tensor::<3>::random([batch, rows, d_in], Distribution::Normal(0.0, 1.0), &device);
        let residual = Tensor::<3>::random([batch, rows, d_out], Distribution::Normal(0.0, 1.0), &device);
        let r = Tensor::<3>::random([batch, rows, d_out], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<3>, Tensor<3>) -> Tensor<3>| {
            let (xg, residual) = (x.clone().require_grad(), residual.clone().require_grad());
            let y = f(residual.clone(), xg.clone());
            let grads = (y.clone() * r.clone()).sum().backward();
            let bias = layer.bias.as_ref().expect("bias").val();
            [y, xg.grad(&grads).expect("x"), residual.grad(&grads).expect("residual")].map(values).into_iter().chain([values(layer.weight.val().grad(&grads).expect("weight")), values(bias.grad(&grads).expect("bias"))]).collect::<Vec<_>>()
        };
        let ours = run(&|residual, x| cpu::residual_linear(residual, &no_dropout, &layer, x));
        let burns = run(&|residual, x| residual + layer.forward(x));
        let names = ["output", "input gradient", "residual gradient", "weight gradient", "bias gradient"];
        for ((name, a), b) in names.iter().zip(&ours).zip(&burns) {
            assert_close(&format!("residual linear {rows}x{d_in}->{d_out} {name}"), a, b);
        }
        // With dropout the mask is applied as the product is written: the same mask, drawn
        // at the same point, as `cpu::dropout` after the Linear.
        let dropout = DropoutConfig::new(0.3).init();
        let seeded = |f: &dyn Fn(Tensor<3>, Tensor<3>) -> Tensor<3>| {
            device.seed(21);
            run(f)
        };
        let ours = seeded(&|residual, x| cpu::residual_linear(residual, &dropout, &layer, x));
        let unfused = seeded(&|residual, x| residual + cpu::dropout(&dropout, cpu::linear(&layer, x)));
        let dropped = ours[0].iter().zip(values(residual.clone())).filter(|&(&y, res)| y == res).count();
        assert!(dropped > ours[0].len() / 5, "about 30% of the outputs are the residual alone ({dropped} of {})", ours[0].len());
        for ((name, a), b) in names.iter().zip(&ours).zip(&unfused) {
            assert!(a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()), "residual linear with dropout, {rows}x{d_in}->{d_out}: {name} differs from dropout after the Linear");
        }
    }
}

#[test]
fn parameter_gradients_do_not_depend_on_the_thread_count() {
    let _rng = rng_lock();
    use burn::nn::LayerNormConfig;
    let device = flex();
    device.seed(12);
    // Sums over many rows of partial sums per task: a bias's gradient and LayerNorm's γ and β.
    let (rows, d_in, d_out) = (4 * 1100, 40, 56);
    let x = Tensor::<2>::random([rows, d_in], Distribution::Normal(0.0, 1.0), &device);
    let r = Tensor::<2>::random([rows, d_out], Distribution::Normal(0.0, 1.0), &device);
    let weight = Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, 0.3), &device);
    let bias = Tensor::<1>::random([d_out], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let norm = LayerNormConfig::new(d_out).init(&device);
    let grads = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
        pool.install(|| {
            let y = cpu::layer_norm(&norm, 1e-5, cpu::affine(x.clone(), weight.clone(), bias.clone(), cpu::WeightLayout::InOut));
            let grads = (y * r.clone()).sum().backward();
            let beta = norm.beta.as_ref().expect("beta").val();
            [bias.grad(&grads).expect("bias"), norm.gamma.val().grad(&grads).expect("gamma"), beta.grad(&grads).expect("beta")].map(|g| values(g).iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        })
    };
    let one = grads(1);
    for threads in [2, 3, 5] {
        for ((name, a), b) in ["bias", "gamma", "beta"].iter().zip(&one).zip(&grads(threads)) {
            assert!(a == b, "{name} gradient on {threads} threads differs from one thread's");
        }
    }
}

#[test]
fn transformer_encoder_matches_burns_forward_pre_and_post_norm() {
    let _rng = rng_lock();
    use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderInput};
    for norm_first in [true, false] {
        let device = flex();
        device.seed(2);
        let encoder = TransformerEncoderConfig::new(24, 48, 3, 2).with_dropout(0.0).with_norm_first(norm_first).with_layer_norm_eps(1e-6).init(&device);
        assert_same_function(&format!("encoder (norm_first {norm_first})"), [2, 7, 24], 1.0, |x| cpu::transformer_encoder(&encoder, 1e-6, x), |x| encoder.forward(TransformerEncoderInput::new(x)));
    }
}

#[test]
fn fused_softmax_is_exact_enough_over_the_whole_exponent_range() {
    let _rng = rng_lock();
    // Rows spanning e^-80 .. e^0 after the max is subtracted, and a masked (-1e9) entry.
    let device = Device::flex();
    let row: Vec<f32> = (0..81).map(|i| -(i as f32)).chain([-1.0e9]).collect();
    let x = Tensor::<2>::from_data(burn::tensor::TensorData::new(row.clone(), [1, row.len()]), &device);
    let ours = values(cpu::softmax(x.clone()));
    let exact: Vec<f64> = {
        let e: Vec<f64> = row.iter().map(|&v| f64::from(v).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    };
    for (i, (&a, &b)) in ours.iter().zip(&exact).enumerate() {
        assert!((f64::from(a) - b).abs() <= 4e-7 * b + 1e-37, "softmax[{i}]: {a} vs {b}");
    }
}

#[test]
fn fused_batch_norm_matches_burn_with_all_gradients_and_running_statistics() {
    let _rng = rng_lock();
    use burn::module::{Module, Param};
    use burn::nn::{BatchNorm, BatchNormConfig};
    let device = flex();
    device.seed(8);
    let gamma = Tensor::<1>::random([6], Distribution::Normal(1.0, 0.5), &device);
    let beta = Tensor::<1>::random([6], Distribution::Normal(0.0, 0.5), &device);
    let layer = || {
        let mut bn = BatchNormConfig::new(6).with_momentum(0.3).init(&device);
        bn.gamma = Param::from_tensor(gamma.clone());
        bn.beta = Param::from_tensor(beta.clone());
        bn
    };
    let (ours_bn, burns_bn) = (layer(), layer());

    fn run<const D: usize>(bn: &BatchNorm, x: &Tensor<D>, r: &Tensor<D>, f: impl Fn(&BatchNorm, Tensor<D>) -> Tensor<D>) -> [Vec<f32>; 6] {
        let xg = x.clone().require_grad();
        let y = f(bn, xg.clone());
        let grads = (y.clone() * r.clone()).sum().backward();
        [
            values(y),
            values(xg.grad(&grads).expect("x")),
            values(bn.gamma.val().grad(&grads).expect("gamma")),
            values(bn.beta.val().grad(&grads).expect("beta")),
            values(bn.running_mean.value()),
            values(bn.running_var.value()),
        ]
    }
    let names = ["output", "input gradient", "gamma gradient", "beta gradient", "running mean", "running variance"];
    // Convolution activations (with an offset, so the mean matters) and a projection head's [batch, features].
    let x4 = Tensor::<4>::random([5, 6, 7, 3], Distribution::Normal(1.5, 2.0), &device);
    let r4 = Tensor::<4>::random([5, 6, 7, 3], Distribution::Normal(0.0, 1.0), &device);
    let x2 = Tensor::<2>::random([9, 6], Distribution::Normal(-0.5, 3.0), &device);
    let r2 = Tensor::<2>::random([9, 6], Distribution::Normal(0.0, 1.0), &device);
    // Each step also with the ReLU fused (`batch_norm_relu` against burn's BatchNorm and relu).
    use burn::tensor::activation::relu;
    for (step, fused_relu) in [(0, false), (1, true), (2, false), (3, true)] {
        let ours = if fused_relu { run(&ours_bn, &x4, &r4, cpu::batch_norm_relu) } else { run(&ours_bn, &x4, &r4, cpu::batch_norm) };
        let burns = run(&burns_bn, &x4, &r4, |bn, x| if fused_relu { relu(bn.forward(x)) } else { bn.forward(x) });
        for ((name, a), b) in names.iter().zip(&ours).zip(&burns) {
            assert_close(&format!("4-D batch norm step {step}, relu {fused_relu}: {name}"), a, b);
        }
        let ours = if fused_relu { run(&ours_bn, &x2, &r2, cpu::batch_norm_relu) } else { run(&ours_bn, &x2, &r2, cpu::batch_norm) };
        let burns = run(&burns_bn, &x2, &r2, |bn, x| if fused_relu { relu(bn.forward(x)) } else { bn.forward(x) });
        for ((name, a), b) in names.iter().zip(&ours).zip(&burns) {
            assert_close(&format!("2-D batch norm step {step}, relu {fused_relu}: {name}"), a, b);
        }
    }
    // Without autodiff (evaluation) it is burn's inference path on the running statistics.
    let eval = Tensor::<4>::random([2, 6, 3, 3], Distribution::Normal(0.0, 1.0), &Device::flex());
    let ours_valid = ours_bn.clone().valid();
    assert_close("inference", &values(cpu::batch_norm(&ours_valid, eval.clone())), &values(ours_valid.forward(eval)));
}

#[test]
fn fused_adamw_step_is_burns_adamw_bit_for_bit() {
    use burn::optim::{AdamWConfig, AdamWState, Optimizer};
    let _rng = rng_lock();
    let device = Device::flex();
    device.seed(11);
    // Three parallel chunks, the last one partial.
    let shape = [7, 5000];
    for weight_decay in [0.05f32, 0.0] {
        let burns = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.95).with_epsilon(1e-6).with_weight_decay(weight_decay).build();
        let mut param = Tensor::<2>::random(shape, Distribution::Normal(0.0, 0.1), &device);
        let mut reference = param.clone();
        let (mut moments, mut state): (Option<(Tensor<2>, Tensor<2>)>, Option<AdamWState<2>>) = (None, None);
        for time in 1..=4 {
            let grad = Tensor::<2>::random(shape, Distribution::Normal(0.0, 0.01 * time as f64), &device);
            let lr = 1.5e-3 / time as f64;
            let step = cpu::AdamWStep { beta_1: 0.9, beta_2: 0.95, epsilon: 1e-6, weight_decay, lr, time };
            let (p, m, v) = cpu::adamw_step(param, grad.clone(), moments, step);
            let (r, s) = burns.step(lr, reference, grad, state);
            let s = s.expect("AdamW keeps state");
            for (what, ours, burns) in [("parameter", &p, &r), ("first moment", &m, &s.momentum.moment_1), ("second moment", &v, &s.momentum.moment_2)] {
                let (ours, burns) = (values(ours.clone()), values(burns.clone()));
                let differ = ours.iter().zip(&burns).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                assert_eq!(differ, 0, "{what} at step {time} (weight decay {weight_decay}): {differ} elements differ from burn's");
            }
            assert_eq!(s.momentum.time, time, "burn's step count");
            (param, reference, moments, state) = (p, r, Some((m, v)), Some(s));
        }
    }
}

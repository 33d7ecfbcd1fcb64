//! The CPU kernels' hand-written backward passes (`alexvgg_cpu::autodiff`) against PyTorch's
//! gradients, layer by layer (`tests/fixtures/op_grads.safetensors`, written by
//! `scripts/make_fixtures.py op_grads`): grouped and asymmetric-padded convolutions on the
//! direct and Winograd paths, stride 4, ceil-mode and TensorFlow-SAME max pools, LRN in
//! TensorFlow's and Caffe's parameters, fully connected layers with and without ReLU. burn's own composition is held to the same values, and
//! a finite-difference check covers each kernel without any reference framework.

mod common;

use std::sync::Arc;

use alexvgg::cpu::autodiff::CpuKernels;
use alexvgg::models::kernels::{self, LayerKernels, with_kernels};
use alexvgg::models::{BlockLinear, LrnConfig};
use alexvgg_import::TensorMap;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};
use common::*;

/// `(name, kernel, stride, padding (top, left, bottom, right), groups, relu)`.
type ConvCase = (&'static str, usize, usize, [usize; 4], usize, bool);

/// The convolutions, as `OP_CONVS` in the fixture script.
const CONVS: [ConvCase; 5] = [
    ("conv_grouped_asym", 5, 1, [2, 1, 1, 2], 2, true),
    ("conv3_odd_channels", 3, 1, [1, 1, 1, 1], 1, false),
    ("conv_stride4", 11, 4, [3, 3, 5, 5], 1, true),
    ("conv3_winograd_grouped", 3, 1, [1, 1, 1, 1], 2, true),
    ("conv5_winograd", 5, 1, [2, 2, 2, 2], 1, true),
];

/// `(name, depth_radius, bias, alpha (TensorFlow's), beta)`, as `OP_LRNS`.
const LRNS: [(&str, usize, f64, f64, f64); 2] = [
    ("lrn_tf", 2, 1.0, 1e-2, 0.75),
    ("lrn_caffe_beta", 3, 2.0, 3e-3, 0.6),
];

/// `(name, relu)`, as `OP_LINEARS`.
const LINEARS: [(&str, bool); 2] = [("linear_relu", true), ("linear_logits", false)];

/// `(name, relu)`, as `OP_BATCH_NORMS`.
const BATCH_NORMS: [(&str, bool); 2] = [("bn_relu", true), ("bn", false)];

/// `(name, kernel, stride, padding, ceil_mode)`, as `OP_POOLS`.
const POOLS: [(&str, usize, usize, [usize; 4], bool); 2] = [
    ("pool_ceil", 3, 2, [0, 0, 0, 0], true),
    ("pool_same_asym", 3, 2, [0, 0, 1, 1], false),
];

fn conv_layer(
    fx: &TensorMap,
    name: &str,
    stride: usize,
    pad: [usize; 4],
    groups: usize,
    device: &Device,
) -> Conv2d {
    let w = &fx[&format!("{name}.weight")];
    let [cout, cin_g, k, _]: [usize; 4] = w.shape.clone().try_into().unwrap();
    let [t, l, b, r] = pad;
    let mut conv = Conv2dConfig::new([cin_g * groups, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
        .with_groups(groups)
        .init(device);
    conv.weight = Param::from_tensor(upload::<4>(w, device));
    conv.bias = Some(Param::from_tensor(upload::<1>(
        &fx[&format!("{name}.bias")],
        device,
    )));
    conv
}

fn pool_layer(kernel: usize, stride: usize, [t, l, b, r]: [usize; 4], ceil: bool) -> MaxPool2d {
    MaxPool2dConfig::new([kernel, kernel])
        .with_strides([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
        .with_ceil_mode(ceil)
        .init()
}

/// One layer as a closure of its input, for the three layer kinds.
enum Layer {
    Conv(Conv2d, bool),
    Lrn(alexvgg::models::Lrn),
    Pool(MaxPool2d),
    /// Inputs and outputs `[batch, features, 1, 1]` here.
    Linear(BlockLinear, bool),
    BatchNorm(BatchNorm, bool),
}

impl Layer {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // the three calls through which the models route these layers
        match self {
            Layer::Conv(conv, relu) => kernels::conv2d(conv, x, *relu),
            Layer::Lrn(lrn) => kernels::lrn(lrn, x),
            Layer::Pool(pool) => kernels::max_pool2d(pool, x),
            Layer::BatchNorm(bn, relu) => kernels::batch_norm(bn, x, *relu),
            Layer::Linear(fc, relu) => {
                let [b, f, _, _] = x.dims();
                let y = kernels::linear(fc, x.reshape([b, f]), *relu);
                let [b, f] = y.dims();
                y.reshape([b, f, 1, 1])
            }
        }
    }
}

/// A fixture tensor as a 4-D tensor (`[batch, features]` as `[batch, features, 1, 1]`).
fn upload4(t: &alexvgg_import::RawTensor, device: &Device) -> Tensor<4> {
    let mut shape = t.shape.clone();
    shape.resize(4, 1);
    Tensor::from_data(TensorData::new(t.data.clone(), shape), device)
}

/// Every case of the fixture as `(name, layer, input gradient wanted)`.
fn cases(fx: &TensorMap, device: &Device) -> Vec<(String, Layer, bool)> {
    let mut out = Vec::new();
    for (name, _, stride, pad, groups, relu) in CONVS {
        let conv = conv_layer(fx, name, stride, pad, groups, device);
        out.push((name.to_string(), Layer::Conv(conv, relu), stride == 1));
    }
    for (name, radius, bias, alpha, beta) in LRNS {
        let lrn = LrnConfig::new(radius)
            .with_bias(bias)
            .with_alpha(alpha)
            .with_beta(beta)
            .init();
        out.push((name.to_string(), Layer::Lrn(lrn), true));
    }
    for (name, relu) in LINEARS {
        let w = &fx[&format!("{name}.weight")];
        let mut fc = BlockLinear::new(w.shape[0], w.shape[1], None, device);
        fc.blocks[0].weight = Param::from_tensor(upload::<2>(w, device));
        fc.blocks[0].bias = Some(Param::from_tensor(upload::<1>(
            &fx[&format!("{name}.bias")],
            device,
        )));
        out.push((name.to_string(), Layer::Linear(fc, relu), true));
    }
    for (name, relu) in BATCH_NORMS {
        let gamma = &fx[&format!("{name}.gamma")];
        let mut bn = BatchNormConfig::new(gamma.shape[0]).init(device);
        bn.gamma = Param::from_tensor(upload::<1>(gamma, device));
        bn.beta = Param::from_tensor(upload::<1>(&fx[&format!("{name}.beta")], device));
        out.push((name.to_string(), Layer::BatchNorm(bn, relu), true));
    }
    for (name, kernel, stride, pad, ceil) in POOLS {
        out.push((
            name.to_string(),
            Layer::Pool(pool_layer(kernel, stride, pad, ceil)),
            true,
        ));
    }
    out
}

/// Forward and backward of `sum(layer(x) * r)`: the output and the gradients of the input
/// (when wanted) and of the convolution's weight and bias.
fn run(
    layer: &Layer,
    x: Tensor<4>,
    r: Tensor<4>,
    x_grad: bool,
    kernels: Option<Arc<dyn LayerKernels>>,
) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let x = if x_grad { x.require_grad() } else { x };
    let y = with_kernels(kernels, || layer.forward(x.clone()));
    let out = values(y.clone());
    let grads = (y * r).sum().backward();
    let mut found = Vec::new();
    if x_grad {
        found.push((
            "dx".to_string(),
            values(x.grad(&grads).expect("input gradient")),
        ));
    }
    let (weight, bias) = match layer {
        Layer::Conv(conv, _) => (
            values(conv.weight.grad(&grads).unwrap()),
            conv.bias.as_ref(),
        ),
        Layer::Linear(fc, _) => (
            values(fc.blocks[0].weight.grad(&grads).unwrap()),
            fc.blocks[0].bias.as_ref(),
        ),
        _ => return (out, found),
    };
    found.push(("dweight".into(), weight));
    found.push((
        "dbias".into(),
        values(bias.unwrap().grad(&grads).expect("bias gradient")),
    ));
    (out, found)
}

#[test]
fn kernel_gradients_match_pytorch_and_burn_on_every_cpu_backend() {
    let fx = tensors("op_grads.safetensors");
    for (backend, device, _) in devices() {
        if backend == "wgpu" {
            continue; // the kernels decline there: covered by burn's own path
        }
        let device = device.autodiff();
        for (name, layer, x_grad) in cases(&fx, &device) {
            let x = upload4(&fx[&format!("{name}.x")], &device);
            let r = upload4(&fx[&format!("{name}.r")], &device);
            let kernels = Arc::new(CpuKernels::new());
            let shared: Arc<dyn LayerKernels> = kernels.clone();
            let (_, ours) = run(&layer, x.clone(), r.clone(), x_grad, Some(shared.clone()));
            assert_eq!(
                kernels.computed(),
                1,
                "{backend} {name}: the kernels computed it"
            );
            // the same gradients, bit for bit, on a second run (fixed reduction order)
            let (_, again) = run(&layer, x.clone(), r.clone(), x_grad, Some(shared));
            assert_eq!(ours, again, "{backend} {name}: not reproducible");
            let (_, burn) = run(&layer, x, r, x_grad, None);
            for ((key, got), (_, plain)) in ours.iter().zip(&burn) {
                let want = &fx[&format!("{name}.{key}")].data;
                assert_close(
                    &format!("{backend} {name} {key} (kernels)"),
                    got,
                    want,
                    1e-4,
                );
                assert_close(&format!("{backend} {name} {key} (burn)"), plain, want, 1e-4);
            }
        }
    }
}

#[test]
fn kernels_decline_what_they_do_not_compute() {
    let fx = tensors("op_grads.safetensors");
    let device = cpu().autodiff();
    let kernels = Arc::new(CpuKernels::new());
    let shared: Arc<dyn LayerKernels> = kernels.clone();
    // a strided convolution whose input needs a gradient: burn's composition runs
    let conv = conv_layer(&fx, "conv_stride4", 4, [3, 3, 5, 5], 1, &device);
    let x = upload::<4>(&fx["conv_stride4.x"], &device).require_grad();
    let y = with_kernels(Some(shared.clone()), || {
        Layer::Conv(conv, true).forward(x.clone())
    });
    assert_eq!(kernels.computed(), 0);
    let r = upload::<4>(&fx["conv_stride4.r"], &device);
    let g = (y * r).sum().backward();
    assert!(x.grad(&g).is_some());
    // tensors without autodiff: the inference path is the engine's, not these kernels'
    let plain = device.clone().without_autodiff();
    let x = upload::<4>(&fx["lrn_tf.x"], &plain);
    let lrn = LrnConfig::new(2).init();
    with_kernels(Some(shared), || Layer::Lrn(lrn).forward(x));
    assert_eq!(kernels.computed(), 0);
}

/// Central differences of `sum(layer(x) * r)` along a random direction of the input (and of
/// the convolution's weight), against the kernels' gradients: no reference framework involved.
#[test]
fn kernel_gradients_agree_with_finite_differences() {
    let fx = tensors("op_grads.safetensors");
    let device = cpu().autodiff();
    for (name, layer, x_grad) in cases(&fx, &device) {
        let x = &fx[&format!("{name}.x")];
        let r = &fx[&format!("{name}.r")];
        let kernels: Arc<dyn LayerKernels> = Arc::new(CpuKernels::new());
        let (_, grads) = run(
            &layer,
            upload4(x, &device),
            upload4(r, &device),
            x_grad,
            Some(kernels.clone()),
        );
        if !x_grad {
            continue;
        }
        let dx = &grads[0].1;
        // a direction that moves no max-pool input across another (the values are distinct by
        // at least 1/n): small steps
        let mut g = alexvgg::inference::rng::SplitMix64::new(3);
        let dir: Vec<f32> = x.data.iter().map(|_| g.uniform() as f32 - 0.5).collect();
        // (batch normalization is curved and crosses ReLU kinks at larger steps)
        let eps = match &layer {
            Layer::Pool(_) => 5e-5,
            Layer::BatchNorm(..) => 2e-3,
            _ => 1e-2,
        };
        let loss = |sign: f32| -> f64 {
            let shifted: Vec<f32> = x
                .data
                .iter()
                .zip(&dir)
                .map(|(v, d)| v + sign * eps * d)
                .collect();
            let mut shape = x.shape.clone();
            shape.resize(4, 1);
            let t = Tensor::<4>::from_data(TensorData::new(shifted, shape), &device);
            let y = values(with_kernels(Some(kernels.clone()), || layer.forward(t)));
            y.iter()
                .zip(&r.data)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum()
        };
        let numeric = (loss(1.0) - loss(-1.0)) / (2.0 * eps as f64);
        let analytic: f64 = dx
            .iter()
            .zip(&dir)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!(
            (numeric - analytic).abs() <= 2e-2 * analytic.abs().max(1.0),
            "{name}: directional derivative {analytic} vs finite differences {numeric}"
        );
    }
}

/// Batch normalization through the kernels updates the running statistics as burn's layer does
/// (momentum 0.1, biased variance), and declines in inference mode.
#[test]
fn batch_norm_kernels_keep_burn_s_running_statistics() {
    let fx = tensors("op_grads.safetensors");
    let device = cpu().autodiff();
    let layer = |device: &Device| {
        let Layer::BatchNorm(bn, _) = cases(&fx, device)
            .into_iter()
            .find(|c| c.0 == "bn_relu")
            .unwrap()
            .1
        else {
            unreachable!()
        };
        bn
    };
    let x = upload4(&fx["bn_relu.x"], &device);
    let kernels = Arc::new(CpuKernels::new());
    let shared: Arc<dyn LayerKernels> = kernels.clone();
    let (ours, plain) = (layer(&device), layer(&device));
    for _ in 0..2 {
        with_kernels(Some(shared.clone()), || {
            kernels::batch_norm(&ours, x.clone(), true)
        });
        kernels::batch_norm(&plain, x.clone(), true);
    }
    assert_eq!(kernels.computed(), 2);
    assert_close(
        "running mean",
        &values(ours.running_mean.value()),
        &values(plain.running_mean.value()),
        1e-5,
    );
    assert_close(
        "running var",
        &values(ours.running_var.value()),
        &values(plain.running_var.value()),
        1e-5,
    );
    // a layer in inference mode (frozen) is burn's
    let mut eval = layer(&device);
    eval.training = Param::from_bool(false);
    with_kernels(Some(shared), || kernels::batch_norm(&eval, x, true));
    assert_eq!(kernels.computed(), 2);
}

/// NaN reaches the output as through burn's layers (a diverged network must show in its loss):
/// the kernels keep it through ReLU and max pooling, and leave non-finite convolutions to burn.
#[test]
fn nan_passes_through_the_kernels_as_through_burn() {
    let fx = tensors("op_grads.safetensors");
    let device = cpu().autodiff();
    let kernels = Arc::new(CpuKernels::new());
    let shared: Arc<dyn LayerKernels> = kernels.clone();
    let poisoned = |key: &str| {
        let mut t = fx[key].clone();
        t.data[3] = f32::NAN;
        upload4(&t, &device)
    };
    for name in [
        "linear_relu",
        "pool_ceil",
        "bn_relu",
        "conv_grouped_asym",
        "lrn_tf",
    ] {
        let (_, layer, _) = cases(&fx, &device)
            .into_iter()
            .find(|c| c.0 == name)
            .unwrap();
        let y = with_kernels(Some(shared.clone()), || {
            layer.forward(poisoned(&format!("{name}.x")))
        });
        assert!(values(y).iter().any(|v| v.is_nan()), "{name}: NaN lost");
    }
    // linear, pool, batch norm and LRN computed it; the convolution went to burn
    assert_eq!(kernels.computed(), 4);
}

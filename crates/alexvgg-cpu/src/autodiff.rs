//! The engine's kernels under burn's autodiff: [`CpuKernels`] stands in for the convolutions
//! (with their ReLU), LRN and max pools of a model trained on a CPU backend (flex, ndarray),
//! with hand-written backward passes ([`crate::train`]).
//!
//! A model runs them inside [`alexvgg_models::kernels::with_kernels`]; the kernels decline
//! (and burn's composition runs) on every other backend, on tensors without autodiff, for
//! non-`f32` values, dilated windows, convolutions without bias, and strided convolutions
//! whose input needs a gradient (only the first layer is strided, and its input is the image).
//!
//! Activations cross between burn and the kernels channels-last: a result is handed to burn as
//! an `[N, H, W, C]` tensor viewed as `[N, C, H, W]` (a permutation, no copy), so when the next
//! layer is one of ours too, reading it back channels-last is a plain copy.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use alexvgg_models::Lrn;
use alexvgg_models::kernels::LayerKernels;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DispatchKindConversion, DispatchTensor, TensorMetadata};
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::{DType, Tensor, TensorData};

use crate::kernels::{ConvGeometry, Nhwc, lrn};
use crate::plan::{ConvLayer, geometry};
use crate::pool::Pool;
use crate::simd::{Kernel, Simd};
use crate::train::{
    all_finite, batch_norm_backward, batch_norm_train, conv_weight_grad, input_grad_padding,
    input_grad_weights, linear_backward, linear_forward, lrn_backward, max_pool_argmax,
    max_pool_backward, relu_mask, relu_passes,
};

/// The kernels of this crate as [`LayerKernels`], for training on the CPU backends compiled in.
#[derive(Debug)]
pub struct CpuKernels {
    simd: Simd,
    pool: Pool,
    computed: AtomicUsize,
}

impl CpuKernels {
    /// Kernels at the machine's SIMD level ([`Simd::current`]).
    pub fn new() -> Self {
        Self::with_simd(Simd::current())
    }

    /// Kernels at SIMD level `simd` (lowered to what the CPU has).
    pub fn with_simd(simd: Simd) -> Self {
        Self {
            simd: simd.min(Simd::best()),
            pool: Pool::new(),
            computed: AtomicUsize::new(0),
        }
    }

    /// How many layers these kernels have computed (the others were declined to burn).
    pub fn computed(&self) -> usize {
        self.computed.load(Ordering::Relaxed)
    }

    /// As the `Arc<dyn LayerKernels>` that [`alexvgg_models::kernels::with_kernels`] takes
    /// (an `Arc<CpuKernels>` coerces to it too, keeping [`computed`](Self::computed) at hand).
    pub fn shared(self) -> Arc<dyn LayerKernels> {
        Arc::new(self)
    }
}

impl Default for CpuKernels {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `op` on the first compiled-in CPU backend the tensors live on (under autodiff),
/// counting the layers it computed.
macro_rules! on_cpu_backends {
    ($self:ident, $op:ident ( $($arg:expr),* )) => {{
        let run = || {
            #[cfg(feature = "flex")]
            if let Some(y) = $op::<burn::backend::Flex>($($arg),*) {
                return Some(y);
            }
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            if let Some(y) = $op::<burn::backend::NdArray>($($arg),*) {
                return Some(y);
            }
            None
        };
        let y = run();
        if y.is_some() {
            $self.computed.fetch_add(1, Ordering::Relaxed);
        }
        y
    }};
}

impl LayerKernels for CpuKernels {
    fn conv2d(&self, conv: &Conv2d, x: &Tensor<4>, relu: bool) -> Option<Tensor<4>> {
        if conv.dilation != [1, 1] {
            return None;
        }
        on_cpu_backends!(self, conv_on(self, conv, x, relu))
    }

    fn lrn(&self, layer: &Lrn, x: &Tensor<4>) -> Option<Tensor<4>> {
        on_cpu_backends!(self, lrn_on(self, layer, x))
    }

    fn max_pool2d(&self, pool: &MaxPool2d, x: &Tensor<4>) -> Option<Tensor<4>> {
        if pool.dilation != [1, 1] {
            return None;
        }
        on_cpu_backends!(self, pool_on(self, pool, x))
    }

    fn linear(&self, fc: &Linear, x: &Tensor<2>, relu: bool) -> Option<Tensor<2>> {
        on_cpu_backends!(self, linear_on(fc, x, relu))
    }

    fn batch_norm(&self, bn: &BatchNorm, x: &Tensor<4>, relu: bool) -> Option<Tensor<4>> {
        if !bn.training.is_enabled() {
            return None; // inference mode (a frozen layer): burn's running-statistics path
        }
        on_cpu_backends!(self, batch_norm_on(bn, x, relu))
    }
}

/// How the kernels move values between a CPU backend's tensors and their host buffers.
pub trait HostValues: Backend {
    /// Calls `f` with the values of `t` in logical row-major order (`f32` tensors only).
    fn with_values<R>(t: &FloatTensor<Self>, f: impl FnOnce(&[f32]) -> R) -> R {
        f(&host::<Self>(t.clone()))
    }

    /// The values of `t`, copied.
    fn values(t: &FloatTensor<Self>) -> Vec<f32> {
        Self::with_values(t, <[f32]>::to_vec)
    }

    /// An `[N, C, H, W]` tensor channels-last on the host: by default read channels-first and
    /// transposed on the host (what suits a backend whose reads of strided views are slow).
    fn to_nhwc(t: FloatTensor<Self>) -> Nhwc {
        let dims: [usize; 4] = t.shape().dims();
        Nhwc::from_nchw(&host::<Self>(t), dims, &Pool::new())
    }

    /// A channels-last buffer as an `[N, C, H, W]` tensor: by default transposed on the host
    /// into a contiguous tensor.
    fn from_nhwc(y: Nhwc, device: &Self::Device) -> FloatTensor<Self> {
        let shape = vec![y.batch, y.channels, y.height, y.width];
        from_host::<Self>(y.to_nchw(), shape, device)
    }
}

/// flex: parameters borrowed in place, activations handed over channels-last as permuted
/// views (flex reads and writes strided views fast, and a view of our own output reads back
/// with a plain copy).
#[cfg(feature = "flex")]
impl HostValues for burn::backend::Flex {
    fn with_values<R>(t: &FloatTensor<Self>, f: impl FnOnce(&[f32]) -> R) -> R {
        // a parameter's own buffer, borrowed (fc6 holds 151 MB)
        match t.as_slice::<f32>() {
            Some(values) => f(values),
            None => f(&host::<Self>(t.clone())),
        }
    }

    fn to_nhwc(t: FloatTensor<Self>) -> Nhwc {
        use burn::backend::ops::FloatTensorOps;
        let [batch, channels, height, width] = t.shape().dims();
        let data = host::<Self>(Self::float_permute(t, &[0, 2, 3, 1]));
        Nhwc {
            data,
            batch,
            height,
            width,
            channels,
        }
    }

    fn from_nhwc(y: Nhwc, device: &Self::Device) -> FloatTensor<Self> {
        use burn::backend::ops::FloatTensorOps;
        let shape = [y.batch, y.height, y.width, y.channels];
        let t = Self::float_from_data(TensorData::new(y.data, shape), device);
        Self::float_permute(t, &[0, 3, 1, 2])
    }
}

/// ndarray: buffers borrowed where they are in standard layout, activations transposed on the
/// host (its reads of a shared or strided array go element by element: they took 62% of an
/// AlexNet step).
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
impl HostValues for burn::backend::NdArray {
    fn with_values<R>(t: &FloatTensor<Self>, f: impl FnOnce(&[f32]) -> R) -> R {
        if let burn::backend::ndarray::NdArrayTensor::F32(storage) = t {
            let view = storage.view();
            if let Some(values) = view.as_slice() {
                return f(values);
            }
        }
        f(&host::<Self>(t.clone()))
    }

    fn to_nhwc(t: FloatTensor<Self>) -> Nhwc {
        let dims: [usize; 4] = t.shape().dims();
        Self::with_values(&t, |v| Nhwc::from_nchw(v, dims, &Pool::new()))
    }
}

type Ad<B> = Autodiff<B, NoCheckpointing>;

/// `x` as an autodiff tensor of backend `B` holding `f32` values, if it is one.
fn primitive<B: Backend, const D: usize>(x: Tensor<D>) -> Option<FloatTensor<Ad<B>>>
where
    DispatchTensor: DispatchKindConversion<Ad<B>>,
{
    let p = x.try_into_primitive::<Ad<B>>().ok()?;
    (p.primitive().dtype() == DType::F32).then_some(p)
}

/// The values of a tensor on the host, `f32`, in its logical row-major order.
fn host<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    let data = burn::backend::try_read_sync(B::float_into_data(t))
        .expect("a CPU backend reads synchronously")
        .expect("reading a CPU tensor");
    data.try_into_vec::<f32>().expect("an f32 tensor")
}

/// A host buffer as a tensor of shape `shape`.
fn from_host<B: Backend>(data: Vec<f32>, shape: Vec<usize>, device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(data, shape), device)
}

/// A saved buffer, shown by size only.
#[derive(Clone)]
struct Saved<T>(Arc<T>);

impl<T> fmt::Debug for Saved<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Saved(..)")
    }
}

/// What a convolution's backward pass needs.
#[derive(Clone, Debug)]
struct ConvState {
    /// The input, when the weights need a gradient.
    x: Option<Saved<Nhwc>>,
    /// Where the ReLU passed its input (output above zero), when the layer has one.
    mask: Option<Saved<Vec<bool>>>,
    /// The filters, when the input needs a gradient.
    weight: Option<Saved<Vec<f32>>>,
    dims: [usize; 4],
    groups: usize,
    geometry: ConvGeometry,
    input: [usize; 2],
    simd: Simd,
}

#[derive(Debug)]
struct ConvBackward;

impl<B: HostValues> Backward<B, 3> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let s = ops.state;
        let (dy, device) = nhwc_grad::<B>(grads.consume::<B>(&ops.node), s.mask.as_ref());
        let [cout, cin_g, kh, kw] = s.dims;
        if node_w.is_some() || node_b.is_some() {
            let x =
                s.x.as_ref()
                    .expect("the input is saved when the weights need a gradient");
            let (dw, db) = conv_weight_grad(&x.0, &dy, s.dims, s.groups, &s.geometry);
            register::<B>(
                grads,
                node_w.map(|n| n.id),
                dw,
                vec![cout, cin_g, kh, kw],
                &device,
            );
            register::<B>(grads, node_b.map(|n| n.id), db, vec![cout], &device);
        }
        if let Some(node) = node_x {
            let weight = s
                .weight
                .as_ref()
                .expect("the filters are saved for the input gradient");
            let flipped = input_grad_weights(&weight.0, s.dims, s.groups);
            let [t, l, b, r] = input_grad_padding([kh, kw], s.geometry.padding);
            let layer = ConvLayer::new(
                flipped,
                [cin_g * s.groups, cout / s.groups, kh, kw],
                s.groups,
                vec![0.0; cin_g * s.groups],
                [1, 1],
                PaddingConfig2d::Explicit(t, l, b, r),
                [dy.batch, dy.height, dy.width],
                s.simd,
            );
            let dx = layer
                .run(&dy, false, &Pool::new())
                .expect("the input gradient's window fits");
            debug_assert_eq!([dx.height, dx.width], s.input);
            grads.register::<B>(node.id, B::from_nhwc(dx, &device));
        }
    }
}

/// `out` as the output of `op` on the autodiff tape (with the backward state `state()`, built
/// only when some input needs a gradient), as a tensor.
fn record<B, O, const N: usize, const D: usize>(
    op: O,
    nodes: [NodeGuard; N],
    out: FloatTensor<B>,
    state: impl FnOnce() -> O::State,
) -> Tensor<D>
where
    B: Backend,
    O: Backward<B, N>,
    DispatchTensor: DispatchKindConversion<Ad<B>>,
{
    let out = match op
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state(), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive::<Ad<B>>(out)
}

/// Where a ReLU passed its input (output `y`), kept for the backward pass when the layer has
/// a ReLU and one of its `inputs` needs a gradient.
fn relu_mask_of<B: Backend, const N: usize>(
    relu: bool,
    inputs: [&FloatTensor<Ad<B>>; N],
    y: &[f32],
) -> Option<Saved<Vec<bool>>> {
    (relu && inputs.iter().any(|t| t.is_tracked()))
        .then(|| Saved(Arc::new(y.iter().map(|&v| relu_passes(v)).collect())))
}

/// The gradient of a layer's output channels-last, with the layer's ReLU `mask` applied, and
/// its device.
fn nhwc_grad<B: HostValues>(
    grad: FloatTensor<B>,
    mask: Option<&Saved<Vec<bool>>>,
) -> (Nhwc, B::Device) {
    let device = grad.device();
    let mut dy = B::to_nhwc(grad);
    if let Some(mask) = mask {
        relu_mask(&mut dy.data, &mask.0);
    }
    (dy, device)
}

fn register<B: Backend>(
    grads: &mut Gradients,
    node: Option<NodeId>,
    values: Vec<f32>,
    shape: Vec<usize>,
    device: &B::Device,
) {
    if let Some(id) = node {
        grads.register::<B>(id, from_host::<B>(values, shape, device));
    }
}

fn conv_on<B: HostValues>(
    k: &CpuKernels,
    conv: &Conv2d,
    x: &Tensor<4>,
    relu: bool,
) -> Option<Tensor<4>>
where
    DispatchTensor: DispatchKindConversion<Ad<B>>,
{
    let x = primitive::<B, 4>(x.clone())?;
    let w = primitive::<B, 4>(conv.weight.val())?;
    let b = primitive::<B, 1>(conv.bias.as_ref()?.val())?;
    if conv.stride != [1, 1] && x.is_tracked() {
        return None;
    }
    let device = x.primitive().device();
    let dims: [usize; 4] = w.primitive().shape().dims();
    let xs = B::to_nhwc(x.primitive().clone());
    let weight = B::values(w.primitive());
    let bias = B::values(b.primitive());
    // The engine's fused ReLU drops NaN; burn's keeps it, and a diverged network must show in
    // its loss: non-finite values run burn's composition.
    if !(all_finite(&xs.data) && all_finite(&weight) && all_finite(&bias)) {
        return None;
    }
    let layer = ConvLayer::new(
        weight.clone(),
        dims,
        conv.groups,
        bias,
        conv.stride,
        conv.padding.clone(),
        [xs.batch, xs.height, xs.width],
        k.simd,
    );
    // A window that does not fit: burn's composition reports it.
    let geometry = layer.geometry(&xs).ok()?;
    // The input gradient's convolution pads by `kernel - 1 - padding`: padding beyond
    // `kernel - 1` (a window of nothing but padding) stays with burn.
    let [kh, kw] = [dims[2], dims[3]];
    let [t, l, bo, r] = geometry.padding;
    if x.is_tracked() && (t.max(bo) >= kh || l.max(r) >= kw) {
        return None;
    }
    let y = layer.run(&xs, relu, &k.pool).ok()?;
    let mask = relu_mask_of(relu, [&x, &w, &b], &y.data);
    let out = B::from_nhwc(y, &device);
    let input = [xs.height, xs.width];
    let nodes = [x.node(), w.node(), b.node()];
    Some(record(ConvBackward, nodes, out, || ConvState {
        x: (w.is_tracked() || b.is_tracked()).then(|| Saved(Arc::new(xs))),
        mask,
        weight: x.is_tracked().then(|| Saved(Arc::new(weight))),
        dims,
        groups: conv.groups,
        geometry,
        input,
        simd: k.simd,
    }))
}

/// What LRN's backward pass needs.
#[derive(Clone, Debug)]
struct LrnState {
    x: Saved<Nhwc>,
    radius: usize,
    bias: f32,
    alpha: f32,
    beta: f32,
}

#[derive(Debug)]
struct LrnBackward;

impl<B: HostValues> Backward<B, 1> for LrnBackward {
    type State = LrnState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let s = ops.state;
            let (dy, device) = nhwc_grad::<B>(grad, None);
            let dx = lrn_backward(&s.x.0, &dy, s.radius, s.bias, s.alpha, s.beta);
            grads.register::<B>(node.id, B::from_nhwc(dx, &device));
        }
    }
}

fn lrn_on<B: HostValues>(k: &CpuKernels, layer: &Lrn, x: &Tensor<4>) -> Option<Tensor<4>>
where
    DispatchTensor: DispatchKindConversion<Ad<B>>,
{
    let x = primitive::<B, 4>(x.clone())?;
    let device = x.primitive().device();
    let xs = B::to_nhwc(x.primitive().clone());
    let (radius, bias, alpha, beta) = (
        layer.depth_radius,
        layer.bias as f32,
        layer.alpha as f32,
        layer.beta as f32,
    );
    let simd = k.simd.for_kernel(Kernel::Elementwise);
    let y = lrn(&xs, radius, bias, alpha, beta, simd, &k.pool);
    let out = B::from_nhwc(y, &device);
    Some(record(LrnBackward, [x.node()], out, || LrnState {
        x: Saved(Arc::new(xs)),
        radius,
        bias,
        alpha,
        beta,
    }))
}

/// What a max pool's backward pass needs.
#[derive(Clone, Debug)]
struct PoolState {
    arg: Saved<Vec<u32>>,
    input: [usize; 2],
}

#[derive(Debug)]
struct PoolBackward;

impl<B: HostValues> Backward<B, 1> for PoolBackward {
    type State = PoolState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let (dy, device) = nhwc_grad::<B>(grad, None);
            let dx = max_pool_backward(&dy, &ops.state.arg.0, ops.state.input);
            grads.register::<B>(node.id, B::from_nhwc(dx, &device));
        }
    }
}

fn pool_on<B: HostValues>(_: &CpuKernels, pool: &MaxPool2d, x: &Tensor<4>) -> Option<Tensor<4>>
where
    DispatchTensor: DispatchKindConversion<Ad<B>>,
{
    let x = primitive::<B, 4>(x.clone())?;
    let device = x.primitive().device();
    let xs = B::to_nhwc(x.primitive().clone());
    let g = geometry(
        "pool",
        &xs,
        pool.kernel_size,
        pool.stride,
        &pool.padding,
        pool.ceil_mode,
    )
    .ok()?;
    // A window lying entirely in the padding (padding at least the kernel) has no input to
    // take: burn's composition handles it.
    let [t, l, b, r] = g.padding;
    if t.max(b) >= pool.kernel_size[0] || l.max(r) >= pool.kernel_size[1] {
        return None;
    }
    let (y, arg) = max_pool_argmax(&xs, &g);
    let out = B::from_nhwc(y, &device);
    let input = [xs.height, xs.width];
    Some(record(PoolBackward, [x.node()], out, || PoolState {
        arg: Saved(Arc::new(arg)),
        input,
    }))
}

/// What a fully connected layer's backward pass needs.
#[derive(Clone, Debug)]
struct LinearState<B: Backend> {
    /// The input, when the weight needs a gradient.
    x: Option<Saved<Vec<f32>>>,
    /// The weight (a handle on the parameter's buffer), when the input needs a gradient.
    weight: Option<FloatTensor<B>>,
    /// Where the ReLU passed its input, when the layer has one.
    mask: Option<Saved<Vec<bool>>>,
    /// `[batch, d_in, d_out]`.
    dims: [usize; 3],
}

#[derive(Debug)]
struct LinearBackward;

impl<B: HostValues> Backward<B, 3> for LinearBackward {
    type State = LinearState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let device = grad.device();
        let s = ops.state;
        let [batch, d_in, d_out] = s.dims;
        let mut dy = B::values(&grad);
        if let Some(mask) = &s.mask {
            relu_mask(&mut dy, &mask.0);
        }
        let x =
            s.x.as_ref()
                .filter(|_| node_w.is_some())
                .map(|x| x.0.as_slice());
        let run = |weight: Option<&[f32]>| linear_backward(x, weight, &dy, s.dims);
        let (dw, db, dx) = match (&s.weight, node_x.is_some()) {
            (Some(w), true) => B::with_values(w, |w| run(Some(w))),
            _ => run(None),
        };
        if let Some(dw) = dw {
            register::<B>(grads, node_w.map(|n| n.id), dw, vec![d_in, d_out], &device);
        }
        register::<B>(grads, node_b.map(|n| n.id), db, vec![d_out], &device);
        if let Some(dx) = dx {
            register::<B>(grads, node_x.map(|n| n.id), dx, vec![batch, d_in], &device);
        }
    }
}

fn linear_on<B: HostValues>(fc: &Linear, x: &Tensor<2>, relu: bool) -> Option<Tensor<2>>
where
    DispatchTensor: DispatchKindConversion<Ad<B>>,
{
    let x = primitive::<B, 2>(x.clone())?;
    let w = primitive::<B, 2>(fc.weight.val())?;
    let b = primitive::<B, 1>(fc.bias.as_ref()?.val())?;
    let device = x.primitive().device();
    let [batch, d_in] = x.primitive().shape().dims();
    let [w_in, d_out] = w.primitive().shape().dims();
    if w_in != d_in {
        return None; // burn reports the mismatch
    }
    let xs = B::values(x.primitive());
    let bias = B::values(b.primitive());
    let dims = [batch, d_in, d_out];
    let y = B::with_values(w.primitive(), |weight| {
        linear_forward(&xs, weight, &bias, dims, relu)
    });
    let mask = relu_mask_of(relu, [&x, &w, &b], &y);
    let out = from_host::<B>(y, vec![batch, d_out], &device);
    let nodes = [x.node(), w.node(), b.node()];
    Some(record(LinearBackward, nodes, out, || LinearState {
        x: w.is_tracked().then(|| Saved(Arc::new(xs))),
        weight: x.is_tracked().then(|| w.primitive().clone()),
        mask,
        dims,
    }))
}

/// What batch normalization's backward pass needs.
#[derive(Clone, Debug)]
struct BatchNormState {
    /// The normalized input `x̂`.
    normalized: Saved<Vec<f32>>,
    /// `gamma / sqrt(var + eps)` per channel.
    scale: Vec<f32>,
    /// Where the ReLU passed its input, when the layer has one.
    mask: Option<Saved<Vec<bool>>>,
}

#[derive(Debug)]
struct BatchNormBackward;

impl<B: HostValues> Backward<B, 3> for BatchNormBackward {
    type State = BatchNormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let s = ops.state;
        let (dy, device) = nhwc_grad::<B>(grads.consume::<B>(&ops.node), s.mask.as_ref());
        let channels = dy.channels;
        let (dx, dgamma, dbeta) = batch_norm_backward(&s.normalized.0, &s.scale, &dy);
        register::<B>(
            grads,
            node_gamma.map(|n| n.id),
            dgamma,
            vec![channels],
            &device,
        );
        register::<B>(
            grads,
            node_beta.map(|n| n.id),
            dbeta,
            vec![channels],
            &device,
        );
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::from_nhwc(dx, &device));
        }
    }
}

fn batch_norm_on<B: HostValues>(bn: &BatchNorm, x: &Tensor<4>, relu: bool) -> Option<Tensor<4>>
where
    DispatchTensor: DispatchKindConversion<Ad<B>>,
{
    let xp = primitive::<B, 4>(x.clone())?;
    let gamma = primitive::<B, 1>(bn.gamma.val())?;
    let beta = primitive::<B, 1>(bn.beta.val())?;
    let device = xp.primitive().device();
    let xs = B::to_nhwc(xp.primitive().clone());
    let gamma_values = B::values(gamma.primitive());
    if gamma_values.len() != xs.channels {
        return None; // burn reports the mismatch
    }
    let beta_values = B::values(beta.primitive());
    let (y, normalized, mean, var) =
        batch_norm_train(&xs, &gamma_values, &beta_values, bn.epsilon, relu);
    // the running statistics, updated with burn's own tensor operations (as `BatchNorm` does)
    let stat_device = bn.running_mean.value_sync().device();
    let statistic =
        |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [xs.channels]), &stat_device);
    let m = bn.momentum;
    let running_mean = bn
        .running_mean
        .value_sync()
        .mul_scalar(1.0 - m)
        .add(statistic(mean).mul_scalar(m));
    let running_var = bn
        .running_var
        .value_sync()
        .mul_scalar(1.0 - m)
        .add(statistic(var.clone()).mul_scalar(m));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    let scale: Vec<f32> = gamma_values
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + bn.epsilon as f32).sqrt())
        .collect();
    let mask = relu_mask_of(relu, [&xp, &gamma, &beta], &y.data);
    let out = B::from_nhwc(y, &device);
    let nodes = [xp.node(), gamma.node(), beta.node()];
    Some(record(BatchNormBackward, nodes, out, || BatchNormState {
        normalized: Saved(Arc::new(normalized)),
        scale,
        mask,
    }))
}

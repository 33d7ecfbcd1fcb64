//! Where a faster implementation of a layer can stand in for burn's composition.
//!
//! The networks here are pure burn modules, and by default every layer runs burn's own
//! operations. A crate with its own kernels (`alexvgg-cpu`: channels-last convolutions with a
//! hand-written backward pass on the CPU backends) implements [`LayerKernels`] and runs a
//! forward pass inside [`with_kernels`]: each convolution (with its ReLU), LRN, max pool and
//! fully connected layer and batch normalization (each with its ReLU)
//! then asks the kernels first and falls back to burn when they decline (another backend, a
//! layer feature they lack). The model keeps one code path; which kernels compute it is the
//! caller's choice for the span of one call, on the calling thread only, so tests and threads
//! that do not ask for it are unaffected.

use std::cell::RefCell;
use std::sync::Arc;

use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::block_linear::BlockLinear;
use crate::lrn::Lrn;

/// Layer implementations that may stand in for burn's. Each returns `None` to decline, and
/// must compute exactly what burn's composition computes (values and gradients) otherwise.
pub trait LayerKernels: Send + Sync {
    /// `conv(x)` plus bias, followed by a ReLU when `relu` is set.
    ///
    /// # Shapes
    /// - `x`: `[batch, C_in, H, W]`
    /// - output: `[batch, C_out, H_out, W_out]`
    fn conv2d(&self, conv: &Conv2d, x: &Tensor<4>, relu: bool) -> Option<Tensor<4>>;

    /// Local response normalization.
    ///
    /// # Shapes
    /// - `x` and output: `[batch, C, H, W]`
    fn lrn(&self, lrn: &Lrn, x: &Tensor<4>) -> Option<Tensor<4>>;

    /// Max pooling.
    ///
    /// # Shapes
    /// - `x`: `[batch, C, H, W]`
    /// - output: `[batch, C, H_out, W_out]`
    fn max_pool2d(&self, pool: &MaxPool2d, x: &Tensor<4>) -> Option<Tensor<4>>;

    /// A fully connected layer, followed by a ReLU when `relu` is set.
    ///
    /// # Shapes
    /// - `x`: `[batch, d_in]`
    /// - output: `[batch, d_out]`
    fn linear(&self, fc: &Linear, x: &Tensor<2>, relu: bool) -> Option<Tensor<2>>;

    /// Batch normalization in training mode (batch statistics, running statistics updated as
    /// burn's `BatchNorm` updates them), followed by a ReLU when `relu` is set. Layers in
    /// inference mode are burn's.
    ///
    /// # Shapes
    /// - `x` and output: `[batch, C, H, W]`
    fn batch_norm(&self, bn: &BatchNorm, x: &Tensor<4>, relu: bool) -> Option<Tensor<4>>;
}

thread_local! {
    static ACTIVE: RefCell<Option<Arc<dyn LayerKernels>>> = const { RefCell::new(None) };
}

/// Restores the kernels that were active before, also when `f` panics.
struct Restore(Option<Arc<dyn LayerKernels>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        ACTIVE.with(|a| *a.borrow_mut() = previous);
    }
}

/// Runs `f` with `kernels` standing in for burn's layers on this thread (`None`: burn's layers
/// throughout), then restores what was active before.
pub fn with_kernels<R>(kernels: Option<Arc<dyn LayerKernels>>, f: impl FnOnce() -> R) -> R {
    let previous = ACTIVE.with(|a| a.replace(kernels));
    let _restore = Restore(previous);
    f()
}

fn active() -> Option<Arc<dyn LayerKernels>> {
    ACTIVE.with(|a| a.borrow().clone())
}

/// A convolution followed by a ReLU (when `with_relu`), by the active kernels or by burn.
///
/// # Shapes
/// - `x`: `[batch, C_in, H, W]`
/// - output: `[batch, C_out, H_out, W_out]`
pub fn conv2d(conv: &Conv2d, x: Tensor<4>, with_relu: bool) -> Tensor<4> {
    if let Some(y) = active().and_then(|k| k.conv2d(conv, &x, with_relu)) {
        return y;
    }
    let y = conv.forward(x);
    if with_relu { relu(y) } else { y }
}

/// Local response normalization, by the active kernels or by burn.
///
/// # Shapes
/// - `x` and output: `[batch, C, H, W]`
pub fn lrn(layer: &Lrn, x: Tensor<4>) -> Tensor<4> {
    match active().and_then(|k| k.lrn(layer, &x)) {
        Some(y) => y,
        None => layer.forward(x),
    }
}

/// Max pooling, by the active kernels or by burn.
///
/// # Shapes
/// - `x`: `[batch, C, H, W]`
/// - output: `[batch, C, H_out, W_out]`
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    match active().and_then(|k| k.max_pool2d(pool, &x)) {
        Some(y) => y,
        None => pool.forward(x),
    }
}

/// A fully connected layer followed by a ReLU (when `with_relu`), by the active kernels (a
/// layer in one block) or by burn.
///
/// # Shapes
/// - `x`: `[batch, d_in]`
/// - output: `[batch, d_out]`
pub fn linear(fc: &BlockLinear, x: Tensor<2>, with_relu: bool) -> Tensor<2> {
    if let [one] = &fc.blocks[..]
        && let Some(y) = active().and_then(|k| k.linear(one, &x, with_relu))
    {
        return y;
    }
    let y = fc.forward(x);
    if with_relu { relu(y) } else { y }
}

/// Batch normalization followed by a ReLU (when `with_relu`), by the active kernels or by burn.
///
/// # Shapes
/// - `x` and output: `[batch, C, H, W]`
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>, with_relu: bool) -> Tensor<4> {
    if let Some(y) = active().and_then(|k| k.batch_norm(bn, &x, with_relu)) {
        return y;
    }
    let y = bn.forward(x);
    if with_relu { relu(y) } else { y }
}

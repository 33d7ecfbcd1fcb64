//! Per-layer descriptions (output size, window, parameters, multiply-adds) read off real modules.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;

use crate::ModelError;
use crate::block_linear::BlockLinear;
use crate::shape;

/// What kind of operation a [`LayerInfo`] row describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// The network input.
    Input,
    /// Convolution followed by ReLU (and BatchNorm before the ReLU where the network has it).
    Conv,
    /// Local response normalization.
    Lrn,
    /// Max pooling.
    MaxPool,
    /// Adaptive average pooling to a fixed grid.
    AdaptiveAvgPool,
    /// Fully connected layer (ReLU except on the logits).
    Linear,
}

/// One row of a network's per-layer table, like the study note's AlexNet table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerInfo {
    /// Layer name as the original scripts call it (`conv1`, `lrn1`, `pool1`, `conv1_1`, `fc6`...).
    pub name: String,
    /// Operation.
    pub kind: LayerKind,
    /// Output size as `[channels, height, width]` (fully connected layers: `[features, 1, 1]`).
    pub output: [usize; 3],
    /// Window size `[height, width]` of convolutions and pools.
    pub kernel: Option<[usize; 2]>,
    /// Stride `[height, width]` of convolutions and pools.
    pub stride: Option<[usize; 2]>,
    /// Padding actually applied for this input, `[top, left, bottom, right]`.
    pub padding: Option<[usize; 4]>,
    /// Channel groups of a convolution (1 otherwise).
    pub groups: usize,
    /// Whether a BatchNorm sits between the convolution and its ReLU.
    pub batch_norm: bool,
    /// Ceil-mode rounding of a pool.
    pub ceil_mode: bool,
    /// Number of trainable parameters.
    pub params: usize,
    /// Multiply-accumulate operations per image.
    pub macs: u64,
}

impl LayerInfo {
    /// A row with no window and no parameters (input, LRN, adaptive pooling).
    pub fn plain(name: impl Into<String>, kind: LayerKind, output: [usize; 3]) -> Self {
        Self {
            name: name.into(),
            kind,
            output,
            kernel: None,
            stride: None,
            padding: None,
            groups: 1,
            batch_norm: false,
            ceil_mode: false,
            params: 0,
            macs: 0,
        }
    }
}

/// Padding and output size along both axes of a window on an `[h, w]` input.
fn window(
    name: &str,
    padding: &burn::nn::PaddingConfig2d,
    [h, w]: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    ceil_mode: bool,
) -> Result<([usize; 4], [usize; 2]), ModelError> {
    let window = shape::window(padding, [h, w], kernel, stride, ceil_mode).ok_or_else(|| {
        ModelError::InputTooSmall {
            layer: name.to_string(),
            height: h,
            width: w,
        }
    })?;
    Ok((window.padding, window.output))
}

/// Describes a convolution (plus ReLU, and optional BatchNorm parameters) on a `[c, h, w]` input.
pub(crate) fn conv_info(
    name: &str,
    conv: &Conv2d,
    extra_params: usize,
    [_, h, w]: [usize; 3],
) -> Result<LayerInfo, ModelError> {
    let [out_c, in_per_group, kh, kw] = conv.weight.dims();
    let (padding, [oh, ow]) = window(
        name,
        &conv.padding,
        [h, w],
        conv.kernel_size,
        conv.stride,
        false,
    )?;
    Ok(LayerInfo {
        kernel: Some(conv.kernel_size),
        stride: Some(conv.stride),
        padding: Some(padding),
        groups: conv.groups,
        batch_norm: extra_params > 0,
        params: conv.num_params() + extra_params,
        macs: (oh * ow * out_c * in_per_group * kh * kw) as u64,
        ..LayerInfo::plain(name, LayerKind::Conv, [out_c, oh, ow])
    })
}

/// Describes a max pool on a `[c, h, w]` input.
pub(crate) fn pool_info(
    name: &str,
    pool: &MaxPool2d,
    [c, h, w]: [usize; 3],
) -> Result<LayerInfo, ModelError> {
    let (padding, [oh, ow]) = window(
        name,
        &pool.padding,
        [h, w],
        pool.kernel_size,
        pool.stride,
        pool.ceil_mode,
    )?;
    Ok(LayerInfo {
        kernel: Some(pool.kernel_size),
        stride: Some(pool.stride),
        padding: Some(padding),
        ceil_mode: pool.ceil_mode,
        ..LayerInfo::plain(name, LayerKind::MaxPool, [c, oh, ow])
    })
}

/// Describes a fully connected layer.
pub(crate) fn linear_info(name: &str, linear: &BlockLinear) -> LayerInfo {
    let (d_in, d_out) = (linear.d_in(), linear.d_out());
    LayerInfo {
        params: linear.num_params(),
        macs: (d_in * d_out) as u64,
        ..LayerInfo::plain(name, LayerKind::Linear, [d_out, 1, 1])
    }
}

/// Checks that a flattened feature map feeds the first fully connected layer.
pub(crate) fn check_flatten(last: [usize; 3], fc: &BlockLinear) -> Result<(), ModelError> {
    let d_in = fc.d_in();
    let found = last.iter().product::<usize>();
    if found == d_in {
        Ok(())
    } else {
        Err(ModelError::FlattenMismatch {
            expected: d_in,
            found,
            shape: last,
        })
    }
}

/// Sum of multiply-adds over a table, as GFLOP (2 FLOP per multiply-add).
pub fn gflops(layers: &[LayerInfo]) -> f64 {
    layers.iter().map(|l| l.macs).sum::<u64>() as f64 * 2e-9
}

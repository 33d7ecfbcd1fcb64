//! Local response normalization along the channel axis, parameterised the TensorFlow way.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;

use crate::ModelError;

/// Configuration of a [`Lrn`] layer in TensorFlow's terms
/// (`tf.nn.lrn(input, depth_radius, bias, alpha, beta)`):
///
/// `sqr_sum[c] = sum(x[c - r ..= c + r]^2)` (window clipped at the channel edges),
/// `y[c] = x[c] / (bias + alpha * sqr_sum[c])^beta`.
///
/// Caffe, PyTorch (`LocalResponseNorm`), ONNX (`LRN`) and burn's
/// `burn::nn::LocalResponseNorm` divide `alpha` by the window size instead; see
/// [`LrnConfig::from_caffe`] for the exact mapping.
#[derive(Config, Debug, PartialEq)]
pub struct LrnConfig {
    /// Half-width of the channel window `r`; the window has `2r + 1` channels.
    pub depth_radius: usize,
    /// Additive constant `bias` (Caffe's `k`).
    #[config(default = 1.0)]
    pub bias: f64,
    /// Scale of the sum of squares (TensorFlow's `alpha`, not divided by the window size).
    #[config(default = 1.0)]
    pub alpha: f64,
    /// Exponent `beta`.
    #[config(default = 0.5)]
    pub beta: f64,
}

impl LrnConfig {
    /// AlexNet's normalization as the note's TensorFlow script writes it:
    /// `depth_radius = 2, bias = 1.0, alpha = 2e-5, beta = 0.75`
    /// (identical to Caffe's `local_size = 5, alpha = 1e-4, beta = 0.75, k = 1`).
    pub fn alexnet() -> Self {
        Self::new(2).with_bias(1.0).with_alpha(2e-5).with_beta(0.75)
    }

    /// From the Caffe / PyTorch / ONNX parameters: `size = 2r + 1`, `alpha_tf = alpha / size`.
    ///
    /// # Errors
    /// [`ModelError::EvenLrnSize`] when `size` is even or zero (Caffe requires an odd window
    /// centred on each channel).
    pub fn from_caffe(size: usize, alpha: f64, beta: f64, k: f64) -> Result<Self, ModelError> {
        if size.is_multiple_of(2) {
            return Err(ModelError::EvenLrnSize(size));
        }
        Ok(Self::new(size / 2)
            .with_bias(k)
            .with_alpha(alpha / size as f64)
            .with_beta(beta))
    }

    /// The window size in Caffe's terms, `2r + 1`.
    pub fn size(&self) -> usize {
        2 * self.depth_radius + 1
    }

    /// Alpha in Caffe's terms, `alpha_tf * (2r + 1)`.
    pub fn caffe_alpha(&self) -> f64 {
        self.alpha * self.size() as f64
    }

    /// Builds the (parameter-free) layer.
    pub fn init(&self) -> Lrn {
        Lrn {
            depth_radius: self.depth_radius,
            bias: self.bias,
            alpha: self.alpha,
            beta: self.beta,
        }
    }
}

/// Local response normalization across channels of an NCHW tensor (TensorFlow convention).
///
/// The windowed sum of squares is computed in one pass by a `(2r+1) x 1` average pool over the
/// channel axis of the squared input viewed as `[N, 1, C, H*W]` (zero padding counted, then
/// rescaled by the window size), so the cost does not depend on slicing `2r + 1` times.
#[derive(Module, Debug)]
pub struct Lrn {
    /// Half-width `r` of the channel window.
    pub depth_radius: usize,
    /// Additive constant.
    pub bias: f64,
    /// Scale of the sum of squares (TensorFlow convention).
    pub alpha: f64,
    /// Exponent.
    pub beta: f64,
}

impl Lrn {
    /// Normalizes `input` across channels.
    ///
    /// # Shapes
    /// - `input`: `[batch, channels, height, width]`
    /// - output: `[batch, channels, height, width]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = input.dims();
        let size = 2 * self.depth_radius + 1;
        // [n, 1, c, h*w]: channels become the pooled "height" axis.
        let squares = input.clone().square().reshape([n, 1, c, h * w]);
        let mut options = AvgPoolOptions::new([size, 1])
            .with_stride([1, 1])
            .with_padding([self.depth_radius, 0]);
        options.count_include_pad = true;
        // mean over the window * size = sum over the window; folded into alpha.
        let mean = avg_pool2d(squares, options).reshape([n, c, h, w]);
        let denom = mean
            .mul_scalar(self.alpha * size as f64)
            .add_scalar(self.bias);
        let denom = if self.beta == 0.75 {
            // x^0.75 = sqrt(x * sqrt(x)): two square roots are cheaper and as exact as powf.
            let root = denom.clone().sqrt();
            (denom * root).sqrt()
        } else {
            denom.powf_scalar(self.beta)
        };
        input / denom
    }
}

//! Local response normalization along the channel axis, parameterised the TensorFlow way.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;

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
/// The windowed sum of squares comes from one prefix sum over channels ([`window_sum`]), so the
/// cost does not grow with the window (`alexvgg bench-lrn` measures it against `2r + 1` slices
/// and burn's pooling-based `LocalResponseNorm`).
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
        let sum = window_sum(input.clone().square(), self.depth_radius);
        let denom = sum.mul_scalar(self.alpha).add_scalar(self.bias);
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

/// `out[c] = sum(x[c - r ..= c + r])` along the channel axis, windows clipped at the edges,
/// from one prefix sum: with `Q = [0; r+1] ++ cumsum(x) ++ [total; r]`,
/// `out[c] = Q[c + 2r + 1] - Q[c]`, whatever the radius.
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub fn window_sum(x: Tensor<4>, r: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let prefix = x.cumsum(1); // [n, c, h, w], inclusive
    let mut parts = vec![
        Tensor::<4>::zeros([n, r + 1, h, w], &device),
        prefix.clone(),
    ];
    if r > 0 {
        parts.push(prefix.narrow(1, c - 1, 1).repeat_dim(1, r));
    }
    let q = Tensor::cat(parts, 1); // [n, c + 2r + 1, h, w]
    q.clone().narrow(1, 2 * r + 1, c) - q.narrow(1, 0, c)
}

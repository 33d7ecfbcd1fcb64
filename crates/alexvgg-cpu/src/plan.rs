//! [`Engine`]: a network compiled from an `alexvgg_models::Model` into a list of kernel calls.

use std::collections::HashMap;

use alexvgg_models::{AlexNet, BlockLinear, Model, Vgg, names, window};
use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;

use crate::direct::{DirectConv, conv2d_direct};
use crate::gemm;
use crate::kernels::{
    ConvGeometry, Nhwc, PackedConv, adaptive_avg_pool2d, conv2d, lrn, max_pool2d,
};
use crate::linear::{LinearWeights, linear};
use crate::pool::Pool;
use crate::simd::{Kernel, Simd};
use crate::tune::{self, Choice, ConvKey, TunedConv, Tuning};
use crate::winograd::{Layout, Variant, WinogradConv, conv2d_winograd};

/// How the engine computes its convolutions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Winograd where it pays: F(4x4, 3x3) and F(2x2, 5x5) for layers with at least 16 input
    /// and output channels per group; for inputs with few 4x4 tiles (AlexNet's 13x13 layers at
    /// batch 1), F(2x2, 3x3) or the direct kernel, whichever was measured faster, where the
    /// layer's weights are small enough to keep a second form (small feature maps whose weights
    /// are not, VGG16's 14x14 conv5_x: F(2x2, 3x3) alone, at every batch). Each
    /// Winograd form's products in the layout [`WinogradConv::default_layout`] picks for the
    /// level's register tiles. Every other convolution (AlexNet's
    /// 11x11 stride-4 conv1, VGG's 3-channel conv1_1) runs the direct kernel (measured to take
    /// 10-35% less time than im2col + GEMM there). At the [`Simd::Portable`] level, im2col +
    /// GEMM instead of the direct kernel, and Winograd's products by the `gemm` crate.
    #[default]
    Auto,
    /// im2col + GEMM for every convolution.
    Im2col,
    /// F(4x4, 3x3) / F(2x2, 5x5) for every stride-1 3x3 / 5x5 convolution, whatever its
    /// channels (tests use this to cover the reduced-width fixtures).
    Winograd,
    /// F(2x2, 3x3) / F(2x2, 5x5) for every stride-1 3x3 / 5x5 convolution.
    WinogradSmallTiles,
    /// The direct kernel (no patch matrix) for every convolution (its portable variant at the
    /// [`Simd::Portable`] level).
    Direct,
}

/// Choices made when compiling a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Convolution algorithm.
    pub conv: ConvAlgorithm,
    /// Input side to tune for (`Auto` picks each layer's Winograd tile size from the feature
    /// map this input gives it); the model's usual input size when `None`.
    pub input_size: Option<usize>,
    /// SIMD level of the engine's own kernels; [`Simd::current`] when `None` (a level the CPU
    /// lacks is lowered to the best it has).
    pub simd: Option<Simd>,
    /// Kernel choices measured on this machine (`alexvgg tune`, see [`crate::tune`]): with
    /// [`ConvAlgorithm::Auto`], each convolution the table lists runs its recorded kernels;
    /// `None` (and every layer it does not list): the fixed rules.
    pub tuning: Option<&'static Tuning>,
}

/// Fewest output tiles for which the Winograd form beats the small-input fallback (measured on
/// AlexNet's 13x13 layers: 16 tiles of 4x4 at batch 1 favour the fallback, 128 at batch 8
/// favour F(4x4, 3x3) by 30%).
const WINOGRAD_MIN_TILES: usize = 32;

/// Largest weight (bytes) that also keeps a small-input form next to its Winograd form;
/// bigger layers keep one form to bound memory.
const KEEP_BOTH_BYTES: usize = 8 << 20;

/// A convolution's weights in the form its algorithm needs.
#[derive(Debug)]
enum ConvKernel {
    Im2col(PackedConv),
    Direct(DirectConv),
    /// Winograd, with a form for inputs with few tiles where the layer is small.
    Winograd(WinogradConv, Option<Box<ConvKernel>>),
    /// The kernels measured fastest on this machine ([`crate::tune`]): `many`, and `few` for
    /// batches below [`tune::MANY_FROM`] where a different kernel won there.
    Tuned {
        many: Box<ConvKernel>,
        few: Option<Box<ConvKernel>>,
    },
}

impl ConvKernel {
    fn kernel(&self) -> [usize; 2] {
        match self {
            ConvKernel::Im2col(w) => w.kernel,
            ConvKernel::Direct(w) => w.kernel,
            ConvKernel::Winograd(w, _) => [w.kernel, w.kernel],
            ConvKernel::Tuned { many, .. } => many.kernel(),
        }
    }

    /// Kernel family, as [`LayerKernel::family`] names it.
    fn family(&self) -> &'static str {
        match self {
            ConvKernel::Im2col(_) => "im2col-gemm",
            ConvKernel::Direct(_) => "direct",
            ConvKernel::Winograd(..) => "winograd",
            ConvKernel::Tuned { many, .. } => many.family(),
        }
    }

    /// Kernel family, form and SIMD variant, e.g. `direct avx512` or
    /// `winograd F(4x4,3x3) gemm (products: gemm crate avx2; transforms: avx2)`.
    fn describe(&self) -> String {
        match self {
            ConvKernel::Im2col(_) => format!("im2col-gemm (gemm crate {})", gemm::crate_simd()),
            ConvKernel::Direct(w) => format!("direct {}", w.simd()),
            ConvKernel::Winograd(w, small) => {
                let variant = match w.variant {
                    Variant::F4x3 => "F(4x4,3x3)",
                    Variant::F2x3 => "F(2x2,3x3)",
                    Variant::F2x5 => "F(2x2,5x5)",
                };
                let (layout, products) = match w.layout {
                    Layout::Gemm => ("gemm", format!("gemm crate {}", gemm::crate_simd())),
                    Layout::Blocks => ("blocks", format!("tiles {}", w.tiles)),
                    Layout::Fused => ("fused", format!("tiles {}", w.tiles)),
                };
                let mut d = format!(
                    "winograd {variant} {layout} (products: {products}; transforms: {})",
                    w.transforms
                );
                if let Some(small) = small {
                    d += &format!("; under {WINOGRAD_MIN_TILES} tiles: {}", small.describe());
                }
                d
            }
            ConvKernel::Tuned { many, few: None } => format!("tuned: {}", many.describe()),
            ConvKernel::Tuned {
                many,
                few: Some(few),
            } => format!(
                "tuned: batch {MANY}+ {}; batch 1-{} {}",
                many.describe(),
                tune::MANY_FROM - 1,
                few.describe(),
                MANY = tune::MANY_FROM
            ),
        }
    }

    /// Runs Winograd's input and output transforms (of every form) at `level`.
    fn set_transforms(&mut self, level: Simd) {
        match self {
            ConvKernel::Winograd(w, small) => {
                w.transforms = level;
                if let Some(small) = small {
                    small.set_transforms(level);
                }
            }
            ConvKernel::Tuned { many, few } => {
                many.set_transforms(level);
                if let Some(few) = few {
                    few.set_transforms(level);
                }
            }
            ConvKernel::Im2col(_) | ConvKernel::Direct(_) => {}
        }
    }

    /// Runs the convolution, picking the small-input form where there is one and the input
    /// has few tiles.
    fn run(&self, x: &Nhwc, g: &ConvGeometry, relu: bool, pool: &Pool) -> Nhwc {
        match self {
            ConvKernel::Im2col(w) => conv2d(x, w, g, relu, pool),
            ConvKernel::Direct(w) => conv2d_direct(x, w, g, relu, pool),
            ConvKernel::Winograd(w, small) => {
                let tiles = x.batch * g.output[0].div_ceil(w.tile) * g.output[1].div_ceil(w.tile);
                match small {
                    Some(small) if tiles < WINOGRAD_MIN_TILES => small.run(x, g, relu, pool),
                    _ => conv2d_winograd(x, w, g, relu, pool),
                }
            }
            ConvKernel::Tuned { many, few } => match few {
                Some(few) if x.batch < tune::MANY_FROM => few.run(x, g, relu, pool),
                _ => many.run(x, g, relu, pool),
            },
        }
    }
}

/// Engine options with each convolution's shape at the input size tuned for, and the SIMD
/// level.
struct Tuned<'a> {
    options: &'a EngineOptions,
    /// Each convolution's shape at the input size tuned for, by name (none where the input
    /// does not fit): its output size picks the Winograd tiles, the whole shape is the key of
    /// the tuning table.
    keys: HashMap<String, ConvKey>,
    simd: Simd,
}

impl Tuned<'_> {
    /// The op of a convolution (followed by ReLU): its recorded kernels where the tuning table
    /// lists its shape (and the algorithm is `Auto`), the fixed rules else.
    fn op(&self, raw: RawConv) -> Op {
        let key = self.keys.get(&raw.name);
        let recorded = match (self.options.conv, self.options.tuning, key) {
            (ConvAlgorithm::Auto, Some(table), Some(key)) => table.choice(key),
            _ => None,
        };
        match (recorded, key) {
            (Some(choice), Some(key)) => raw.into_tuned_op(choice, self.simd, key.output),
            _ => raw.into_op(true, self.options, key.map(|k| k.output), None, self.simd),
        }
    }
}

/// A convolution read from burn, before its weights are packed.
pub(crate) struct RawConv {
    pub(crate) name: String,
    pub(crate) weight: Vec<f32>,
    pub(crate) dims: [usize; 4],
    pub(crate) groups: usize,
    pub(crate) bias: Vec<f32>,
    pub(crate) stride: [usize; 2],
    pub(crate) padding: PaddingConfig2d,
}

impl RawConv {
    /// im2col + GEMM weights.
    fn packed(&self, bias: Vec<f32>) -> ConvKernel {
        ConvKernel::Im2col(PackedConv::from_oihw(
            &self.weight,
            self.dims,
            self.groups,
            bias,
        ))
    }

    /// The direct kernel at level `simd`.
    fn direct_kernel(&self, bias: Vec<f32>, simd: Simd) -> ConvKernel {
        let w = DirectConv::from_oihw(&self.weight, self.dims, self.groups, bias);
        ConvKernel::Direct(w.with_simd(simd.for_kernel(Kernel::Tiles)))
    }

    /// The direct kernel where the level has vector tiles, im2col + GEMM else.
    fn direct(&self, bias: Vec<f32>, simd: Simd) -> ConvKernel {
        if simd.vector_kernels() {
            self.direct_kernel(bias, simd)
        } else {
            self.packed(bias)
        }
    }

    /// Winograd `variant` at level `simd` in the layout of the engine's rules for inputs with
    /// `few_tiles` or not ([`WinogradConv::default_layout`]).
    fn winograd(
        &self,
        variant: Variant,
        bias: Vec<f32>,
        simd: Simd,
        few_tiles: bool,
    ) -> WinogradConv {
        let tiles = simd.for_kernel(Kernel::Tiles);
        let layout = WinogradConv::default_layout(self.dims, variant, tiles, few_tiles);
        self.winograd_in(variant, bias, simd, layout)
    }

    /// Winograd `variant` at level `simd` with its products in `layout`.
    fn winograd_in(
        &self,
        variant: Variant,
        bias: Vec<f32>,
        simd: Simd,
        layout: Layout,
    ) -> WinogradConv {
        let mut w =
            WinogradConv::with_layout(&self.weight, self.dims, self.groups, bias, variant, layout);
        w.tiles = simd.for_kernel(Kernel::Tiles);
        w.transforms = simd.for_kernel(Kernel::Elementwise);
        w
    }

    /// The weights packed for one recorded kernel at level `simd` (`output`: the layer's output
    /// size, whose tile count picks a Winograd layout).
    fn kernel_for(&self, kernel: TunedConv, simd: Simd, output: [usize; 2]) -> ConvKernel {
        let bias = self.bias.clone();
        match kernel {
            TunedConv::Direct => self.direct(bias, simd),
            TunedConv::Im2col => self.packed(bias),
            TunedConv::Winograd(variant, Some(layout)) => {
                ConvKernel::Winograd(self.winograd_in(variant, bias, simd, layout), None)
            }
            TunedConv::Winograd(variant, None) => {
                let tiles = output[0].div_ceil(variant.tile()) * output[1].div_ceil(variant.tile());
                ConvKernel::Winograd(
                    self.winograd(variant, bias, simd, tiles < WINOGRAD_MIN_TILES),
                    None,
                )
            }
        }
    }

    /// The op of a convolution (with ReLU) on its recorded kernels.
    fn into_tuned_op(self, choice: Choice, simd: Simd, output: [usize; 2]) -> Op {
        let weights = ConvKernel::Tuned {
            many: Box::new(self.kernel_for(choice.many, simd, output)),
            few: (choice.few != choice.many)
                .then(|| Box::new(self.kernel_for(choice.few, simd, output))),
        };
        Op::Conv {
            name: self.name,
            weights,
            stride: self.stride,
            padding: self.padding,
            relu: true,
        }
    }

    /// One recorded kernel as a [`ConvLayer`] (for timing it: [`crate::tune::measure`]).
    pub(crate) fn build(self, kernel: TunedConv, simd: Simd, output: [usize; 2]) -> ConvLayer {
        ConvLayer {
            weights: self.kernel_for(kernel, simd, output),
            stride: self.stride,
            padding: self.padding,
        }
    }

    /// Folds `y = conv(x) * scale + shift` (per output channel) into the weights.
    fn fold_affine(&mut self, scale: &[f32], shift: &[f32]) {
        let per_out = self.weight.len() / self.dims[0];
        for (o, w) in self.weight.chunks_mut(per_out).enumerate() {
            w.iter_mut().for_each(|v| *v *= scale[o]);
        }
        for ((b, s), t) in self.bias.iter_mut().zip(scale).zip(shift) {
            *b = *b * s + t;
        }
    }

    /// Packs the weights for `options`' algorithm and the kernels of level `simd`; `output` is
    /// the layer's output size at the input size tuned for. Where `batch` is known (a
    /// [`ConvLayer`]), only the form that batch runs is built; else (an [`Engine`]) the layer
    /// keeps a form for inputs with few tiles where its weights are small enough.
    fn into_op(
        mut self,
        relu: bool,
        options: &EngineOptions,
        output: Option<[usize; 2]>,
        batch: Option<usize>,
        simd: Simd,
    ) -> Op {
        let [cout, cin_g, kh, kw] = self.dims;
        let cout_g = cout / self.groups;
        let side = (kh == kw && (kh == 3 || kh == 5) && self.stride == [1, 1]).then_some(kh);
        let (large, small) = match side {
            Some(3) => (Variant::F4x3, Variant::F2x3),
            _ => (Variant::F2x5, Variant::F2x5),
        };
        let bias = std::mem::take(&mut self.bias);
        // Whether the known batch has too few tiles of `large` (None: not known).
        let few_tiles = batch.zip(output).map(|(n, [h, w])| {
            n * h.div_ceil(large.tile()) * w.div_ceil(large.tile()) < WINOGRAD_MIN_TILES
        });
        let keep_both = self.weight.len() * 4 <= KEEP_BOTH_BYTES;
        let weights = match (options.conv, side) {
            (ConvAlgorithm::Im2col, _) => self.packed(bias),
            (ConvAlgorithm::Direct, _) => self.direct_kernel(bias, simd),
            (_, None) => self.direct(bias, simd),
            (ConvAlgorithm::Winograd, Some(_)) => {
                ConvKernel::Winograd(self.winograd(large, bias, simd, false), None)
            }
            (ConvAlgorithm::WinogradSmallTiles, Some(_)) => {
                ConvKernel::Winograd(self.winograd(small, bias, simd, false), None)
            }
            (ConvAlgorithm::Auto, Some(_)) if cin_g < 16 || cout_g < 16 => self.direct(bias, simd),
            // Small feature maps (13x13, 14x14): too few 4x4 tiles at batch 1 to keep the
            // products busy; F(2x2, 3x3) was measured faster there at batch 1, F(4x4, 3x3) 15-20%
            // faster from batch 8 (AlexNet's conv3-conv5). Both forms where the weights are
            // small enough, the batch choosing at run time; F(2x2, 3x3) alone else.
            (ConvAlgorithm::Auto, Some(3))
                if output
                    .is_some_and(|[h, w]| h.div_ceil(4) * w.div_ceil(4) < WINOGRAD_MIN_TILES) =>
            {
                // As the engine: F(4x4, 3x3) only where it keeps both forms.
                match few_tiles {
                    Some(false) if keep_both => {
                        ConvKernel::Winograd(self.winograd(large, bias, simd, true), None)
                    }
                    None if keep_both => {
                        let few = self.winograd(small, bias.clone(), simd, true);
                        ConvKernel::Winograd(
                            self.winograd(large, bias, simd, true),
                            Some(Box::new(ConvKernel::Winograd(few, None))),
                        )
                    }
                    _ => ConvKernel::Winograd(self.winograd(small, bias, simd, true), None),
                }
            }
            (ConvAlgorithm::Auto, Some(side)) => {
                let fallback = |bias: Vec<f32>| {
                    if side == 3 {
                        ConvKernel::Winograd(self.winograd(small, bias, simd, true), None)
                    } else {
                        self.direct(bias, simd)
                    }
                };
                // As the engine: the small-input form only where it keeps both forms.
                match few_tiles {
                    Some(true) if keep_both => fallback(bias),
                    Some(_) => ConvKernel::Winograd(self.winograd(large, bias, simd, false), None),
                    None => {
                        let small = keep_both.then(|| Box::new(fallback(bias.clone())));
                        ConvKernel::Winograd(self.winograd(large, bias, simd, false), small)
                    }
                }
            }
        };
        Op::Conv {
            name: self.name,
            weights,
            stride: self.stride,
            padding: self.padding,
            relu,
        }
    }
}

/// One convolution compiled for the kernels of this crate from raw weights, for callers whose
/// weights change between calls (training: [`crate::autodiff`]). It picks the kernel the
/// [`Engine`]'s fixed rules ([`ConvAlgorithm::Auto`]) would run for the same layer and input
/// batch, and builds only that form.
#[derive(Debug)]
pub struct ConvLayer {
    weights: ConvKernel,
    stride: [usize; 2],
    padding: PaddingConfig2d,
}

impl ConvLayer {
    /// Compiles a burn/PyTorch `[cout, cin / groups, kh, kw]` weight with its bias for inputs
    /// of `[batch, height, width]` (which pick the Winograd tile size) at SIMD level `simd`.
    ///
    /// # Panics
    /// When the sizes disagree.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        weight: Vec<f32>,
        dims: [usize; 4],
        groups: usize,
        bias: Vec<f32>,
        stride: [usize; 2],
        padding: PaddingConfig2d,
        [batch, height, width]: [usize; 3],
        simd: Simd,
    ) -> Self {
        let output =
            window(&padding, [height, width], [dims[2], dims[3]], stride, false).map(|w| w.output);
        let raw = RawConv {
            name: String::new(),
            weight,
            dims,
            groups,
            bias,
            stride,
            padding,
        };
        match raw.into_op(false, &EngineOptions::default(), output, Some(batch), simd) {
            Op::Conv {
                weights,
                stride,
                padding,
                ..
            } => Self {
                weights,
                stride,
                padding,
            },
            _ => unreachable!("a convolution compiles to a convolution op"),
        }
    }

    /// The layer's geometry on input `x`.
    ///
    /// # Errors
    /// [`EngineError::InputTooSmall`] when the window does not fit.
    pub fn geometry(&self, x: &Nhwc) -> Result<ConvGeometry, EngineError> {
        geometry(
            "conv",
            x,
            self.weights.kernel(),
            self.stride,
            &self.padding,
            false,
        )
    }

    /// `conv(x) + bias`, then a ReLU when `relu` is set.
    ///
    /// # Errors
    /// [`EngineError::InputTooSmall`] when the window does not fit.
    pub fn run(&self, x: &Nhwc, relu: bool, pool: &Pool) -> Result<Nhwc, EngineError> {
        let g = self.geometry(x)?;
        Ok(self.weights.run(x, &g, relu, pool))
    }

    /// Family and form of the kernel, as [`Engine::layer_kernels`] describes it.
    pub fn describe(&self) -> String {
        self.weights.describe()
    }
}

/// Errors from compiling a model or running the engine.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    /// A layer name that the network does not have.
    #[error("the network has no layer '{layer}' (layers: {known})")]
    UnknownLayer {
        /// The name asked for.
        layer: String,
        /// The names it has, comma-separated.
        known: String,
    },
    /// A parameter could not be read as `f32` values.
    #[error("parameter {name}: {message}")]
    Parameter {
        /// Layer and parameter, e.g. `conv1.weight`.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A layer feature the engine has no kernel for.
    #[error("layer {layer}: {what} is not supported by the CPU engine")]
    Unsupported {
        /// Layer name.
        layer: String,
        /// The feature.
        what: String,
    },
    /// The input buffer does not match its dimensions, or has the wrong channels.
    #[error("input of {len} values does not match dimensions {dims:?} with {channels} channels")]
    BadInput {
        /// Values given.
        len: usize,
        /// Dimensions given, `[batch, channels, height, width]`.
        dims: [usize; 4],
        /// Channels the first layer expects.
        channels: usize,
    },
    /// The input is too small for a window of the network.
    #[error("input of {height}x{width} is too small for layer {layer}")]
    InputTooSmall {
        /// Layer whose window does not fit.
        layer: String,
        /// Height reaching that layer.
        height: usize,
        /// Width reaching that layer.
        width: usize,
    },
    /// The features reaching the first fully connected layer have the wrong size.
    #[error("features of shape {shape:?} flatten to {found} values but {layer} expects {expected}")]
    FlattenMismatch {
        /// The fully connected layer.
        layer: String,
        /// Its input size.
        expected: usize,
        /// Flattened size found.
        found: usize,
        /// `[C, H, W]` reaching it.
        shape: [usize; 3],
    },
    /// A weight is NaN or infinite. The kernels skip zero inputs and their ReLU and max-pooling
    /// drop NaNs, so such weights would give plausible outputs where burn gives NaN: refused.
    #[error("parameter {name} holds {count} non-finite value(s) (NaN or infinity)")]
    NonFinite {
        /// Layer and parameter, e.g. `conv1.weight`.
        name: String,
        /// How many of its values are NaN or infinite.
        count: usize,
    },
    /// An input value is NaN or infinite (refused for the same reason as [`Self::NonFinite`]).
    #[error("input value {index} is {value}: inputs must be finite")]
    NonFiniteInput {
        /// Row-major index of the first such value.
        index: usize,
        /// The value.
        value: f32,
    },
}

/// One step of the compiled network.
#[derive(Debug)]
enum Op {
    Conv {
        name: String,
        weights: ConvKernel,
        stride: [usize; 2],
        padding: PaddingConfig2d,
        relu: bool,
    },
    Lrn {
        name: String,
        radius: usize,
        bias: f32,
        alpha: f32,
        beta: f32,
    },
    MaxPool {
        name: String,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: PaddingConfig2d,
        ceil_mode: bool,
    },
    AvgPool {
        name: String,
        size: [usize; 2],
    },
    Linear {
        name: String,
        weights: LinearWeights,
        relu: bool,
    },
}

/// The kernel that computes one layer of an [`Engine`] (see [`Engine::layer_kernels`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerKernel {
    /// Layer name, as [`Engine::layer_names`] gives it.
    pub layer: String,
    /// Kernel family: `direct`, `winograd`, `im2col-gemm`, `fc-stream`, `lrn`, `max-pool` or
    /// `avg-pool`.
    pub family: &'static str,
    /// The family's form and SIMD variant, e.g. `direct avx512`, `fc-stream avx2`,
    /// `winograd F(4x4,3x3) gemm (products: gemm crate avx2; transforms: avx2)`.
    pub description: String,
}

impl Op {
    fn name(&self) -> &str {
        match self {
            Op::Conv { name, .. }
            | Op::Lrn { name, .. }
            | Op::MaxPool { name, .. }
            | Op::AvgPool { name, .. }
            | Op::Linear { name, .. } => name,
        }
    }

    /// What computes this op, its element-wise kernels at level `elementwise`.
    fn kernel(&self, elementwise: Simd) -> LayerKernel {
        let (family, description) = match self {
            Op::Conv { weights, .. } => (weights.family(), weights.describe()),
            Op::Lrn { .. } => ("lrn", format!("lrn {elementwise}")),
            Op::MaxPool { .. } => ("max-pool", format!("max-pool {elementwise}")),
            Op::AvgPool { .. } => ("avg-pool", "avg-pool portable".to_string()),
            Op::Linear { weights, .. } => ("fc-stream", format!("fc-stream {}", weights.simd())),
        };
        LayerKernel {
            layer: self.name().to_string(),
            family,
            description,
        }
    }
}

/// An activation reported by [`Engine::forward_observed`].
#[derive(Clone, Copy, Debug)]
pub enum Activation<'a> {
    /// A feature map, channels-last.
    Map(&'a Nhwc),
    /// A fully connected layer's output, `[batch, features]` row-major.
    Vector {
        /// Values.
        data: &'a [f32],
        /// Batch size.
        batch: usize,
    },
}

/// A network compiled for the CPU kernels of this crate: convolution filters packed or
/// transformed once for their kernels, BatchNorm folded into the convolutions, fully connected
/// weights kept as burn holds them, activations kept channels-last between layers.
///
/// It computes what the burn model it was built from computes (inference mode: no dropout,
/// BatchNorm with running statistics) and holds the only copy of the weights.
#[derive(Debug)]
pub struct Engine {
    ops: Vec<Op>,
    in_channels: usize,
    num_classes: usize,
    pool: Pool,
    simd: Simd,
    /// The element-wise kernels' level (Winograd's transforms, LRN, max pooling).
    elementwise: Simd,
}

fn values<const D: usize>(name: &str, tensor: Tensor<D>) -> Result<Vec<f32>, EngineError> {
    let v = alexvgg_models::host_values(tensor).map_err(|e| EngineError::Parameter {
        name: name.to_string(),
        message: e.to_string(),
    })?;
    if !all_finite(&v) {
        return Err(EngineError::NonFinite {
            name: name.to_string(),
            count: v.iter().filter(|x| !x.is_finite()).count(),
        });
    }
    Ok(v)
}

/// Whether every value is finite (a branch-free pass per block, so that it vectorises).
fn all_finite(v: &[f32]) -> bool {
    v.chunks(4096)
        .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}

fn param<const D: usize>(name: &str, p: Param<Tensor<D>>) -> Result<Vec<f32>, EngineError> {
    values(name, p.into_value())
}

fn read_conv(name: &str, conv: Conv2d) -> Result<RawConv, EngineError> {
    if conv.dilation != [1, 1] {
        return Err(EngineError::Unsupported {
            layer: name.to_string(),
            what: format!("dilation {:?}", conv.dilation),
        });
    }
    let dims = conv.weight.dims();
    let weight = param(&format!("{name}.weight"), conv.weight)?;
    let bias = match conv.bias {
        Some(b) => param(&format!("{name}.bias"), b)?,
        None => vec![0.0; dims[0]],
    };
    Ok(RawConv {
        name: name.to_string(),
        weight,
        dims,
        groups: conv.groups,
        bias,
        stride: conv.stride,
        padding: conv.padding,
    })
}

fn pool_op(name: String, pool: MaxPool2d) -> Result<Op, EngineError> {
    if pool.dilation != [1, 1] {
        return Err(EngineError::Unsupported {
            layer: name,
            what: format!("dilation {:?}", pool.dilation),
        });
    }
    Ok(Op::MaxPool {
        name,
        kernel: pool.kernel_size,
        stride: pool.stride,
        padding: pool.padding,
        ceil_mode: pool.ceil_mode,
    })
}

fn linear_ops(layers: [(&str, BlockLinear); 3], simd: Simd) -> Result<Vec<Op>, EngineError> {
    layers
        .into_iter()
        .enumerate()
        .map(|(i, (name, fc))| {
            let (d_in, d_out) = (fc.d_in(), fc.d_out());
            let (weight, bias) = fc.into_weight_bias();
            let weight = values(&format!("{name}.weight"), weight)?;
            let bias = values(&format!("{name}.bias"), bias)?;
            Ok(Op::Linear {
                name: name.to_string(),
                weights: LinearWeights::from_in_out(weight, d_in, d_out, bias)
                    .with_simd(simd.for_kernel(Kernel::Linear)),
                relu: i < 2,
            })
        })
        .collect()
}

impl Engine {
    /// Compiles `model`, consuming it so that each convolution's burn parameters are freed as
    /// soon as they are packed and the fully connected weights are taken over without a copy
    /// (peak memory stays near one copy of the weights).
    ///
    /// # Errors
    /// [`EngineError::Parameter`] when a parameter cannot be read as `f32`,
    /// [`EngineError::NonFinite`] when one holds NaN or infinity, and
    /// [`EngineError::Unsupported`] for a dilated convolution or pool.
    pub fn from_model(model: Model) -> Result<Self, EngineError> {
        Self::with_options(model, &EngineOptions::default())
    }

    /// [`from_model`](Self::from_model) with explicit [`EngineOptions`].
    ///
    /// # Errors
    /// As [`from_model`](Self::from_model).
    pub fn with_options(model: Model, options: &EngineOptions) -> Result<Self, EngineError> {
        let side = options.input_size.unwrap_or_else(|| model.input_size());
        // Each convolution's shape at that input, by name (none where the input does not fit).
        let keys = model
            .layers([3, side, side])
            .map(|rows| tune::conv_keys(&rows, 3).into_iter().collect())
            .unwrap_or_default();
        let simd = options.simd.unwrap_or_else(Simd::current).min(Simd::best());
        let tuned = &Tuned {
            options,
            keys,
            simd,
        };
        let mut engine = match model {
            Model::AlexNet(m) => Self::from_alexnet(m, tuned)?,
            Model::Vgg(m) => Self::from_vgg(m, tuned)?,
        };
        // A level measured on this machine (`alexvgg tune`), else the rule of `Simd::for_kernel`.
        if let Some(level) = options.tuning.and_then(|t| t.elementwise) {
            engine.set_elementwise(level.min(simd));
        }
        Ok(engine)
    }

    /// Runs the element-wise kernels (Winograd's transforms, LRN, max pooling) at `level`.
    fn set_elementwise(&mut self, level: Simd) {
        self.elementwise = level;
        for op in &mut self.ops {
            if let Op::Conv { weights, .. } = op {
                weights.set_transforms(level);
            }
        }
    }

    fn from_alexnet(m: AlexNet, options: &Tuned<'_>) -> Result<Self, EngineError> {
        let mut ops = Vec::new();
        let mut in_channels = 0;
        for (i, stage) in m.convs.into_iter().enumerate() {
            let n = i + 1;
            let raw = read_conv(&names::alexnet_conv(n), stage.conv)?;
            if i == 0 {
                in_channels = raw.dims[1] * raw.groups;
            }
            ops.push(options.op(raw));
            if let Some(l) = stage.lrn {
                ops.push(Op::Lrn {
                    name: names::alexnet_lrn(n),
                    radius: l.depth_radius,
                    bias: l.bias as f32,
                    alpha: l.alpha as f32,
                    beta: l.beta as f32,
                });
            }
            if let Some(pool) = stage.pool {
                ops.push(pool_op(names::alexnet_pool(n), pool)?);
            }
        }
        let avgpool = m.avgpool.map(|a| a.output_size);
        Self::finish(
            ops,
            in_channels,
            avgpool,
            [m.fc6, m.fc7, m.fc8],
            options.simd,
        )
    }

    fn from_vgg(m: Vgg, options: &Tuned<'_>) -> Result<Self, EngineError> {
        let convs = names::vgg_convs(m.features.iter().map(|f| f.pool.is_some()));
        let mut ops = Vec::new();
        let mut in_channels = 0;
        for (i, (layer, conv)) in m.features.into_iter().zip(convs).enumerate() {
            let conv_name = conv.name();
            let mut raw = read_conv(&conv_name, layer.conv)?;
            if i == 0 {
                in_channels = raw.dims[1] * raw.groups;
            }
            if let Some(bn) = layer.bn {
                let gamma = param(&format!("{conv_name}.bn.gamma"), bn.gamma)?;
                let beta = param(&format!("{conv_name}.bn.beta"), bn.beta)?;
                let mean = values(
                    &format!("{conv_name}.bn.running_mean"),
                    bn.running_mean.value(),
                )?;
                let var = values(
                    &format!("{conv_name}.bn.running_var"),
                    bn.running_var.value(),
                )?;
                // y = (conv(x) - mean) * gamma / sqrt(var + eps) + beta, computed in f64.
                let scale: Vec<f32> = gamma
                    .iter()
                    .zip(&var)
                    .map(|(&g, &v)| (g as f64 / (v as f64 + bn.epsilon).sqrt()) as f32)
                    .collect();
                let shift: Vec<f32> = beta
                    .iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((&b, &mu), &s)| (b as f64 - mu as f64 * s as f64) as f32)
                    .collect();
                raw.fold_affine(&scale, &shift);
            }
            ops.push(options.op(raw));
            if let (Some(pool), Some(name)) = (layer.pool, conv.pool_name()) {
                ops.push(pool_op(name, pool)?);
            }
        }
        let avgpool = Some(m.avgpool.output_size);
        Self::finish(
            ops,
            in_channels,
            avgpool,
            [m.fc6, m.fc7, m.fc8],
            options.simd,
        )
    }

    /// Appends the optional adaptive average pool and the classifier to the feature ops.
    fn finish(
        mut ops: Vec<Op>,
        in_channels: usize,
        avgpool: Option<[usize; 2]>,
        [fc6, fc7, fc8]: [BlockLinear; 3],
        simd: Simd,
    ) -> Result<Self, EngineError> {
        if let Some(size) = avgpool {
            ops.push(Op::AvgPool {
                name: names::AVGPOOL.into(),
                size,
            });
        }
        let [n6, n7, n8] = names::FC;
        ops.extend(linear_ops([(n6, fc6), (n7, fc7), (n8, fc8)], simd)?);
        let num_classes = match ops.last() {
            Some(Op::Linear { weights, .. }) => weights.d_out,
            _ => 0,
        };
        Ok(Self {
            ops,
            in_channels,
            num_classes,
            pool: Pool::new(),
            simd,
            elementwise: simd.for_kernel(Kernel::Elementwise),
        })
    }

    /// The SIMD level the engine was built for ([`EngineOptions::simd`], else
    /// [`Simd::current`]); each kernel family runs its variant for it
    /// ([`Simd::for_kernel`]).
    pub fn simd(&self) -> Simd {
        self.simd
    }

    /// The level of the element-wise kernels (Winograd's transforms, LRN, max pooling): the
    /// one a tuning table recorded ([`crate::tune::Tuning::elementwise`]), else
    /// [`Simd::for_kernel`]'s rule for [`simd`](Self::simd).
    pub fn elementwise(&self) -> Simd {
        self.elementwise
    }

    /// The kernel that computes each layer, in execution order (the names of
    /// [`layer_names`](Self::layer_names)).
    pub fn layer_kernels(&self) -> Vec<LayerKernel> {
        self.ops
            .iter()
            .map(|op| op.kernel(self.elementwise))
            .collect()
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Names of the layers in execution order, as [`forward_observed`](Self::forward_observed)
    /// reports them.
    pub fn layer_names(&self) -> Vec<&str> {
        self.ops.iter().map(Op::name).collect()
    }

    /// Class logits for a channels-first batch.
    ///
    /// # Errors
    /// [`EngineError::BadInput`], [`EngineError::InputTooSmall`] or
    /// [`EngineError::FlattenMismatch`] for an input the network cannot take,
    /// [`EngineError::NonFiniteInput`] for NaN or infinite input values.
    ///
    /// # Shapes
    /// - `input`: `[batch, channels, H, W]` row-major, as `dims`
    /// - output: `[batch, num_classes]` row-major
    pub fn forward(&self, input: &[f32], dims: [usize; 4]) -> Result<Vec<f32>, EngineError> {
        self.forward_observed(input, dims, &mut |_, _| {})
    }

    /// Logits, calling `observer` after every layer with its name and output (named as the
    /// burn models name them; convolutions include their ReLU, and BatchNorm).
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    ///
    /// # Shapes
    /// - `input`: `[batch, channels, H, W]` row-major, as `dims`
    /// - output: `[batch, num_classes]` row-major
    pub fn forward_observed(
        &self,
        input: &[f32],
        dims: [usize; 4],
        observer: &mut dyn FnMut(&str, Activation<'_>),
    ) -> Result<Vec<f32>, EngineError> {
        self.run(input, dims, None, observer)
    }

    /// Runs the network only as far as layer `last` (one of
    /// [`layer_names`](Self::layer_names)), calling `observer` after every layer up to it; the
    /// layers after it are not computed, so any input the layers up to `last` fit will do.
    ///
    /// # Errors
    /// [`EngineError::UnknownLayer`] for a name the network does not have, else as
    /// [`forward`](Self::forward).
    ///
    /// # Shapes
    /// - `input`: `[batch, channels, H, W]` row-major, as `dims`
    pub fn forward_until(
        &self,
        input: &[f32],
        dims: [usize; 4],
        last: &str,
        observer: &mut dyn FnMut(&str, Activation<'_>),
    ) -> Result<(), EngineError> {
        if !self.ops.iter().any(|op| op.name() == last) {
            return Err(EngineError::UnknownLayer {
                layer: last.to_string(),
                known: self.layer_names().join(", "),
            });
        }
        self.run(input, dims, Some(last), observer).map(|_| ())
    }

    /// The forward pass, stopping after layer `until` when one is given.
    fn run(
        &self,
        input: &[f32],
        dims: [usize; 4],
        until: Option<&str>,
        observer: &mut dyn FnMut(&str, Activation<'_>),
    ) -> Result<Vec<f32>, EngineError> {
        let [batch, channels, _, _] = dims;
        if input.len() != dims.iter().product::<usize>() || channels != self.in_channels {
            return Err(EngineError::BadInput {
                len: input.len(),
                dims,
                channels: self.in_channels,
            });
        }
        if batch == 0 {
            return Ok(Vec::new()); // nothing to classify
        }
        if !all_finite(input) {
            let index = input.iter().position(|x| !x.is_finite()).unwrap_or(0);
            return Err(EngineError::NonFiniteInput {
                index,
                value: input[index],
            });
        }
        let pool = &self.pool;
        let mut map = Some(Nhwc::from_nchw(input, dims, pool));
        let mut vector: Vec<f32> = Vec::new();
        for op in &self.ops {
            match op {
                Op::Linear {
                    name,
                    weights,
                    relu,
                } => {
                    if let Some(x) = map.take() {
                        let expected = weights.d_in;
                        let found = x.channels * x.height * x.width;
                        if found != expected {
                            return Err(EngineError::FlattenMismatch {
                                layer: name.clone(),
                                expected,
                                found,
                                shape: [x.channels, x.height, x.width],
                            });
                        }
                        vector = x.to_nchw();
                        pool.give(x.data);
                    }
                    let y = linear(&vector, batch, weights, *relu, pool);
                    pool.give(std::mem::replace(&mut vector, y));
                    observer(
                        name,
                        Activation::Vector {
                            data: &vector,
                            batch,
                        },
                    );
                    if until == Some(name.as_str()) {
                        break;
                    }
                }
                op => {
                    let x = map
                        .take()
                        .expect("feature layers come before the classifier");
                    let y = feature_op(op, x, self.elementwise, pool)?;
                    observer(op.name(), Activation::Map(&y));
                    if until == Some(op.name()) {
                        pool.give(y.data);
                        break;
                    }
                    map = Some(y);
                }
            }
        }
        Ok(vector)
    }
}

pub(crate) fn geometry(
    layer: &str,
    x: &Nhwc,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: &PaddingConfig2d,
    ceil_mode: bool,
) -> Result<ConvGeometry, EngineError> {
    let w = window(padding, [x.height, x.width], kernel, stride, ceil_mode).ok_or_else(|| {
        EngineError::InputTooSmall {
            layer: layer.to_string(),
            height: x.height,
            width: x.width,
        }
    })?;
    Ok(ConvGeometry {
        kernel,
        stride,
        padding: w.padding,
        output: w.output,
    })
}

/// Runs a feature op; `simd` is the element-wise kernels' level.
fn feature_op(op: &Op, x: Nhwc, simd: Simd, pool: &Pool) -> Result<Nhwc, EngineError> {
    let y = match op {
        Op::Conv {
            name,
            weights,
            stride,
            padding,
            relu,
        } => {
            let g = geometry(name, &x, weights.kernel(), *stride, padding, false)?;
            weights.run(&x, &g, *relu, pool)
        }
        Op::Lrn {
            radius,
            bias,
            alpha,
            beta,
            ..
        } => lrn(&x, *radius, *bias, *alpha, *beta, simd, pool),
        Op::MaxPool {
            name,
            kernel,
            stride,
            padding,
            ceil_mode,
        } => {
            let g = geometry(name, &x, *kernel, *stride, padding, *ceil_mode)?;
            max_pool2d(&x, &g, simd, pool)
        }
        Op::AvgPool { size, .. } => return Ok(adaptive_avg_pool2d(x, *size, pool)),
        Op::Linear { .. } => unreachable!("handled by forward_observed"),
    };
    pool.give(x.data);
    Ok(y)
}

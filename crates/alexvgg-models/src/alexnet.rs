//! AlexNet in its three historical forms, built from one description table.
//!
//! - [`AlexNetVariant::Tf`]: the study note's TensorFlow graph (Guerzhoy's `myalexnet_forward`,
//!   run with `bvlc_alexnet.npy`): TensorFlow SAME padding everywhere, so conv1 gives 57x57.
//! - [`AlexNetVariant::Caffe`]: the BVLC reference deploy network (`bvlc_alexnet.caffemodel`),
//!   which the same weights were trained in: conv1 unpadded (55x55), pools rounding up.
//! - [`AlexNetVariant::Torchvision`]: torchvision's `alexnet`, which follows Krizhevsky's
//!   "One weird trick" paper (2014): 64/192/384/256/256 channels, no LRN, no groups, adaptive
//!   average pooling to 6x6. Its weights do not fit the two networks above.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor};

use crate::block_linear::{BlockLinear, classifier, weight_block_limit};
use crate::info::{LayerInfo, LayerKind, check_flatten, conv_info, linear_info, pool_info};
use crate::kernels;
use crate::lrn::{Lrn, LrnConfig};
use crate::names;
use crate::shape::Pad;
use crate::{ModelError, Observer, Pass, Stopped};

/// Which AlexNet (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlexNetVariant {
    /// The note's TensorFlow graph (SAME padding, LRN, groups).
    Tf,
    /// The BVLC Caffe deploy network (explicit padding, ceil pooling, LRN, groups).
    Caffe,
    /// torchvision's one-weird-trick network (no LRN, no groups).
    Torchvision,
}

/// One convolution stage of an AlexNet description.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvStage {
    /// Output channels at full width.
    pub channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding rule.
    pub pad: Pad,
    /// Channel groups (2 = the original two-GPU split).
    pub groups: usize,
    /// Followed by local response normalization (after the ReLU).
    pub lrn: bool,
    /// Followed by the variant's max pool.
    pub pool: bool,
}

/// Everything that distinguishes one AlexNet variant from another.
#[derive(Clone, Debug, PartialEq)]
pub struct AlexNetSpec {
    /// The five convolution stages.
    pub convs: [ConvStage; 5],
    /// Max-pool window, stride, padding and rounding.
    pub pool: (usize, usize, Pad, bool),
    /// Local response normalization parameters, where the variant has LRN.
    pub lrn: Option<LrnConfig>,
    /// Adaptive average pooling grid before the classifier (torchvision).
    pub adaptive_pool: Option<usize>,
    /// Input side the original was run at.
    pub input_size: usize,
    /// Dropout on the input of fc6, fc7, fc8 (training only).
    pub dropout_before: [bool; 3],
}

const fn stage(
    channels: usize,
    kernel: usize,
    stride: usize,
    pad: Pad,
    groups: usize,
) -> ConvStage {
    ConvStage {
        channels,
        kernel,
        stride,
        pad,
        groups,
        lrn: false,
        pool: false,
    }
}

impl AlexNetVariant {
    /// All variants, in documentation order.
    pub const ALL: [AlexNetVariant; 3] = [Self::Tf, Self::Caffe, Self::Torchvision];

    /// The variant's name as used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tf => "tf",
            Self::Caffe => "caffe",
            Self::Torchvision => "torchvision",
        }
    }

    /// The description table of this variant.
    pub fn spec(self) -> AlexNetSpec {
        use Pad::{Explicit, Same, Valid};
        let with = |s: ConvStage, lrn: bool, pool: bool| ConvStage { lrn, pool, ..s };
        match self {
            Self::Tf => AlexNetSpec {
                convs: [
                    with(stage(96, 11, 4, Same, 1), true, true),
                    with(stage(256, 5, 1, Same, 2), true, true),
                    stage(384, 3, 1, Same, 1),
                    stage(384, 3, 1, Same, 2),
                    with(stage(256, 3, 1, Same, 2), false, true),
                ],
                pool: (3, 2, Valid, false),
                lrn: Some(LrnConfig::alexnet()),
                adaptive_pool: None,
                input_size: 227,
                dropout_before: [false, true, true],
            },
            Self::Caffe => AlexNetSpec {
                convs: [
                    with(stage(96, 11, 4, Explicit(0), 1), true, true),
                    with(stage(256, 5, 1, Explicit(2), 2), true, true),
                    stage(384, 3, 1, Explicit(1), 1),
                    stage(384, 3, 1, Explicit(1), 2),
                    with(stage(256, 3, 1, Explicit(1), 2), false, true),
                ],
                pool: (3, 2, Explicit(0), true),
                lrn: Some(LrnConfig::alexnet()),
                adaptive_pool: None,
                input_size: 227,
                dropout_before: [false, true, true],
            },
            Self::Torchvision => AlexNetSpec {
                convs: [
                    with(stage(64, 11, 4, Explicit(2), 1), false, true),
                    with(stage(192, 5, 1, Explicit(2), 1), false, true),
                    stage(384, 3, 1, Explicit(1), 1),
                    stage(256, 3, 1, Explicit(1), 1),
                    with(stage(256, 3, 1, Explicit(1), 1), false, true),
                ],
                pool: (3, 2, Explicit(0), false),
                lrn: None,
                adaptive_pool: Some(6),
                input_size: 224,
                dropout_before: [true, true, false],
            },
        }
    }
}

impl std::str::FromStr for AlexNetVariant {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| ModelError::UnknownVariant(s.to_string()))
    }
}

/// Configuration of an [`AlexNet`].
#[derive(Config, Debug)]
pub struct AlexNetConfig {
    /// Which AlexNet.
    pub variant: AlexNetVariant,
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width of fc6 and fc7.
    #[config(default = 4096)]
    pub hidden: usize,
    /// Divides every convolution's channel count (1 = the real network; tests use reduced widths).
    #[config(default = 1)]
    pub width_divisor: usize,
    /// Dropout probability on the fully connected layers (training only).
    #[config(default = 0.5)]
    pub dropout: f64,
}

/// One convolution stage: convolution, ReLU, then optional LRN and max pool.
#[derive(Module, Debug)]
pub struct AlexNetConv {
    /// The (possibly grouped) convolution.
    pub conv: Conv2d,
    /// Local response normalization after the ReLU.
    pub lrn: Option<Lrn>,
    /// Max pool after the ReLU (and LRN).
    pub pool: Option<MaxPool2d>,
}

/// An AlexNet (any variant; see [`AlexNetVariant`]).
#[derive(Module, Debug)]
pub struct AlexNet {
    /// conv1 ... conv5.
    pub convs: Vec<AlexNetConv>,
    /// torchvision's adaptive average pool to 6x6.
    pub avgpool: Option<AdaptiveAvgPool2d>,
    /// Dropout on fc6's input (torchvision).
    pub drop6: Option<Dropout>,
    /// First fully connected layer (flattened `C x H x W` features in, channels-first order).
    pub fc6: BlockLinear,
    /// Dropout on fc7's input.
    pub drop7: Option<Dropout>,
    /// Second fully connected layer.
    pub fc7: BlockLinear,
    /// Dropout on fc8's input (Caffe/TF).
    pub drop8: Option<Dropout>,
    /// The classifier head (logits, no ReLU).
    pub fc8: BlockLinear,
}

impl AlexNetConfig {
    /// Channels of each convolution at this width.
    pub fn channels(&self) -> [usize; 5] {
        self.variant
            .spec()
            .convs
            .map(|s| s.channels / self.width_divisor.max(1))
    }

    /// Size of the flattened feature vector fed to fc6 (`C x 6 x 6`).
    pub fn feature_len(&self) -> usize {
        self.channels()[4] * 36
    }

    /// Builds the network with freshly initialised parameters.
    ///
    /// # Errors
    /// [`ModelError::BadWidth`] when the width divisor leaves a grouped layer with channels
    /// that do not split evenly, or no channels at all; [`ModelError::NoOutputs`] for 0
    /// classes or a hidden width of 0.
    pub fn try_init(&self, device: &Device) -> Result<AlexNet, ModelError> {
        crate::check_classifier(self.num_classes, self.hidden)?;
        let spec = self.variant.spec();
        let channels = self.channels();
        let (pk, ps, ppad, pceil) = spec.pool;
        let mut in_c: usize = 3;
        let mut convs = Vec::with_capacity(5);
        for (stage, out_c) in spec.convs.iter().zip(channels) {
            if out_c == 0
                || !out_c.is_multiple_of(stage.groups)
                || !in_c.is_multiple_of(stage.groups)
            {
                return Err(ModelError::BadWidth {
                    divisor: self.width_divisor,
                    channels: out_c,
                    groups: stage.groups,
                });
            }
            convs.push(AlexNetConv {
                conv: Conv2dConfig::new([in_c, out_c], [stage.kernel, stage.kernel])
                    .with_stride([stage.stride, stage.stride])
                    .with_padding(stage.pad.to_burn())
                    .with_groups(stage.groups)
                    .init(device),
                lrn: spec.lrn.as_ref().filter(|_| stage.lrn).map(LrnConfig::init),
                pool: stage.pool.then(|| {
                    MaxPool2dConfig::new([pk, pk])
                        .with_strides([ps, ps])
                        .with_padding(ppad.to_burn())
                        .with_ceil_mode(pceil)
                        .init()
                }),
            });
            in_c = out_c;
        }
        let limit = weight_block_limit(device);
        let dropout = |on: bool| on.then(|| DropoutConfig::new(self.dropout).init());
        Ok(AlexNet {
            convs,
            avgpool: spec
                .adaptive_pool
                .map(|s| AdaptiveAvgPool2dConfig::new([s, s]).init()),
            drop6: dropout(spec.dropout_before[0]),
            fc6: BlockLinear::new(self.feature_len(), self.hidden, limit, device),
            drop7: dropout(spec.dropout_before[1]),
            fc7: BlockLinear::new(self.hidden, self.hidden, limit, device),
            drop8: dropout(spec.dropout_before[2]),
            fc8: BlockLinear::new(self.hidden, self.num_classes, limit, device),
        })
    }

    /// Builds the network; panics on a configuration that [`Self::try_init`] rejects (a width
    /// divisor that leaves no or uneven channels, 0 classes, a hidden width of 0).
    pub fn init(&self, device: &Device) -> AlexNet {
        self.try_init(device)
            .unwrap_or_else(|e| panic!("invalid AlexNet configuration: {e}"))
    }
}

fn no_observer(_: &str, _: &Tensor<4>) {}

impl AlexNet {
    /// Class logits (no ReLU, no softmax).
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]` (227x227 for `tf`/`caffe`; any size ≥ 63 for `torchvision`)
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        self.forward_observed(input, &mut no_observer)
    }

    /// Flattened convolutional features, the input of fc6.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    /// - output: `[batch, C * 6 * 6]`, flattened channels-first (`c, h, w`)
    pub fn forward_features(&self, input: Tensor<4>) -> Tensor<2> {
        self.forward_features_observed(input, &mut no_observer)
    }

    /// The fc7 activations (after ReLU), the classic transfer-learning features.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    /// - output: `[batch, hidden]`
    pub fn forward_fc7(&self, input: Tensor<4>) -> Tensor<2> {
        let x = self.forward_features(input);
        self.head_observed(x, 2, &mut no_observer)
    }

    /// Logits computed from activation `from` (a name of
    /// [`forward_observed`](Self::forward_observed), or `input`): the layers up to and including
    /// `from` are not run, `activation` stands for its output. A name the network does not have
    /// runs no layer at all; [`Model::forward_from`] checks names and shapes first.
    ///
    /// # Shapes
    /// - `activation`: `from`'s output, `[batch, C, h, w]` (fully connected layers:
    ///   `[batch, features, 1, 1]`)
    /// - output: `[batch, num_classes]`
    pub fn forward_from(&self, from: &str, activation: Tensor<4>) -> Tensor<2> {
        let mut observer = no_observer;
        let from = (from != names::INPUT).then_some(from);
        let mut pass = Pass::new(from, None, &mut observer);
        let Ok(x) = self
            .features_pass(activation, &mut pass)
            .and_then(|x| self.head_pass(x, 3, &mut pass))
        else {
            unreachable!("a pass without a stop runs to the end")
        };
        x
    }

    /// Logits, calling `observer` with every intermediate activation, named as the original
    /// scripts name them (`conv1`, `lrn1`, `pool1`, ..., `fc6`, `fc7`, `fc8`); fully connected
    /// activations are passed as `[batch, features, 1, 1]`.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    /// - output: `[batch, num_classes]`
    pub fn forward_observed(&self, input: Tensor<4>, observer: &mut Observer<'_>) -> Tensor<2> {
        let x = self.forward_features_observed(input, observer);
        self.head_observed(x, 3, observer)
    }

    /// Runs the network only as far as activation `last`, reporting every activation up to and
    /// including it (names as in [`forward_observed`](Self::forward_observed)); layers after
    /// it are not computed, so the input need only fit the layers up to `last`. A name the
    /// network does not have runs the whole network.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    pub fn forward_until(&self, input: Tensor<4>, last: &str, observer: &mut Observer<'_>) {
        let mut pass = Pass::new(None, Some(last), observer);
        if let Ok(x) = self.features_pass(input, &mut pass) {
            let _ = self.head_pass(x, 3, &mut pass);
        }
    }

    /// Flattened features, calling `observer` with each convolutional activation.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    /// - output: `[batch, C * h * w]` (any input size that the windows fit)
    pub fn forward_features_observed(
        &self,
        input: Tensor<4>,
        observer: &mut Observer<'_>,
    ) -> Tensor<2> {
        let Ok(x) = self.features_pass(input, &mut Pass::new(None, None, observer)) else {
            unreachable!("a pass without a stop runs to the end")
        };
        x
    }

    /// Runs the feature layers of `pass` (from its start, until its stop), reporting each
    /// activation.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`, or the activation the pass starts from
    /// - output: `[batch, C * h * w]`
    fn features_pass(&self, input: Tensor<4>, pass: &mut Pass) -> Result<Tensor<2>, Stopped> {
        let mut x = input; // [batch, 3, H, W]
        for (i, stage) in self.convs.iter().enumerate() {
            let n = i + 1;
            // [batch, C_n, H_n, W_n]
            x = pass.step(&names::alexnet_conv(n), x, |x| {
                kernels::conv2d(&stage.conv, x, true)
            })?;
            if let Some(lrn) = &stage.lrn {
                x = pass.step(&names::alexnet_lrn(n), x, |x| kernels::lrn(lrn, x))?;
            }
            if let Some(pool) = &stage.pool {
                // [batch, C_n, H_n / 2, W_n / 2]
                x = pass.step(&names::alexnet_pool(n), x, |x| kernels::max_pool2d(pool, x))?;
            }
        }
        if let Some(avgpool) = &self.avgpool {
            x = pass.step(names::AVGPOOL, x, |x| avgpool.forward(x))?; // [batch, C, 6, 6]
        }
        Ok(x.flatten(1, 3)) // [batch, C * 6 * 6]
    }

    /// Runs the first `depth` fully connected layers (3 = logits).
    fn head_observed(&self, x: Tensor<2>, depth: usize, observer: &mut Observer<'_>) -> Tensor<2> {
        let Ok(x) = self.head_pass(x, depth, &mut Pass::new(None, None, observer)) else {
            unreachable!("a pass without a stop runs to the end")
        };
        x
    }

    /// Runs the first `depth` fully connected layers of `pass`.
    ///
    /// # Shapes
    /// - `x`: `[batch, features]`
    /// - output: `[batch, out]` of the last layer run
    fn head_pass(&self, x: Tensor<2>, depth: usize, pass: &mut Pass) -> Result<Tensor<2>, Stopped> {
        let [fc6, fc7, fc8] = names::FC;
        let layers = [
            (fc6, self.drop6.as_ref(), &self.fc6),
            (fc7, self.drop7.as_ref(), &self.fc7),
            (fc8, self.drop8.as_ref(), &self.fc8),
        ];
        classifier(layers, x, depth, pass)
    }

    /// Replaces the classifier head with a freshly initialised `hidden -> num_classes` layer.
    pub fn with_classes(mut self, num_classes: usize, device: &Device) -> Self {
        let hidden = self.fc8.d_in();
        self.fc8 = BlockLinear::new(hidden, num_classes, weight_block_limit(device), device);
        self
    }

    /// Sets the drop probability of the classifier's dropout layers (those the variant has;
    /// `0.0` keeps them but makes training deterministic).
    pub fn with_dropout(mut self, prob: f64) -> Self {
        for d in [&mut self.drop6, &mut self.drop7, &mut self.drop8] {
            if d.is_some() {
                *d = Some(DropoutConfig::new(prob).init());
            }
        }
        self
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.fc8.d_out()
    }

    /// The per-layer table for an input of `[channels, height, width]`, computed from the
    /// modules themselves (the note's AlexNet table for `tf` at 227x227x3).
    ///
    /// # Errors
    /// [`ModelError::InputTooSmall`] when a window no longer fits, and
    /// [`ModelError::FlattenMismatch`] when the final feature map does not match fc6 (the
    /// `tf`/`caffe` networks need a 227x227 input).
    pub fn layers(&self, input: [usize; 3]) -> Result<Vec<LayerInfo>, ModelError> {
        let mut rows = vec![LayerInfo::plain(names::INPUT, LayerKind::Input, input)];
        let mut shape = input;
        for (i, stage) in self.convs.iter().enumerate() {
            let n = i + 1;
            let row = conv_info(&names::alexnet_conv(n), &stage.conv, 0, shape)?;
            shape = row.output;
            rows.push(row);
            if stage.lrn.is_some() {
                rows.push(LayerInfo::plain(
                    names::alexnet_lrn(n),
                    LayerKind::Lrn,
                    shape,
                ));
            }
            if let Some(pool) = &stage.pool {
                let row = pool_info(&names::alexnet_pool(n), pool, shape)?;
                shape = row.output;
                rows.push(row);
            }
        }
        if let Some(avgpool) = &self.avgpool {
            let [h, w] = avgpool.output_size;
            shape = [shape[0], h, w];
            rows.push(LayerInfo::plain(
                names::AVGPOOL,
                LayerKind::AdaptiveAvgPool,
                shape,
            ));
        }
        check_flatten(shape, &self.fc6)?;
        let [fc6, fc7, fc8] = names::FC;
        rows.extend([
            linear_info(fc6, &self.fc6),
            linear_info(fc7, &self.fc7),
            linear_info(fc8, &self.fc8),
        ]);
        Ok(rows)
    }
}

//! The VGG family (Simonyan & Zisserman, 2015), configurations A, B, D and E, with or without
//! BatchNorm in torchvision's layout, all built from one table as torchvision's `vgg.py` does.
//!
//! VGG16 (configuration D) is the network of Frossard's TensorFlow port (`vgg16_weights.npz`),
//! of the original Caffe release (`VGG_ILSVRC_16_layers`) and of torchvision's `vgg16`: same math,
//! different file layouts and input preprocessing.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor};

use crate::block_linear::{BlockLinear, classifier, weight_block_limit};
use crate::info::{LayerInfo, LayerKind, check_flatten, conv_info, linear_info, pool_info};
use crate::kernels;
use crate::names;
use crate::shape::Pad;
use crate::{ModelError, Observer, Pass, Stopped};

/// One entry of a VGG configuration table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VggItem {
    /// 3x3 convolution, padding 1 (= TensorFlow SAME), with this many output channels, then ReLU.
    Conv(usize),
    /// 2x2 max pool, stride 2.
    Pool,
}

use VggItem::{Conv as C, Pool as P};

/// Configuration A (VGG11).
pub const VGG11: &[VggItem] = &[
    C(64),
    P,
    C(128),
    P,
    C(256),
    C(256),
    P,
    C(512),
    C(512),
    P,
    C(512),
    C(512),
    P,
];
/// Configuration B (VGG13).
pub const VGG13: &[VggItem] = &[
    C(64),
    C(64),
    P,
    C(128),
    C(128),
    P,
    C(256),
    C(256),
    P,
    C(512),
    C(512),
    P,
    C(512),
    C(512),
    P,
];
/// Configuration D (VGG16).
pub const VGG16: &[VggItem] = &[
    C(64),
    C(64),
    P,
    C(128),
    C(128),
    P,
    C(256),
    C(256),
    C(256),
    P,
    C(512),
    C(512),
    C(512),
    P,
    C(512),
    C(512),
    C(512),
    P,
];
/// Configuration E (VGG19).
pub const VGG19: &[VggItem] = &[
    C(64),
    C(64),
    P,
    C(128),
    C(128),
    P,
    C(256),
    C(256),
    C(256),
    C(256),
    P,
    C(512),
    C(512),
    C(512),
    C(512),
    P,
    C(512),
    C(512),
    C(512),
    C(512),
    P,
];

/// Input side the VGGs were trained and are run at (their adaptive pool accepts others).
pub const INPUT_SIZE: usize = 224;

/// Depth of a VGG network (number of weight layers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum VggDepth {
    /// VGG11, configuration A.
    Vgg11,
    /// VGG13, configuration B.
    Vgg13,
    /// VGG16, configuration D.
    Vgg16,
    /// VGG19, configuration E.
    Vgg19,
}

impl VggDepth {
    /// All depths.
    pub const ALL: [VggDepth; 4] = [Self::Vgg11, Self::Vgg13, Self::Vgg16, Self::Vgg19];

    /// The configuration table.
    pub fn table(self) -> &'static [VggItem] {
        match self {
            Self::Vgg11 => VGG11,
            Self::Vgg13 => VGG13,
            Self::Vgg16 => VGG16,
            Self::Vgg19 => VGG19,
        }
    }

    /// `vgg11`, `vgg13`, `vgg16` or `vgg19`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vgg11 => "vgg11",
            Self::Vgg13 => "vgg13",
            Self::Vgg16 => "vgg16",
            Self::Vgg19 => "vgg19",
        }
    }
}

/// Configuration of a [`Vgg`] network.
#[derive(Config, Debug)]
pub struct VggConfig {
    /// Which configuration.
    pub depth: VggDepth,
    /// BatchNorm after every convolution (torchvision's `vggNN_bn`).
    #[config(default = false)]
    pub batch_norm: bool,
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width of fc6 and fc7.
    #[config(default = 4096)]
    pub hidden: usize,
    /// Divides every convolution's channel count (1 = the real network).
    #[config(default = 1)]
    pub width_divisor: usize,
    /// Side of the adaptive average pool before the classifier.
    #[config(default = 7)]
    pub pool_size: usize,
    /// Dropout probability on the fully connected layers (training only).
    #[config(default = 0.5)]
    pub dropout: f64,
}

/// A 3x3 convolution with optional BatchNorm, its ReLU and an optional following max pool.
#[derive(Module, Debug)]
pub struct VggConv {
    /// The convolution.
    pub conv: Conv2d,
    /// BatchNorm between convolution and ReLU.
    pub bn: Option<BatchNorm>,
    /// The 2x2 max pool closing a block.
    pub pool: Option<MaxPool2d>,
}

/// A VGG network.
#[derive(Module, Debug)]
pub struct Vgg {
    /// The convolutions, in order (`conv1_1`, `conv1_2`, `conv2_1`, ...).
    pub features: Vec<VggConv>,
    /// Adaptive average pool to `pool_size x pool_size` (the identity at 224x224 input).
    pub avgpool: AdaptiveAvgPool2d,
    /// First fully connected layer (`C x 7 x 7` features in, channels-first order).
    pub fc6: BlockLinear,
    /// Dropout on fc7's input.
    pub drop7: Dropout,
    /// Second fully connected layer.
    pub fc7: BlockLinear,
    /// Dropout on fc8's input.
    pub drop8: Dropout,
    /// The classifier head (logits, no ReLU).
    pub fc8: BlockLinear,
}

impl VggConfig {
    /// Builds the network with freshly initialised parameters.
    ///
    /// # Errors
    /// [`ModelError::BadWidth`] when the width divisor leaves a layer without channels;
    /// [`ModelError::NoOutputs`] for 0 classes or a hidden width of 0.
    pub fn try_init(&self, device: &Device) -> Result<Vgg, ModelError> {
        crate::check_classifier(self.num_classes, self.hidden)?;
        let divisor = self.width_divisor.max(1);
        let mut features: Vec<VggConv> = Vec::new();
        let mut in_c: usize = 3;
        for item in self.depth.table() {
            match *item {
                VggItem::Conv(channels) => {
                    let out_c = channels / divisor;
                    if out_c == 0 {
                        return Err(ModelError::BadWidth {
                            divisor,
                            channels,
                            groups: 1,
                        });
                    }
                    features.push(VggConv {
                        conv: Conv2dConfig::new([in_c, out_c], [3, 3])
                            .with_padding(Pad::Explicit(1).to_burn())
                            .init(device),
                        bn: self
                            .batch_norm
                            .then(|| BatchNormConfig::new(out_c).init(device)),
                        pool: None,
                    });
                    in_c = out_c;
                }
                VggItem::Pool => {
                    if let Some(last) = features.last_mut() {
                        last.pool = Some(MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init());
                    }
                }
            }
        }
        let limit = weight_block_limit(device);
        let dropout = || DropoutConfig::new(self.dropout).init();
        Ok(Vgg {
            features,
            avgpool: AdaptiveAvgPool2dConfig::new([self.pool_size, self.pool_size]).init(),
            fc6: BlockLinear::new(
                in_c * self.pool_size * self.pool_size,
                self.hidden,
                limit,
                device,
            ),
            drop7: dropout(),
            fc7: BlockLinear::new(self.hidden, self.hidden, limit, device),
            drop8: dropout(),
            fc8: BlockLinear::new(self.hidden, self.num_classes, limit, device),
        })
    }

    /// Builds the network; panics on a configuration that [`Self::try_init`] rejects (a width
    /// divisor that leaves no channels, 0 classes, a hidden width of 0).
    pub fn init(&self, device: &Device) -> Vgg {
        self.try_init(device)
            .unwrap_or_else(|e| panic!("invalid VGG configuration: {e}"))
    }
}

fn no_observer(_: &str, _: &Tensor<4>) {}

/// The names of a feature stack's convolutions and of the pools closing their blocks.
fn conv_names(features: &[VggConv]) -> Vec<(String, Option<String>)> {
    names::vgg_convs(features.iter().map(|f| f.pool.is_some()))
        .iter()
        .map(|c| (c.name(), c.pool_name()))
        .collect()
}

impl Vgg {
    /// Class logits (no ReLU, no softmax).
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`, H and W ≥ 32 (224x224 for the originals)
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        self.forward_observed(input, &mut no_observer)
    }

    /// Flattened features after the adaptive pool, the input of fc6.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    /// - output: `[batch, C * 7 * 7]`, flattened channels-first (`c, h, w`)
    pub fn forward_features(&self, input: Tensor<4>) -> Tensor<2> {
        self.forward_features_observed(input, &mut no_observer)
    }

    /// The fc7 activations (after ReLU).
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

    /// Logits, calling `observer` with each activation (`conv1_1`, ..., `pool5`, `avgpool`,
    /// `fc6`, `fc7`, `fc8`; fully connected ones as `[batch, features, 1, 1]`).
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
    /// - output: `[batch, C * 7 * 7]`
    fn features_pass(&self, input: Tensor<4>, pass: &mut Pass) -> Result<Tensor<2>, Stopped> {
        let mut x = input; // [batch, 3, H, W]
        for (layer, (conv_name, pool_name)) in self.features.iter().zip(conv_names(&self.features))
        {
            x = pass.step(&conv_name, x, |x| {
                match &layer.bn {
                    // [batch, C, H, W]
                    Some(bn) => {
                        kernels::batch_norm(bn, kernels::conv2d(&layer.conv, x, false), true)
                    }
                    None => kernels::conv2d(&layer.conv, x, true),
                }
            })?;
            if let (Some(pool), Some(name)) = (&layer.pool, pool_name) {
                x = pass.step(&name, x, |x| kernels::max_pool2d(pool, x))?; // [batch, C, H / 2, W / 2]
            }
        }
        x = pass.step(names::AVGPOOL, x, |x| self.avgpool.forward(x))?; // [batch, C, 7, 7]
        Ok(x.flatten(1, 3)) // [batch, C * 49]
    }

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
            (fc6, None, &self.fc6),
            (fc7, Some(&self.drop7), &self.fc7),
            (fc8, Some(&self.drop8), &self.fc8),
        ];
        classifier(layers, x, depth, pass)
    }

    /// Replaces the classifier head with a freshly initialised `hidden -> num_classes` layer.
    pub fn with_classes(mut self, num_classes: usize, device: &Device) -> Self {
        let hidden = self.fc8.d_in();
        self.fc8 = BlockLinear::new(hidden, num_classes, weight_block_limit(device), device);
        self
    }

    /// Sets the drop probability of the classifier's two dropout layers.
    pub fn with_dropout(mut self, prob: f64) -> Self {
        self.drop7 = DropoutConfig::new(prob).init();
        self.drop8 = DropoutConfig::new(prob).init();
        self
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.fc8.d_out()
    }

    /// The per-layer table for an input of `[channels, height, width]`.
    ///
    /// # Errors
    /// [`ModelError::InputTooSmall`] when a pool no longer fits (inputs under 32x32).
    pub fn layers(&self, input: [usize; 3]) -> Result<Vec<LayerInfo>, ModelError> {
        let mut rows = vec![LayerInfo::plain(names::INPUT, LayerKind::Input, input)];
        let mut shape = input;
        for (layer, (conv_name, pool_name)) in self.features.iter().zip(conv_names(&self.features))
        {
            let bn_params = layer
                .bn
                .as_ref()
                .map_or(0, |bn| bn.gamma.num_params() + bn.beta.num_params());
            let row = conv_info(&conv_name, &layer.conv, bn_params, shape)?;
            shape = row.output;
            rows.push(row);
            if let (Some(pool), Some(name)) = (&layer.pool, pool_name) {
                let row = pool_info(&name, pool, shape)?;
                shape = row.output;
                rows.push(row);
            }
        }
        let [h, w] = self.avgpool.output_size;
        shape = [shape[0], h, w];
        rows.push(LayerInfo::plain(
            names::AVGPOOL,
            LayerKind::AdaptiveAvgPool,
            shape,
        ));
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

//! One name for every network this crate builds, and a [`Model`] that holds any of them.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::vgg::VggItem;
use crate::{
    AlexNet, AlexNetConfig, AlexNetVariant, LayerInfo, ModelError, Observer, Vgg, VggConfig,
    VggDepth,
};

/// Which network: an AlexNet variant or a VGG configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Architecture {
    /// An AlexNet variant.
    AlexNet(AlexNetVariant),
    /// A VGG, with or without BatchNorm.
    Vgg {
        /// Configuration (11/13/16/19).
        depth: VggDepth,
        /// torchvision's `_bn` layout.
        batch_norm: bool,
    },
}

impl Architecture {
    /// Every architecture, in the order the CLI lists them.
    pub fn all() -> Vec<Architecture> {
        let mut all: Vec<_> = AlexNetVariant::ALL
            .into_iter()
            .map(Architecture::AlexNet)
            .collect();
        for depth in VggDepth::ALL {
            for batch_norm in [false, true] {
                all.push(Architecture::Vgg { depth, batch_norm });
            }
        }
        all
    }

    /// Canonical name: `alexnet-tf`, `alexnet-caffe`, `alexnet-torchvision`, `vgg16`, `vgg16_bn`...
    pub fn name(&self) -> String {
        match self {
            Architecture::AlexNet(v) => format!("alexnet-{}", v.name()),
            Architecture::Vgg { depth, batch_norm } => {
                format!("{}{}", depth.name(), if *batch_norm { "_bn" } else { "" })
            }
        }
    }

    /// Parses a [`name`](Self::name).
    ///
    /// # Errors
    /// [`ModelError::UnknownArchitecture`] listing the known names.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        Self::all()
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                ModelError::UnknownArchitecture(
                    name.to_string(),
                    Self::all()
                        .iter()
                        .map(|a| a.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })
    }

    /// Human-readable name (`AlexNet (tf)`, `VGG16`, `VGG16-BN`).
    pub fn describe(&self) -> String {
        match self {
            Architecture::AlexNet(v) => format!("AlexNet ({})", v.name()),
            Architecture::Vgg { depth, batch_norm } => {
                format!(
                    "{}{}",
                    depth.name().to_uppercase(),
                    if *batch_norm { "-BN" } else { "" }
                )
            }
        }
    }

    /// Input side the original network was run at (227 or 224).
    pub fn input_size(&self) -> usize {
        match self {
            Architecture::AlexNet(v) => v.spec().input_size,
            Architecture::Vgg { .. } => crate::vgg::INPUT_SIZE,
        }
    }

    /// Output channels of the first convolution at full width (96 for the LRN AlexNets, 64 for
    /// torchvision's AlexNet and every VGG): the channels that a width divisor divides.
    pub fn conv1_channels(&self) -> usize {
        match self {
            Architecture::AlexNet(v) => v.spec().convs[0].channels,
            Architecture::Vgg { depth, .. } => depth
                .table()
                .iter()
                .find_map(|item| match item {
                    VggItem::Conv(channels) => Some(*channels),
                    VggItem::Pool => None,
                })
                .unwrap_or(0),
        }
    }

    /// The width divisor of a network of this architecture whose first convolution has `conv1`
    /// output channels: [`conv1_channels`](Self::conv1_channels)` / conv1`, or `None` when
    /// `conv1` is zero or does not divide the full width.
    pub fn width_divisor(&self, conv1: usize) -> Option<usize> {
        let full = self.conv1_channels();
        (conv1 > 0 && full.is_multiple_of(conv1)).then(|| full / conv1)
    }

    /// Builds the network with fresh parameters.
    ///
    /// # Errors
    /// [`ModelError::BadWidth`] for a width divisor that leaves no channels or uneven groups.
    pub fn init(&self, shape: &NetworkShape, device: &Device) -> Result<Model, ModelError> {
        Ok(match *self {
            Architecture::AlexNet(variant) => Model::AlexNet(
                AlexNetConfig::new(variant)
                    .with_num_classes(shape.num_classes)
                    .with_hidden(shape.hidden)
                    .with_width_divisor(shape.width_divisor)
                    .try_init(device)?,
            ),
            Architecture::Vgg { depth, batch_norm } => Model::Vgg(
                VggConfig::new(depth)
                    .with_batch_norm(batch_norm)
                    .with_num_classes(shape.num_classes)
                    .with_hidden(shape.hidden)
                    .with_width_divisor(shape.width_divisor)
                    .try_init(device)?,
            ),
        })
    }
}

/// Size knobs shared by every architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkShape {
    /// Output classes (1000 for ImageNet).
    pub num_classes: usize,
    /// Width of fc6 and fc7 (4096 in the originals).
    pub hidden: usize,
    /// Channel divisor of the convolutions (1 in the originals).
    pub width_divisor: usize,
}

impl Default for NetworkShape {
    fn default() -> Self {
        Self {
            num_classes: 1000,
            hidden: 4096,
            width_divisor: 1,
        }
    }
}

/// Any network of this crate.
#[derive(Module, Debug)]
pub enum Model {
    /// An AlexNet.
    AlexNet(AlexNet),
    /// A VGG.
    Vgg(Vgg),
}

impl Model {
    /// Class logits.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        match self {
            Model::AlexNet(m) => m.forward(input),
            Model::Vgg(m) => m.forward(input),
        }
    }

    /// Logits, reporting each named activation to `observer`.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    /// - output: `[batch, num_classes]`
    pub fn forward_observed(&self, input: Tensor<4>, observer: &mut Observer<'_>) -> Tensor<2> {
        match self {
            Model::AlexNet(m) => m.forward_observed(input, observer),
            Model::Vgg(m) => m.forward_observed(input, observer),
        }
    }

    /// The names of the activations [`forward_observed`](Self::forward_observed) reports, in
    /// order (`conv1`, `lrn1`, `pool1`, ... `fc8`; `conv1_1` ... for VGG): a convolution's name
    /// is its output after ReLU (and BatchNorm), `fc6`/`fc7` are after ReLU, `fc8` the logits.
    pub fn activation_names(&self) -> Vec<String> {
        let side = self.input_size();
        self.layers([3, side, side])
            .map(|rows| rows.into_iter().skip(1).map(|r| r.name).collect())
            .unwrap_or_default()
    }

    /// Runs the network only as far as activation `last` (one of
    /// [`activation_names`](Self::activation_names)), reporting every activation up to it:
    /// the layers after it are not computed, so any input the layers up to `last` fit will do.
    ///
    /// # Errors
    /// [`ModelError::UnknownLayer`] for a name the network does not have (listing those it has).
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    pub fn forward_until(
        &self,
        input: Tensor<4>,
        last: &str,
        observer: &mut Observer<'_>,
    ) -> Result<(), ModelError> {
        if !self.activation_names().iter().any(|n| n == last) {
            return Err(self.unknown_layer(last));
        }
        match self {
            Model::AlexNet(m) => m.forward_until(input, last, observer),
            Model::Vgg(m) => m.forward_until(input, last, observer),
        }
        Ok(())
    }

    /// Logits computed from activation `from` onwards: the layers up to and including `from`
    /// (one of [`activation_names`](Self::activation_names), or `input` for the whole network)
    /// are not run, and `activation` stands for `from`'s output. With an autodiff leaf for
    /// `activation`, the logits' gradient with respect to that layer's output is one backward
    /// pass away (Grad-CAM).
    ///
    /// # Errors
    /// [`ModelError::UnknownLayer`] for a name the network does not have (listing those it has);
    /// [`ModelError::ActivationShape`] for an activation whose shape is not the one the network
    /// gives `from` for an input of its own size ([`input_size`](Self::input_size)).
    ///
    /// # Shapes
    /// - `activation`: `[batch, C, h, w]` as [`forward_until`](Self::forward_until) reports
    ///   `from` for an `input_size` input (fully connected layers: `[batch, features, 1, 1]`)
    /// - output: `[batch, num_classes]`
    pub fn forward_from(&self, from: &str, activation: Tensor<4>) -> Result<Tensor<2>, ModelError> {
        let side = self.input_size();
        let rows = self.layers([3, side, side])?;
        let Some(row) = rows.iter().find(|r| r.name == from) else {
            return Err(self.unknown_layer(from));
        };
        let [b, c, h, w] = activation.dims();
        if [c, h, w] != row.output {
            return Err(ModelError::ActivationShape {
                layer: from.to_string(),
                expected: row.output,
                found: [b, c, h, w],
                input: side,
            });
        }
        Ok(match self {
            Model::AlexNet(m) => m.forward_from(from, activation),
            Model::Vgg(m) => m.forward_from(from, activation),
        })
    }

    /// The error for a layer name this network does not have, listing those it has.
    fn unknown_layer(&self, layer: &str) -> ModelError {
        ModelError::UnknownLayer {
            network: match self {
                Model::AlexNet(_) => "AlexNet".to_string(),
                Model::Vgg(_) => "VGG".to_string(),
            },
            layer: layer.to_string(),
            known: self.activation_names().join(", "),
        }
    }

    /// fc7 activations (after ReLU).
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]`
    /// - output: `[batch, hidden]`
    pub fn forward_fc7(&self, input: Tensor<4>) -> Tensor<2> {
        match self {
            Model::AlexNet(m) => m.forward_fc7(input),
            Model::Vgg(m) => m.forward_fc7(input),
        }
    }

    /// The per-layer table for an input of `[channels, height, width]`.
    ///
    /// # Errors
    /// See [`AlexNet::layers`] and [`Vgg::layers`].
    pub fn layers(&self, input: [usize; 3]) -> Result<Vec<LayerInfo>, ModelError> {
        match self {
            Model::AlexNet(m) => m.layers(input),
            Model::Vgg(m) => m.layers(input),
        }
    }

    /// Replaces the classifier head.
    pub fn with_classes(self, num_classes: usize, device: &Device) -> Self {
        match self {
            Model::AlexNet(m) => Model::AlexNet(m.with_classes(num_classes, device)),
            Model::Vgg(m) => Model::Vgg(m.with_classes(num_classes, device)),
        }
    }

    /// Sets the drop probability of the classifier's dropout layers.
    pub fn with_dropout(self, prob: f64) -> Self {
        match self {
            Model::AlexNet(m) => Model::AlexNet(m.with_dropout(prob)),
            Model::Vgg(m) => Model::Vgg(m.with_dropout(prob)),
        }
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        match self {
            Model::AlexNet(m) => m.num_classes(),
            Model::Vgg(m) => m.num_classes(),
        }
    }

    /// Input side the network is normally run at: 227 for the `tf`/`caffe` AlexNets (their
    /// fc6 fixes it), 224 for torchvision's AlexNet and the VGGs (adaptive pools accept others).
    pub fn input_size(&self) -> usize {
        match self {
            // tf and caffe (no adaptive pool) share the input size that their fc6 fixes
            Model::AlexNet(m) if m.avgpool.is_none() => AlexNetVariant::Tf.spec().input_size,
            Model::AlexNet(_) => AlexNetVariant::Torchvision.spec().input_size,
            Model::Vgg(_) => crate::vgg::INPUT_SIZE,
        }
    }
}

/// Serde adapter that stores an [`Architecture`] as its [`name`](Architecture::name)
/// (`"alexnet-tf"`, `"vgg16_bn"`), as `weights/known.json` and fine-tuning `config.json` do:
/// `#[serde(with = "alexvgg_models::arch::by_name")]`.
pub mod by_name {
    use super::Architecture;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the name.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(a: &Architecture, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.name())
    }

    /// Reads a name.
    ///
    /// # Errors
    /// An unknown name, listing the known ones.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Architecture, D::Error> {
        let name = String::deserialize(d)?;
        Architecture::parse(&name).map_err(serde::de::Error::custom)
    }
}

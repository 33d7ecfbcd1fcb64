//! AlexNet (three variants) and VGG (11/13/16/19, with or without BatchNorm) as pure burn
//! modules, plus the window arithmetic that explains their layer sizes.
//!
//! No file I/O lives here: weight files are the business of `alexvgg-import`.
//!
//! ```no_run
//! use alexvgg_models::{AlexNetConfig, AlexNetVariant};
//! use burn::tensor::{Device, Tensor};
//!
//! let device = Device::default();
//! let model = AlexNetConfig::new(AlexNetVariant::Tf).init(&device);
//! let logits = model.forward(Tensor::zeros([1, 3, 227, 227], &device));
//! assert_eq!(logits.dims(), [1, 1000]);
//! ```

#![warn(missing_docs)]

pub mod alexnet;
pub mod arch;
pub mod block_linear;
pub mod info;
pub mod kernels;
pub mod lrn;
pub mod names;
pub mod params;
pub mod shape;
pub mod vgg;

pub use alexnet::{AlexNet, AlexNetConfig, AlexNetVariant};
pub use arch::{Architecture, Model, NetworkShape};
pub use block_linear::{BlockLinear, weight_block_limit};
pub use info::{LayerInfo, LayerKind, gflops};
pub use lrn::{Lrn, LrnConfig};
pub use names::ModulePath;
pub use shape::{Pad, Window, output_size, same_padding, window};
pub use vgg::{Vgg, VggConfig, VggDepth};

use burn::tensor::Tensor;

/// The values of a tensor on the host, as `f32` (the one place that reads a tensor back).
///
/// # Errors
/// [`ModelError::HostValues`] when the data cannot be read as `f32`.
pub fn host_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::HostValues(format!("{e:?}")))
}

/// A forward pass that stopped after the activation it was asked to stop at
/// (see [`Model::forward_until`]).
#[derive(Debug)]
pub(crate) struct Stopped;

/// Reports activation `name` to `observer`, then stops the pass if it is `until`.
pub(crate) fn emit(
    observer: &mut Observer<'_>,
    until: Option<&str>,
    name: &str,
    x: &Tensor<4>,
) -> Result<(), Stopped> {
    observer(name, x);
    if until == Some(name) {
        Err(Stopped)
    } else {
        Ok(())
    }
}

/// One forward pass over the named steps of a network: it may start after one activation (the
/// steps up to and including it are skipped, see [`Model::forward_from`]) and stop after another
/// (see [`Model::forward_until`]), reporting every step it runs to its observer.
pub(crate) struct Pass<'a, 'o> {
    /// The activation the pass starts from, until the pass has gone by it.
    from: Option<&'a str>,
    /// The activation the pass stops at.
    until: Option<&'a str>,
    /// Receives every activation computed.
    observer: &'a mut Observer<'o>,
}

impl<'a, 'o> Pass<'a, 'o> {
    /// A pass from activation `from` (`None`: the input) up to `until` (`None`: the logits).
    pub(crate) fn new(
        from: Option<&'a str>,
        until: Option<&'a str>,
        observer: &'a mut Observer<'o>,
    ) -> Self {
        Self {
            from,
            until,
            observer,
        }
    }

    /// Whether step `name` comes before the starting activation (or is it), and so is not run.
    pub(crate) fn skips(&mut self, name: &str) -> bool {
        match self.from {
            Some(from) => {
                if from == name {
                    self.from = None;
                }
                true
            }
            None => false,
        }
    }

    /// Runs step `name` (`op` on `x`) and reports its output; a skipped step passes `x` on
    /// unrun.
    ///
    /// # Shapes
    /// - `x`: the previous activation, `[batch, C, H, W]`
    /// - output: this step's activation
    pub(crate) fn step(
        &mut self,
        name: &str,
        x: Tensor<4>,
        op: impl FnOnce(Tensor<4>) -> Tensor<4>,
    ) -> Result<Tensor<4>, Stopped> {
        if self.skips(name) {
            return Ok(x);
        }
        let x = op(x);
        self.emit(name, &x)?;
        Ok(x)
    }

    /// Reports activation `name` to the observer, then stops the pass if it is the last one.
    pub(crate) fn emit(&mut self, name: &str, x: &Tensor<4>) -> Result<(), Stopped> {
        emit(self.observer, self.until, name, x)
    }
}

/// Refuses a classifier that could not run: 0 classes, or fc6/fc7 of width 0.
fn check_classifier(num_classes: usize, hidden: usize) -> Result<(), ModelError> {
    if num_classes == 0 {
        return Err(ModelError::NoOutputs {
            layer: "fc8",
            setting: "num_classes",
        });
    }
    if hidden == 0 {
        return Err(ModelError::NoOutputs {
            layer: "fc6/fc7",
            setting: "hidden",
        });
    }
    Ok(())
}

/// A callback that receives every named intermediate activation of a forward pass.
pub type Observer<'a> = dyn FnMut(&str, &Tensor<4>) + 'a;

/// Errors from building or describing a model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    /// LRN window sizes must be odd (Caffe's `local_size`).
    #[error(
        "LRN size must be odd and positive (Caffe's local_size = 2 * depth_radius + 1), got {0}"
    )]
    EvenLrnSize(usize),
    /// A reduced width that does not divide a layer's channels into its groups.
    #[error(
        "width divisor {divisor} leaves {channels} channels, which cannot be split into {groups} group(s)"
    )]
    BadWidth {
        /// The divisor asked for.
        divisor: usize,
        /// Channels left at that width.
        channels: usize,
        /// Groups of the layer.
        groups: usize,
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
    /// The final feature map does not flatten to fc6's input size.
    #[error(
        "features of shape {shape:?} flatten to {found} values but fc6 expects {expected}; this network needs its original input size"
    )]
    FlattenMismatch {
        /// fc6's input size.
        expected: usize,
        /// Flattened size found.
        found: usize,
        /// `[C, H, W]` reaching fc6.
        shape: [usize; 3],
    },
    /// A fully connected layer configured with no outputs (0 classes, or a hidden width of 0):
    /// it could not run.
    #[error("{layer} would have no outputs: {setting} must be at least 1")]
    NoOutputs {
        /// The layer (`fc8`, or `fc6/fc7`).
        layer: &'static str,
        /// The setting that is 0 (`num_classes`, `hidden`).
        setting: &'static str,
    },
    /// An unknown architecture name.
    #[error("unknown model '{0}' (known: {1})")]
    UnknownArchitecture(String, String),
    /// An unknown variant name.
    #[error("unknown AlexNet variant '{0}' (expected tf, caffe or torchvision)")]
    UnknownVariant(String),
    /// A layer name that the network does not have.
    #[error("{network} has no layer '{layer}' (layers: {known})")]
    UnknownLayer {
        /// The network.
        network: String,
        /// The name asked for.
        layer: String,
        /// The names it has, comma-separated.
        known: String,
    },
    /// An activation given to [`Model::forward_from`] whose shape is not the one the network
    /// gives that layer.
    #[error(
        "the activation given for {layer} has shape {found:?}, but this network's {layer} is [batch, {}, {}, {}] (for an input of {input}x{input})",
        expected[0], expected[1], expected[2]
    )]
    ActivationShape {
        /// The layer.
        layer: String,
        /// Its `[C, H, W]` at the network's own input size.
        expected: [usize; 3],
        /// The shape given.
        found: [usize; 4],
        /// The input side the expectation is for.
        input: usize,
    },
    /// A tensor's values could not be read back as `f32` (see [`host_values`]); the text is
    /// the tensor reader's description of the failure.
    #[error("{0}")]
    HostValues(String),
}

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
    /// A tensor's values could not be read back as `f32` (see [`host_values`]); the text is
    /// the tensor reader's description of the failure.
    #[error("{0}")]
    HostValues(String),
}

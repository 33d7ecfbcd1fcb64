//! alexvgg: AlexNet and VGG on burn, with the original weights.
//!
//! The workspace is split the way the work is:
//! - [`models`] (crate `alexvgg-models`): pure burn modules and shape arithmetic;
//! - [`import`] (crate `alexvgg-import`): weight files, key remapping, conversion;
//! - this crate: device selection ([`device`]), the per-layer and parameter tables ([`table`]),
//!   benchmarks ([`bench`]) and the `alexvgg` command line.

#![warn(missing_docs)]

pub use alexvgg_cpu as cpu;
pub use alexvgg_import as import;
pub use alexvgg_models as models;

pub mod bench;
pub mod classify;
pub mod device;
pub mod finetune;
pub mod labels;
pub mod preprocess;
pub mod runner;
pub mod table;
pub mod weights;

use alexvgg_models::{AlexNetVariant, Architecture, ModelError, VggDepth};

/// Resolves the CLI's `--model` (and `--variant`, `--batch-norm`) into an [`Architecture`].
///
/// `model` is `alexnet`, `vgg11`, `vgg13`, `vgg16`, `vgg19`, or a full name such as
/// `alexnet-caffe` or `vgg16_bn`.
///
/// # Errors
/// [`ModelError::UnknownArchitecture`] / [`ModelError::UnknownVariant`] naming what was given.
pub fn architecture(
    model: &str,
    variant: Option<&str>,
    batch_norm: bool,
) -> Result<Architecture, ModelError> {
    let model = model.to_ascii_lowercase();
    match model.as_str() {
        "alexnet" => {
            let v: AlexNetVariant = variant.unwrap_or("tf").parse()?;
            Ok(Architecture::AlexNet(v))
        }
        name => {
            if let Some(depth) = VggDepth::ALL.into_iter().find(|d| d.name() == name) {
                return Ok(Architecture::Vgg { depth, batch_norm });
            }
            Architecture::parse(name)
        }
    }
}

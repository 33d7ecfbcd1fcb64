//! Weight importers for the AlexNet and VGG modules of `alexvgg-models`.
//!
//! Readers turn a file into a [`TensorMap`] (names and shapes as the file has them);
//! [`remap`] is the one place where names and layouts become ours; [`apply::load_module`]
//! puts the result into a module, all or nothing, listing every missing or unexpected key.

#![warn(missing_docs)]

pub mod apply;
pub mod blocks;
pub mod caffe;
pub mod error;
pub mod format;
pub mod native;
pub mod npy;
pub mod pickle;
pub mod pth;
pub mod remap;
pub mod safetensors;
pub mod tensor;

pub use apply::{check_fits, load_module};
pub use error::ImportError;
pub use format::{Format, convert, detect, infer_shape, load_model, read_for, read_tensors};
pub use native::{
    Metadata, ModulePath, module_tensors, param_shapes, raw_param_shapes, read_burnpack,
    read_burnpack_with_metadata, write_burnpack, write_tensors, write_tensors_with,
};
pub use npy::{read_npy, read_npz};
pub use pth::read_pth;
pub use remap::{Target, from_tf, from_torch, guess_network, param_layers, tf_name};
pub use safetensors::{parse_safetensors, read_safetensors};
pub use tensor::{RawTensor, TensorMap};

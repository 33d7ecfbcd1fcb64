//! Weight importers for the AlexNet and VGG modules of `alexvgg-models`.
//!
//! Readers turn a file into a [`TensorMap`] (names and shapes as the file has them);
//! [`from_tf`] and [`from_torch`] are the one place where names and layouts become ours;
//! [`load_module`] puts the result into a module, all or nothing, listing every missing or
//! unexpected key.
//!
//! # Public API
//!
//! - One call: [`load_model`] (any format into a fresh network), [`convert`] (any format into
//!   a burnpack), [`read_for`] (tensors under our module paths), [`read_tensors`] (tensors as
//!   the file names them), [`detect`] and [`Format`], [`infer_shape`], [`check_finite`].
//! - Readers: [`read_safetensors`] / [`parse_safetensors`], [`read_npy`], [`read_npz`] (and
//!   the [`numpy`] module's parsers), [`read_pth`], [`read_caffemodel`] /
//!   [`parse_caffemodel`], [`read_burnpack`] / [`read_burnpack_with_metadata`] /
//!   [`read_burnpack_metadata`].
//! - Checkpoints: [`checkpoint_checksum`], [`verify_checksum`], [`Checksum`] (the SHA-256 that
//!   fine-tuning stores in a checkpoint's metadata; [`read_burnpack`] verifies it).
//! - Mapping: [`Target`], [`from_tf`], [`from_torch`], [`guess_network`], [`param_layers`],
//!   [`tf_name`].
//! - Modules: [`load_module`], [`check_fits`], [`module_tensors`], [`param_shapes`],
//!   [`raw_param_shapes`], [`ModulePath`].
//! - Writing: [`write_burnpack`], [`write_tensors`], [`write_tensors_with`], [`Metadata`],
//!   and [`native::describe_metadata`].
//! - Values: [`RawTensor`], [`TensorMap`], [`SourceDtype`], [`FloatKind`]; errors:
//!   [`ImportError`] (and [`escape`], which every message applies to names from files).

#![warn(missing_docs)]

mod apply;
mod blocks;
mod caffe;
mod error;
mod format;
pub mod native;
pub mod numpy;
mod pth;
mod remap;
mod safetensors;
mod tensor;
mod write;

pub use alexvgg_models::ModulePath;
pub use apply::{check_fits, load_module};
pub use caffe::{parse_caffemodel, read_caffemodel};
pub use error::{ImportError, escape};
pub use format::{
    Format, check_finite, convert, detect, infer_shape, load_model, read_for, read_tensors,
};
pub use native::{
    Checksum, Metadata, checkpoint_checksum, module_tensors, param_shapes, raw_param_shapes,
    read_burnpack, read_burnpack_metadata, read_burnpack_with_metadata, verify_checksum,
    write_burnpack, write_tensors, write_tensors_with,
};
pub use numpy::{read_npy, read_npz};
pub use pth::read_pth;
pub use remap::{NetworkFamily, Target, from_tf, from_torch, guess_network, param_layers, tf_name};
pub use safetensors::{parse_safetensors, read_safetensors};
pub use tensor::{FloatKind, RawTensor, SourceDtype, TensorMap};
pub use write::{write_bytes_atomic, write_npy, write_safetensors_f32};

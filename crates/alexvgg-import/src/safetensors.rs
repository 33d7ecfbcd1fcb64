//! safetensors files (PyTorch-style key names), read with the `safetensors` crate.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::tensor::{FloatKind, decode_le};
use crate::{ImportError, RawTensor, SourceDtype, TensorMap};

/// Reads every floating-point tensor of a safetensors file as f32.
///
/// # Errors
/// I/O errors, a malformed header or data section, and non-float tensors, each naming the file
/// and, where it applies, the tensor.
pub fn read_safetensors(path: &Path) -> Result<TensorMap, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::io(path, e))?;
    parse_safetensors(&bytes, &path.display().to_string())
}

/// Parses safetensors bytes; `what` names the source in errors.
///
/// # Errors
/// See [`read_safetensors`].
pub fn parse_safetensors(bytes: &[u8], what: &str) -> Result<TensorMap, ImportError> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| ImportError::corrupt(what, e.to_string()))?;
    let mut map = TensorMap::new();
    for (name, view) in file.tensors() {
        let raw = view.data();
        let kind = match view.dtype() {
            Dtype::F32 => FloatKind::F32,
            Dtype::F16 => FloatKind::F16,
            Dtype::BF16 => FloatKind::BF16,
            Dtype::F64 => FloatKind::F64,
            other => {
                return Err(ImportError::Unsupported {
                    what: format!("{what}: tensor '{name}'"),
                    reason: format!("dtype {other:?} (weights must be floating point)"),
                });
            }
        };
        let data = decode_le(raw, kind);
        let tensor = RawTensor::new(
            &format!("{what}: tensor '{name}'"),
            view.shape().to_vec(),
            data,
        )?
        .stored_as(SourceDtype::Little(kind));
        map.insert(name, tensor);
    }
    Ok(map)
}

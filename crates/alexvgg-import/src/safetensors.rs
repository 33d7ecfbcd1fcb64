//! safetensors files (PyTorch-style key names), read with the `safetensors` crate.

use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::{ImportError, RawTensor, TensorMap};

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
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            other => {
                return Err(ImportError::Unsupported {
                    what: format!("{what}: tensor '{name}'"),
                    reason: format!("dtype {other:?} (weights must be floating point)"),
                });
            }
        };
        let tensor = RawTensor::new(
            &format!("{what}: tensor '{name}'"),
            view.shape().to_vec(),
            data,
        )?;
        map.insert(name, tensor);
    }
    Ok(map)
}

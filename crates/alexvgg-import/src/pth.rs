//! PyTorch checkpoints (`torch.save` state dicts, zip or legacy format: torchvision's
//! `alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth`, ...), read with burn's `pytorch-reader`,
//! which parses the pickle without executing it.

use std::path::Path;

use pytorch_reader::{DType, PytorchReader};

use crate::tensor::{FloatKind, decode_le};
use crate::{ImportError, RawTensor, SourceDtype, TensorMap};

/// Reads every floating-point tensor of a PyTorch checkpoint as f32. A `module.` prefix
/// (DataParallel) and a top-level `state_dict` entry are unwrapped; BatchNorm's integer
/// `num_batches_tracked` counters are skipped.
///
/// # Errors
/// [`ImportError::Corrupt`] naming the file for unreadable checkpoints,
/// [`ImportError::NotFloat`] naming any other tensor that is not floating point.
pub fn read_pth(path: &Path) -> Result<TensorMap, ImportError> {
    let what = path.display().to_string();
    let reader = match PytorchReader::new(path) {
        Ok(r) if r.keys().iter().all(|k| k.starts_with("state_dict.")) && !r.is_empty() => {
            PytorchReader::with_top_level_key(path, "state_dict")
        }
        other => other,
    }
    .map_err(|e| ImportError::corrupt(&what, e.to_string()))?;
    let mut map = TensorMap::new();
    for (name, t) in reader.into_tensors() {
        let at = format!("{what}: tensor '{name}'");
        let kind = match t.dtype() {
            DType::F32 => FloatKind::F32,
            DType::F16 => FloatKind::F16,
            DType::BF16 => FloatKind::BF16,
            DType::F64 => FloatKind::F64,
            // BatchNorm's step counter, the one integer buffer of a weight checkpoint
            _ if name.ends_with("num_batches_tracked") => continue,
            other => {
                return Err(ImportError::NotFloat {
                    file: what,
                    tensor: name,
                    dtype: dtype_name(other).to_string(),
                });
            }
        };
        let bytes = t
            .read()
            .map_err(|e| ImportError::corrupt(&at, e.to_string()))?;
        let data = decode_le(&bytes, kind);
        let key = name.strip_prefix("module.").unwrap_or(&name).to_string();
        map.insert(
            key,
            RawTensor::new(&at, t.shape().to_vec(), data)?.stored_as(SourceDtype::Little(kind)),
        );
    }
    Ok(map)
}

/// numpy's name of a PyTorch element type.
fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "float64",
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::I16 => "int16",
        DType::I8 => "int8",
        DType::U64 => "uint64",
        DType::U32 => "uint32",
        DType::U16 => "uint16",
        DType::U8 => "uint8",
        DType::Bool => "bool",
    }
}

//! PyTorch checkpoints (`torch.save` state dicts, zip or legacy format: torchvision's
//! `alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth`, ...), read with burn's `pytorch-reader`,
//! which parses the pickle without executing it.

use std::path::Path;

use pytorch_reader::{DType, PytorchReader};

use crate::tensor::{FloatKind, decode_le};
use crate::{ImportError, RawTensor, SourceDtype, TensorMap};

/// Reads every floating-point tensor of a PyTorch checkpoint as f32. A `module.` prefix
/// (DataParallel) and a top-level `state_dict` entry are unwrapped; integer tensors
/// (`num_batches_tracked`) are skipped.
///
/// # Errors
/// [`ImportError::Corrupt`] naming the file for unreadable checkpoints.
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
        let bytes = t
            .read()
            .map_err(|e| ImportError::corrupt(&at, e.to_string()))?;
        let kind = match t.dtype() {
            DType::F32 => FloatKind::F32,
            DType::F16 => FloatKind::F16,
            DType::BF16 => FloatKind::BF16,
            DType::F64 => FloatKind::F64,
            _ => continue, // integer buffers such as BatchNorm's num_batches_tracked
        };
        let data = decode_le(&bytes, kind);
        let key = name.strip_prefix("module.").unwrap_or(&name).to_string();
        map.insert(
            key,
            RawTensor::new(&at, t.shape().to_vec(), data)?.stored_as(SourceDtype::Little(kind)),
        );
    }
    Ok(map)
}

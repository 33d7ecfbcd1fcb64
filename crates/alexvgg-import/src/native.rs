//! burn's native burnpack format, written once by `alexvgg convert` and read back fast.
//!
//! Tensors are stored under our module paths in our layouts, with the architecture and network
//! shape in the pack's metadata, so a converted file loads through the same all-or-nothing
//! [`load_module`](crate::load_module) as every other format.

use std::path::Path;

use alexvgg_models::{Architecture, ModulePath, NetworkShape, host_values};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn_pack::{Bytes, DType, Reader, Writer};
use sha2::{Digest, Sha256};

use crate::{ImportError, RawTensor, SourceDtype, TensorMap};

/// Metadata key of the architecture name.
pub const META_ARCH: &str = "alexvgg.architecture";
/// Metadata key of the class count.
pub const META_CLASSES: &str = "alexvgg.num_classes";
/// Metadata key of fc6/fc7 width.
pub const META_HIDDEN: &str = "alexvgg.hidden";
/// Metadata key of the channel divisor.
pub const META_WIDTH: &str = "alexvgg.width_divisor";
/// Metadata key of a fine-tuning checkpoint's SHA-256 ([`checkpoint_checksum`]).
pub const META_CHECKSUM: &str = "alexvgg.finetune.sha256";
/// Prefix of the metadata keys of fine-tuning checkpoints, which [`checkpoint_checksum`]
/// covers.
pub const META_FINETUNE_PREFIX: &str = "alexvgg.finetune.";

/// Visits every float parameter (and BatchNorm running statistic) with its module path,
/// reading its values when `values` is set; the first value that cannot be read is kept in
/// `error` and ends the reading.
struct Collect<F> {
    path: ModulePath,
    f: F,
    values: bool,
    error: Option<ImportError>,
}

impl<F> Collect<F> {
    fn new(f: F, values: bool) -> Self {
        Self {
            path: ModulePath::default(),
            f,
            values,
            error: None,
        }
    }
}

impl<F: FnMut(String, Vec<usize>, Option<Vec<f32>>)> ModuleVisitor for Collect<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.error.is_some() {
            return;
        }
        let key = self.path.key();
        let shape = param.lazy_shape().to_vec();
        let values = if self.values {
            match host_values(param.val()) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error = Some(ImportError::Values {
                        key,
                        reason: e.to_string(),
                    });
                    return;
                }
            }
        } else {
            None
        };
        (self.f)(key, shape, values);
    }
}

/// Every parameter's canonical path and shape (column blocks of fully connected layers joined),
/// in module order, without reading values.
pub fn param_shapes<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    crate::blocks::merge_shapes(raw_param_shapes(module))
}

/// Every parameter's module path and shape as the module holds them (blocks separate).
pub fn raw_param_shapes<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    module.visit(&mut Collect::new(|k, s, _| out.push((k, s)), false));
    out
}

/// Every parameter's values, keyed by canonical module path (fully connected blocks joined).
///
/// # Errors
/// [`ImportError::Values`] naming the first parameter whose values cannot be read back.
pub fn module_tensors<M: Module>(module: &M) -> Result<TensorMap, ImportError> {
    Ok(crate::blocks::merge(raw_module_tensors(module)?))
}

fn raw_module_tensors<M: Module>(module: &M) -> Result<TensorMap, ImportError> {
    let mut out = TensorMap::new();
    let mut v = Collect::new(
        |k, shape, data: Option<Vec<f32>>| {
            out.insert(
                k,
                RawTensor {
                    shape,
                    // always `Some`: this visitor reads values
                    data: data.unwrap_or_default(),
                    source_dtype: SourceDtype::default(),
                },
            );
        },
        true,
    );
    module.visit(&mut v);
    match v.error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Writes `module` as a burnpack file with its architecture and shape in the metadata.
///
/// # Errors
/// [`ImportError::Values`] when a parameter cannot be read back, [`ImportError::Io`] when
/// writing or renaming fails.
pub fn write_burnpack<M: Module>(
    module: &M,
    arch: &Architecture,
    shape: &NetworkShape,
    path: &Path,
) -> Result<(), ImportError> {
    write_tensors(module_tensors(module)?, arch, shape, path)
}

/// Writes canonical tensors (module paths, our layouts) as a burnpack file.
///
/// The values are handed to the writer without a copy, and the pack is written to a temporary
/// file beside `path` and renamed into place, so a failure never leaves a partial file under
/// the final name.
///
/// # Errors
/// [`ImportError::Io`] when writing or renaming fails.
pub fn write_tensors(
    tensors: TensorMap,
    arch: &Architecture,
    shape: &NetworkShape,
    path: &Path,
) -> Result<(), ImportError> {
    write_tensors_with(tensors, arch, shape, &Metadata::new(), path)
}

/// Extra metadata of a burnpack (key to value), beside the architecture and shape.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// [`write_tensors`] with extra metadata (fine-tuning checkpoints record their progress there, so
/// that the model and its progress are committed by one rename).
///
/// # Errors
/// [`ImportError::Io`] when writing or renaming fails.
pub fn write_tensors_with(
    tensors: TensorMap,
    arch: &Architecture,
    shape: &NetworkShape,
    extra: &Metadata,
    path: &Path,
) -> Result<(), ImportError> {
    let tensors = tensors
        .into_iter()
        .map(|(name, t)| {
            burn_pack::Tensor::new(name, DType::F32, t.shape, None, Bytes::from_elems(t.data))
        })
        .collect();
    let mut writer = Writer::new(tensors);
    for (k, v) in extra {
        writer = writer.with_metadata(k, v);
    }
    let writer = writer
        .with_metadata(META_ARCH, &arch.name())
        .with_metadata(META_CLASSES, &shape.num_classes.to_string())
        .with_metadata(META_HIDDEN, &shape.hidden.to_string())
        .with_metadata(META_WIDTH, &shape.width_divisor.to_string())
        .auto_extension(false)
        .overwrite(true);
    let tmp = path.with_extension("partial");
    writer
        .write_to_file(&tmp)
        .map_err(|e| ImportError::io(&tmp, std::io::Error::other(e.to_string())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ImportError::io(path, e)
    })
}

/// Reads a burnpack written by [`write_burnpack`]: architecture, shape and tensors. A pack
/// whose metadata holds a checksum (a fine-tuning checkpoint, [`META_CHECKSUM`]) is verified
/// against it.
///
/// # Errors
/// [`ImportError::Corrupt`] for unreadable packs, and for checkpoints whose tensors or
/// metadata no longer match their checksum.
pub fn read_burnpack(
    path: &Path,
) -> Result<(Option<Architecture>, Option<NetworkShape>, TensorMap), ImportError> {
    let (meta, map) = read_burnpack_with_metadata(path)?;
    if verify_checksum(&meta, &map) == Checksum::Mismatch {
        return Err(ImportError::corrupt(
            path.display().to_string(),
            "checksum mismatch: its tensors or metadata changed after it was written \
             (a damaged disk or copy, or an edit); refusing to use it",
        ));
    }
    let (arch, shape) = describe_metadata(&meta);
    Ok((arch, shape, map))
}

/// Reads only the metadata of a burnpack (its header), not its tensors.
///
/// # Errors
/// [`ImportError::Corrupt`] for unreadable packs.
pub fn read_burnpack_metadata(path: &Path) -> Result<Metadata, ImportError> {
    let what = path.display().to_string();
    let reader =
        Reader::from_file_exact(path).map_err(|e| ImportError::corrupt(&what, e.to_string()))?;
    Ok(reader.metadata().clone())
}

/// The SHA-256 (lowercase hex) that a fine-tuning checkpoint's metadata stores under
/// [`META_CHECKSUM`]: over every [`META_FINETUNE_PREFIX`] metadata entry but the checksum
/// itself (key, NUL, value, NUL, in key order), then every tensor in name order (name, NUL,
/// the number of dimensions and each dimension as little-endian u64, the values as
/// little-endian f32).
pub fn checkpoint_checksum(meta: &Metadata, tensors: &TensorMap) -> String {
    let mut h = Sha256::new();
    for (k, v) in meta {
        if k.starts_with(META_FINETUNE_PREFIX) && k != META_CHECKSUM {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
    }
    let mut buf = Vec::with_capacity(64 << 10);
    for (name, t) in tensors {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((t.shape.len() as u64).to_le_bytes());
        for &d in &t.shape {
            h.update((d as u64).to_le_bytes());
        }
        for chunk in t.data.chunks(16 << 10) {
            buf.clear();
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            h.update(&buf);
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a burnpack's stored checksum says of its content ([`verify_checksum`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// The metadata holds no checksum (not a fine-tuning checkpoint, or one of a version that
    /// wrote none).
    Absent,
    /// The content matches the stored checksum.
    Matches,
    /// The content differs from what was written: the file is corrupt.
    Mismatch,
}

/// Checks tensors and metadata read from a burnpack against the checksum stored in its
/// metadata ([`META_CHECKSUM`], computed by [`checkpoint_checksum`]).
pub fn verify_checksum(meta: &Metadata, tensors: &TensorMap) -> Checksum {
    match meta.get(META_CHECKSUM) {
        None => Checksum::Absent,
        Some(sum) if *sum == checkpoint_checksum(meta, tensors) => Checksum::Matches,
        Some(_) => Checksum::Mismatch,
    }
}

/// The architecture and shape recorded in a burnpack's metadata, where present and valid.
pub fn describe_metadata(meta: &Metadata) -> (Option<Architecture>, Option<NetworkShape>) {
    let arch = meta
        .get(META_ARCH)
        .and_then(|a| Architecture::parse(a).ok());
    let num = |k: &str| meta.get(k).and_then(|v| v.parse::<usize>().ok());
    let shape = match (num(META_CLASSES), num(META_HIDDEN), num(META_WIDTH)) {
        (Some(num_classes), Some(hidden), Some(width_divisor)) => Some(NetworkShape {
            num_classes,
            hidden,
            width_divisor,
        }),
        _ => None,
    };
    (arch, shape)
}

/// Reads every tensor of a burnpack with all of its metadata.
///
/// # Errors
/// [`ImportError::Corrupt`] for unreadable packs, [`ImportError::Unsupported`] for tensors that
/// are not float32.
pub fn read_burnpack_with_metadata(path: &Path) -> Result<(Metadata, TensorMap), ImportError> {
    let what = path.display().to_string();
    let reader =
        Reader::from_file_exact(path).map_err(|e| ImportError::corrupt(&what, e.to_string()))?;
    let meta = reader.metadata().clone();
    let mut map = TensorMap::new();
    for t in reader
        .into_tensors()
        .map_err(|e| ImportError::corrupt(&what, e.to_string()))?
    {
        let (name, dtype, shape, _, bytes) = t
            .into_parts()
            .map_err(|e| ImportError::corrupt(&what, e.to_string()))?;
        if dtype != DType::F32 {
            return Err(ImportError::Unsupported {
                what: format!("{what}: tensor '{name}'"),
                reason: format!("dtype {dtype:?}"),
            });
        }
        // Read straight from the file window, before anything materializes it (even
        // `Bytes::try_into_vec` reads the window into an intermediate buffer first).
        let data = read_window(&bytes).ok_or_else(|| {
            ImportError::corrupt(&what, format!("tensor '{name}' could not be read"))
        })?;
        let t = RawTensor::new(&format!("{what}: tensor '{name}'"), shape.to_vec(), data)?;
        map.insert(name, t);
    }
    Ok((meta, map))
}

/// The f32 values of a burnpack tensor window, read from the file straight into their final
/// buffer (a file window's own access path reads it into an intermediate buffer first: one more
/// fresh allocation and copy, a third of a VGG16 load). `None` when the read fails.
fn read_window(bytes: &Bytes) -> Option<Vec<f32>> {
    let n = bytes.len() / 4;
    let mut out = Bytes::from_elems(vec![0f32; n]);
    // burn-pack's file read unwraps its I/O errors; keep them errors here.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bytes.copy_into(&mut out))).ok()?;
    let mut v = out.try_into_vec::<f32>().ok()?;
    if cfg!(target_endian = "big") {
        // burnpack is little-endian
        v.iter_mut()
            .for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
    }
    Some(v)
}

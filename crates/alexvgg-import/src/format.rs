//! Format detection from content (never from the file name) and the one-call readers.

use std::io::Read;
use std::path::Path;

use alexvgg_models::{Architecture, Model, NetworkShape, names, params};
use burn::tensor::Device;

use crate::{ImportError, TensorMap, from_tf, from_torch};

/// Weight file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// safetensors (PyTorch names and layouts).
    Safetensors,
    /// numpy `.npy` (TensorFlow layouts: `bvlc_alexnet.npy`).
    Npy,
    /// numpy `.npz` (TensorFlow layouts: `vgg16_weights.npz`).
    Npz,
    /// burn's native burnpack (written by `alexvgg convert`).
    Burnpack,
    /// A PyTorch checkpoint (`torch.save`, zip or legacy pickle format).
    Pytorch,
    /// A Caffe `.caffemodel` (protobuf `NetParameter`, V1 or V2 layers).
    Caffemodel,
}

impl Format {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Burnpack => "burnpack",
            Format::Pytorch => "pytorch",
            Format::Caffemodel => "caffemodel",
        }
    }
}

/// Detects the format of `path` from its first bytes (and, for zips, its member names).
///
/// # Errors
/// I/O errors, and [`ImportError::Unsupported`] for content no reader understands.
pub fn detect(path: &Path) -> Result<Format, ImportError> {
    let mut head = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
    let n = read_up_to(&mut file, &mut head).map_err(|e| ImportError::io(path, e))?;
    let head = &head[..n];
    let what = path.display().to_string();
    if head.starts_with(b"\x93NUMPY") {
        return Ok(Format::Npy);
    }
    if head.len() >= 4 && u32::from_le_bytes([head[0], head[1], head[2], head[3]]) == 0x4255_524E {
        return Ok(Format::Burnpack);
    }
    if head.starts_with(b"PK\x03\x04") {
        let file = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
        let zip = zip::ZipArchive::new(std::io::BufReader::new(file))
            .map_err(|e| ImportError::corrupt(&what, e.to_string()))?;
        let names: Vec<&str> = zip.file_names().collect();
        if names.iter().any(|n| n.ends_with("data.pkl")) {
            return Ok(Format::Pytorch);
        }
        if names.iter().all(|n| n.ends_with(".npy")) {
            return Ok(Format::Npz);
        }
        return Err(ImportError::Unsupported {
            what,
            reason: "zip archive that is neither .npz nor a PyTorch checkpoint".into(),
        });
    }
    // legacy torch.save: a protocol-2 pickle of the magic number 0x1950a86a20f9469cfc6c
    if head.starts_with(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19") {
        return Ok(Format::Pytorch);
    }
    let size = std::fs::metadata(path)
        .map_err(|e| ImportError::io(path, e))?
        .len();
    if head.len() >= 9
        && head[8] == b'{'
        && u64::from_le_bytes(head[..8].try_into().unwrap_or([0xff; 8])) < size
    {
        return Ok(Format::Safetensors);
    }
    // protobuf NetParameter: starts with field 1 (name), 2 (V1 layers) or 100 (layer)
    if matches!(head, [0x0a, ..] | [0x12, ..] | [0xa2, 0x06, ..]) {
        return Ok(Format::Caffemodel);
    }
    Err(ImportError::Unsupported {
        what,
        reason:
            "file format (expected safetensors, .npy, .npz, PyTorch .pth, .caffemodel or burnpack)"
                .into(),
    })
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match file.read(&mut buf[total..])? {
            0 => break,
            n => total += n,
        }
    }
    Ok(total)
}

/// Reads every tensor of a weight file with the names and layouts the file uses.
///
/// # Errors
/// Detection and reader errors; [`ImportError::Unsupported`] for burnpack and PyTorch zips
/// (burnpack files load straight into a module).
pub fn read_tensors(path: &Path) -> Result<(Format, TensorMap), ImportError> {
    let format = detect(path)?;
    let map = match format {
        Format::Safetensors => crate::read_safetensors(path)?,
        Format::Npy => crate::read_npy(path)?,
        Format::Npz => crate::read_npz(path)?,
        Format::Burnpack => crate::read_burnpack(path)?.2,
        Format::Pytorch => crate::read_pth(path)?,
        Format::Caffemodel => crate::read_caffemodel(path)?,
    };
    Ok((format, map))
}

/// Refuses tensors holding NaN or infinite values: a weight file with them is damaged, and
/// would give NaN outputs on one engine and plausible ones on another (ReLU and max-pooling
/// drop NaNs). Names the first such tensor with its count of bad values.
///
/// # Errors
/// [`ImportError::NonFinite`] naming `file` and the tensor.
pub fn check_finite(map: &TensorMap, file: &str) -> Result<(), ImportError> {
    for (name, t) in map {
        // a branch-free pass per block (vectorised), then the details only for a bad tensor
        let bad = |c: &[f32]| c.iter().fold(false, |acc, v| acc | !v.is_finite());
        if !t.data.chunks(4096).any(bad) {
            continue;
        }
        let index = t.data.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(ImportError::NonFinite {
            file: file.to_string(),
            tensor: name.clone(),
            count: t.data.iter().filter(|v| !v.is_finite()).count(),
            first: t.data.get(index).copied().unwrap_or(f32::NAN),
            index,
        });
    }
    Ok(())
}

/// Reads a weight file for `arch`, with keys already our burn module paths and layouts ours.
/// Every value must be finite (see [`check_finite`]; checked under the file's own names).
///
/// # Errors
/// Reader errors, [`ImportError::NonFinite`], [`ImportError::WrongNetwork`] and
/// [`ImportError::Mismatch`].
pub fn read_for(path: &Path, arch: &Architecture) -> Result<(Format, TensorMap), ImportError> {
    let what = path.display().to_string();
    if detect(path)? == Format::Burnpack {
        // Converted files already hold our paths and layouts; check they are for this network.
        let (stored, _, map) = crate::read_burnpack(path)?;
        check_finite(&map, &what)?;
        if let Some(stored) = stored.filter(|s| s != arch) {
            return Err(ImportError::WrongNetwork {
                file: what,
                found: stored.describe(),
                wanted: arch.describe(),
            });
        }
        return Ok((Format::Burnpack, map));
    }
    let (format, map) = read_tensors(path)?;
    check_finite(&map, &what)?;
    let mapped = match format {
        Format::Npy | Format::Npz => from_tf(map, arch, &what)?,
        _ => from_torch(map, arch, &what)?,
    };
    Ok((format, mapped))
}

/// Reads a weight file of any supported format into a freshly built `arch` network on
/// `device`, inferring classes, hidden width and channel divisor from the file.
///
/// # Errors
/// Every reader and mapping error; the model is only returned when every tensor fitted.
pub fn load_model(
    path: &Path,
    arch: &Architecture,
    device: &Device,
) -> Result<(Model, NetworkShape, Format), ImportError> {
    let (format, map, shape, model) = open(path, arch, device)?;
    let model = crate::load_module(model, map, &path.display().to_string(), &arch.describe())?;
    Ok((model, shape, format))
}

/// Reads `path` for `arch` and builds a matching network (parameters lazy, not yet allocated):
/// the common first half of [`load_model`] and [`convert`].
fn open(
    path: &Path,
    arch: &Architecture,
    device: &Device,
) -> Result<(Format, TensorMap, NetworkShape, Model), ImportError> {
    let what = path.display().to_string();
    let (format, map) = read_for(path, arch)?;
    let shape = infer_shape(arch, &map, &what)?;
    let model = arch
        .init(&shape, device)
        .map_err(|e| ImportError::Mismatch {
            file: what.clone(),
            model: arch.describe(),
            details: format!("\n  {e}"),
        })?;
    Ok((format, map, shape, model))
}

/// Infers classes, hidden width and channel divisor from mapped tensors, so that fine-tuned
/// heads and reduced-width test networks load without extra flags.
///
/// # Errors
/// [`ImportError::Mismatch`] when the first convolution or the fully connected layers are
/// missing, their channels do not divide the original's, or fc7 or fc8 has no outputs (a
/// classifier of 0 classes cannot run).
pub fn infer_shape(
    arch: &Architecture,
    map: &TensorMap,
    file: &str,
) -> Result<NetworkShape, ImportError> {
    let conv1 = format!("{}.weight", params::layers(arch)[0].params);
    let [_, fc7, fc8] = names::FC.map(|fc| format!("{fc}.weight"));
    let dim = |key: &str, axis: usize| map.get(key).and_then(|t| t.shape.get(axis).copied());
    let fail = |what: &str| ImportError::Mismatch {
        file: file.to_string(),
        model: arch.describe(),
        details: format!("\n  {what}"),
    };
    let width_divisor = dim(&conv1, 0)
        .and_then(|c1| arch.width_divisor(c1))
        .ok_or_else(|| fail("first convolution missing or of unexpected width"))?;
    // linear weights are `[in, out]`
    let outputs = |key: &str, role: &str| match map.get(key).map(|t| &t.shape[..]) {
        None => Err(fail(&format!("{key} missing"))),
        Some([_, 0]) => Err(fail(&format!(
            "{key} has 0 outputs; {role} needs at least one"
        ))),
        Some([_, n]) => Ok(*n),
        Some(other) => Err(fail(&format!(
            "{key} has shape {other:?}, expected [inputs, outputs]"
        ))),
    };
    Ok(NetworkShape {
        num_classes: outputs(&fc8, "the classifier (fc8)")?,
        hidden: outputs(&fc7, "fc7")?,
        width_divisor,
    })
}

/// Converts a weight file of any supported format for `arch` into a burnpack file, checking
/// first that every tensor fits the network (built on `device` with lazy, never-allocated
/// parameters). The tensors go straight from the reader to the writer.
///
/// # Errors
/// Every reader, mapping and write error.
pub fn convert(
    input: &Path,
    arch: &Architecture,
    output: &Path,
    device: &Device,
) -> Result<(Format, NetworkShape), ImportError> {
    let (format, map, shape, model) = open(input, arch, device)?;
    let map =
        crate::apply::check_fits(&model, map, &input.display().to_string(), &arch.describe())?;
    drop(model);
    crate::write_tensors(map, arch, &shape, output)?;
    Ok((format, shape))
}

//! Writing f32 arrays for other tools: numpy `.npy` (one array) and safetensors (named arrays),
//! each through a temporary file renamed into place, so a failed or interrupted write never
//! leaves a half-written file under the final name.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ImportError;

/// Writes `data` of `shape` as a little-endian float32 `.npy` (format 1.0, C order).
///
/// # Errors
/// [`ImportError::Io`] for file-system failures, [`ImportError::Unsupported`] for a `shape`
/// that does not hold `data.len()` values.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), ImportError> {
    check_len(path, "array", shape, data)?;
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let header_len = u16::try_from(header.len()).map_err(|_| ImportError::Unsupported {
        what: path.display().to_string(),
        reason: format!("an .npy header for shape {shape:?} is too long"),
    })?;
    write_atomic(path, |w| {
        w.write_all(b"\x93NUMPY\x01\x00")?;
        w.write_all(&header_len.to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        write_f32(w, data)
    })
}

/// Writes named float32 arrays `(name, shape, data)` as one safetensors file.
///
/// # Errors
/// As [`write_npy`]; duplicate names are refused.
pub fn write_safetensors_f32(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<(), ImportError> {
    let mut bytes = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        check_len(path, name, shape, data)?;
        if tensors.iter().filter(|(n, _, _)| n == name).count() > 1 {
            return Err(ImportError::Unsupported {
                what: path.display().to_string(),
                reason: format!("tensor '{name}' named twice"),
            });
        }
        bytes.push(
            data.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
    }
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| ImportError::Unsupported {
                    what: format!("{}: tensor '{name}'", path.display()),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let serialized = safetensors::serialize(views, None).map_err(|e| ImportError::Unsupported {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_bytes_atomic(path, &serialized)
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
///
/// # Errors
/// [`ImportError::Io`] naming `path`.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImportError> {
    write_atomic(path, |w| w.write_all(bytes))
}

fn check_len(path: &Path, name: &str, shape: &[usize], data: &[f32]) -> Result<(), ImportError> {
    let n: Option<usize> = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n == Some(data.len()) {
        Ok(())
    } else {
        Err(ImportError::Unsupported {
            what: format!("{}: {name}", path.display()),
            reason: format!("shape {shape:?} does not hold {} values", data.len()),
        })
    }
}

fn write_f32(w: &mut impl Write, data: &[f32]) -> std::io::Result<()> {
    for chunk in data.chunks(1 << 16) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&bytes)?;
    }
    Ok(())
}

/// The temporary name beside `path`: `.NAME.partial`.
fn partial(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// Writes through `.NAME.partial` and renames it to `path`; the partial file is removed on
/// any failure.
fn write_atomic(
    path: &Path,
    f: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), ImportError> {
    let tmp = partial(path);
    let result = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ImportError::io(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ImportError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips_through_our_reader() {
        let dir = std::env::temp_dir().join(format!("alexvgg-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_npy(&path, &[2, 3, 4], &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0, "numpy aligns data to 64 bytes");
        let map = crate::read_npy(&path).unwrap();
        let t = map.values().next().unwrap();
        assert_eq!(t.shape, vec![2, 3, 4]);
        assert_eq!(t.data, data);
        assert!(
            write_npy(&path, &[5], &data).is_err(),
            "shape and data disagree"
        );
        let st = dir.join("x.safetensors");
        let tensors = vec![
            ("conv5".to_string(), vec![2, 12], data.clone()),
            ("fc7".to_string(), vec![3], vec![1.0, 2.0, 3.0]),
        ];
        write_safetensors_f32(&st, &tensors).unwrap();
        let back = crate::read_safetensors(&st).unwrap();
        assert_eq!(back["conv5"].shape, vec![2, 12]);
        assert_eq!(back["fc7"].data, vec![1.0, 2.0, 3.0]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

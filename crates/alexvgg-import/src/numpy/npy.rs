//! `.npy` files: plain numeric arrays and pickled object arrays such as `bvlc_alexnet.npy`;
//! `.npz` archives of them.

use std::path::Path;

use super::dtype::{Dtype, decode_array};
use super::pickle::{Array, Value, unpickle};
use crate::{ImportError, RawTensor, TensorMap};

/// What an `.npy` file holds.
#[derive(Debug)]
pub enum NpyContent {
    /// A numeric array.
    Array(RawTensor),
    /// A pickled object array (e.g. a dict of weights).
    Object(Value),
}

/// Parses an `.npy` file's bytes (format versions 1, 2 and 3).
///
/// # Errors
/// [`ImportError::Corrupt`] for a bad magic, header or truncated data; pickle errors for object
/// arrays.
pub fn parse_npy(bytes: &[u8], what: &str) -> Result<NpyContent, ImportError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(ImportError::corrupt(what, "not an .npy file (bad magic)"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => {
            return Err(ImportError::corrupt(
                what,
                format!("unsupported .npy version {v}"),
            ));
        }
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| ImportError::corrupt(what, "truncated .npy header"))?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| ImportError::corrupt(what, "header is not text"))?;
    let descr = header_field(header, "descr")
        .ok_or_else(|| ImportError::corrupt(what, "header lacks 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = header_field(header, "fortran_order").is_some_and(|v| v == "True");
    let shape = parse_shape(header)
        .ok_or_else(|| ImportError::corrupt(what, "header has no valid 'shape'"))?;
    let dtype = Dtype::parse(descr).map_err(|e| ImportError::Unsupported {
        what: what.to_string(),
        reason: e,
    })?;
    let body = &bytes[end..];
    match dtype {
        Dtype::Object => Ok(NpyContent::Object(unpickle(body, what)?)),
        dtype => Ok(NpyContent::Array(decode_array(
            body, &dtype, shape, fortran, what,
        )?)),
    }
}

/// The text of `'key': value` in a header dict (value up to the next comma outside brackets).
fn header_field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

fn parse_shape(header: &str) -> Option<Vec<usize>> {
    let v = header_field(header, "shape")?;
    let inner = v.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn numeric(v: &Value, what: &str) -> Result<RawTensor, ImportError> {
    match v {
        Value::Array(a) => match &*a.borrow() {
            Array::Numeric(t) => Ok(t.clone()),
            _ => Err(ImportError::corrupt(what, "expected a numeric array")),
        },
        _ => Err(ImportError::corrupt(what, "expected an array")),
    }
}

/// Flattens a caffe-tensorflow weight dict into `{layer}_W` / `{layer}_b` tensors.
///
/// Accepts both layouts caffe-tensorflow produced: `layer -> [W, b]` (Guerzhoy's
/// `bvlc_alexnet.npy`) and `layer -> {'weights': W, 'biases': b}`, inside a 0-d object array.
///
/// # Errors
/// [`ImportError::Corrupt`] naming the layer when an entry has another shape.
pub fn weight_dict(value: &Value, what: &str) -> Result<TensorMap, ImportError> {
    let dict = match value {
        Value::Array(a) => match &*a.borrow() {
            Array::Object(_, items) if items.len() == 1 => items[0].clone(),
            _ => {
                return Err(ImportError::corrupt(
                    what,
                    "expected a 0-d object array holding a dict",
                ));
            }
        },
        other => other.clone(),
    };
    let Value::Dict(entries) = dict else {
        return Err(ImportError::corrupt(
            what,
            "pickled object is not a dict of layers",
        ));
    };
    let mut map = TensorMap::new();
    for (k, v) in entries.borrow().iter() {
        let layer =
            key_text(k).ok_or_else(|| ImportError::corrupt(what, "dict key is not a string"))?;
        let at = format!("{what}: layer '{layer}'");
        let (w, b) = match v {
            Value::List(l) => {
                let l = l.borrow();
                match &l[..] {
                    [w, b] => (numeric(w, &at)?, numeric(b, &at)?),
                    _ => {
                        return Err(ImportError::corrupt(
                            &at,
                            format!("expected [W, b], found {} items", l.len()),
                        ));
                    }
                }
            }
            Value::Tuple(l) => match &l[..] {
                [w, b] => (numeric(w, &at)?, numeric(b, &at)?),
                _ => {
                    return Err(ImportError::corrupt(
                        &at,
                        format!("expected (W, b), found {} items", l.len()),
                    ));
                }
            },
            Value::Dict(d) => {
                let d = d.borrow();
                let get = |name: &str| {
                    d.iter()
                        .find(|(k, _)| key_text(k).as_deref() == Some(name))
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| ImportError::corrupt(&at, format!("missing '{name}'")))
                };
                (
                    numeric(&get("weights")?, &at)?,
                    numeric(&get("biases")?, &at)?,
                )
            }
            _ => {
                return Err(ImportError::corrupt(
                    &at,
                    "expected [W, b] or {'weights', 'biases'}",
                ));
            }
        };
        map.insert(format!("{layer}_W"), w);
        map.insert(format!("{layer}_b"), b);
    }
    Ok(map)
}

/// Reads an `.npy` file: a weight dict (object array) becomes `{layer}_W`/`{layer}_b` tensors;
/// a numeric array becomes one tensor named after the file stem.
///
/// # Errors
/// I/O, format and pickle errors naming the file.
pub fn read_npy(path: &Path) -> Result<TensorMap, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::io(path, e))?;
    let what = path.display().to_string();
    match parse_npy(&bytes, &what)? {
        NpyContent::Object(v) => weight_dict(&v, &what),
        NpyContent::Array(t) => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(TensorMap::from([(stem, t)]))
        }
    }
}

/// Reads an `.npz` archive (Frossard's `vgg16_weights.npz`): one tensor per member, named
/// after the member without `.npy`.
///
/// # Errors
/// I/O, zip and member format errors naming the file and member.
pub fn read_npz(path: &Path) -> Result<TensorMap, ImportError> {
    let file = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
    npz_from(std::io::BufReader::new(file), &path.display().to_string())
}

/// Parses `.npz` bytes; `what` names the source in errors.
///
/// # Errors
/// See [`read_npz`].
pub fn parse_npz(bytes: &[u8], what: &str) -> Result<TensorMap, ImportError> {
    npz_from(std::io::Cursor::new(bytes), what)
}

fn npz_from<R: std::io::Read + std::io::Seek>(
    reader: R,
    what: &str,
) -> Result<TensorMap, ImportError> {
    let mut zip =
        zip::ZipArchive::new(reader).map_err(|e| ImportError::corrupt(what, e.to_string()))?;
    let mut map = TensorMap::new();
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| ImportError::corrupt(what, e.to_string()))?;
        let name = member.name().to_string();
        let at = format!("{what}: member '{name}'");
        let declared = member.size();
        let t = read_member(&mut member, declared, &at)?;
        map.insert(name.trim_end_matches(".npy").to_string(), t);
    }
    Ok(map)
}

/// Reads one `.npy` member of an archive. A little-endian, C-order float32 array (every array
/// of the weight files in the wild) goes straight into its final buffer, so a 411 MB fc6 costs
/// 411 MB and not twice that; other layouts are read whole and parsed.
fn read_member(
    member: &mut impl std::io::Read,
    declared: u64,
    at: &str,
) -> Result<RawTensor, ImportError> {
    let corrupt = |e: std::io::Error| ImportError::corrupt(at, e.to_string());
    let mut prefix = [0u8; 10];
    member.read_exact(&mut prefix).map_err(corrupt)?;
    if &prefix[..6] != b"\x93NUMPY" || prefix[6] != 1 {
        return Err(ImportError::corrupt(at, "not a version 1 .npy member"));
    }
    let mut header = vec![0u8; u16::from_le_bytes([prefix[8], prefix[9]]) as usize];
    member.read_exact(&mut header).map_err(corrupt)?;
    let text =
        std::str::from_utf8(&header).map_err(|_| ImportError::corrupt(at, "header is not text"))?;
    let descr =
        header_field(text, "descr").map(|d| d.trim_matches(|c| c == '\'' || c == '"').to_string());
    let fortran = header_field(text, "fortran_order").is_some_and(|v| v == "True");
    let shape =
        parse_shape(text).ok_or_else(|| ImportError::corrupt(at, "header has no valid 'shape'"))?;
    if !matches!(descr.as_deref(), Some("<f4" | "f4" | "=f4"))
        || fortran
        || cfg!(target_endian = "big")
    {
        // rebuild the member's bytes for the general parser
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&header);
        member.read_to_end(&mut bytes).map_err(corrupt)?;
        return match parse_npy(&bytes, at)? {
            NpyContent::Array(t) => Ok(t),
            NpyContent::Object(_) => Err(ImportError::Unsupported {
                what: at.to_string(),
                reason: "object array inside an .npz".into(),
            }),
        };
    }
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| ImportError::corrupt(at, "shape overflows"))?;
    if (count as u64).saturating_mul(4) > declared {
        return Err(ImportError::corrupt(
            at,
            format!(
                "array of shape {shape:?} needs {} bytes, the member holds {declared}",
                count.saturating_mul(4)
            ),
        ));
    }
    let mut data = vec![0f32; count];
    member
        .read_exact(bytemuck::cast_slice_mut(&mut data))
        .map_err(|e| {
            ImportError::corrupt(at, format!("array of shape {shape:?} is truncated: {e}"))
        })?;
    RawTensor::new(at, shape, data)
}

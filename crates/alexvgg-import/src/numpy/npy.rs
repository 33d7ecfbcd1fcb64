//! `.npy` files: plain numeric arrays and pickled object arrays such as `bvlc_alexnet.npy`;
//! `.npz` archives of them.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::dtype::{Dtype, assemble, decode_array, decode_into, item_size};
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

/// The numeric array `v`, copied out. Each array may serve one parameter only (`seen` holds
/// those already taken): a pickle that names one array for many layers (a few bytes each
/// through the memo) would otherwise multiply its memory.
fn numeric(
    v: &Value,
    what: &str,
    seen: &mut std::collections::HashSet<*const ()>,
) -> Result<RawTensor, ImportError> {
    match v {
        Value::Array(a) => {
            if !seen.insert(std::rc::Rc::as_ptr(a) as *const ()) {
                return Err(ImportError::corrupt(
                    what,
                    "array already used by another parameter (each weight is its own array)",
                ));
            }
            match &*a.borrow() {
                Array::Numeric(t) => Ok(t.clone()),
                _ => Err(ImportError::corrupt(what, "expected a numeric array")),
            }
        }
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
    let mut seen = std::collections::HashSet::new();
    for (k, v) in entries.borrow().iter() {
        let layer =
            key_text(k).ok_or_else(|| ImportError::corrupt(what, "dict key is not a string"))?;
        let at = format!("{what}: layer '{layer}'");
        if map.contains_key(&format!("{layer}_W")) {
            return Err(ImportError::corrupt(&at, "layer appears twice"));
        }
        let mut numeric = |v: &Value, at: &str| numeric(v, at, &mut seen);
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

/// Largest ratio of uncompressed to compressed size that DEFLATE can reach (258-byte matches
/// coded in about 2 bits): a member declaring more is lying about its size.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Bytes of an `.npz` member's data read at a time (a multiple of every element size).
const CHUNK: usize = 1 << 16;

/// Values of an `.npz` member reserved before its data has been seen (4 MB).
const FIRST_VALUES: usize = 1 << 20;

/// Reserves room for `more` values, as an error rather than an abort when memory runs out.
fn reserve(data: &mut Vec<f32>, more: usize, shape: &[usize], at: &str) -> Result<(), ImportError> {
    data.try_reserve_exact(more).map_err(|_| {
        ImportError::corrupt(
            at,
            format!(
                "array of shape {shape:?} needs {} bytes of memory, which cannot be allocated",
                shape.iter().fold(4usize, |a, &d| a.saturating_mul(d))
            ),
        )
    })
}

fn npz_from<R: Read + Seek>(reader: R, what: &str) -> Result<TensorMap, ImportError> {
    let corrupt = |e: zip::result::ZipError| ImportError::corrupt(what, e.to_string());
    let zip = zip::ZipArchive::new(reader).map_err(corrupt)?;
    // The zip reader keeps one entry per name (the last); a second member of the same name
    // would silently replace the first, so look at the central directory itself.
    let cd_start = zip.central_directory_start();
    let mut reader = zip.into_inner();
    if let Some(name) = duplicate_member(&mut reader, cd_start)
        .map_err(|e| ImportError::corrupt(what, e.to_string()))?
    {
        return Err(ImportError::corrupt(
            what,
            format!("member '{name}' appears twice (an .npz holds each array once)"),
        ));
    }
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| ImportError::corrupt(what, e.to_string()))?;
    let mut zip = zip::ZipArchive::new(reader).map_err(corrupt)?;
    let mut map = TensorMap::new();
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).map_err(corrupt)?;
        let name = member.name().to_string();
        let at = format!("{what}: member '{name}'");
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        if map.contains_key(&key) {
            return Err(ImportError::corrupt(
                &at,
                format!("a second member holds array '{key}' (an .npz holds each array once)"),
            ));
        }
        let declared = member.size();
        let compressed = member.compressed_size();
        let most = match member.compression() {
            zip::CompressionMethod::Stored => compressed,
            _ => compressed
                .saturating_mul(DEFLATE_MAX_RATIO)
                .saturating_add(1024),
        };
        if declared > most {
            return Err(ImportError::corrupt(
                &at,
                format!(
                    "declares {declared} bytes, more than its {compressed} compressed bytes can hold"
                ),
            ));
        }
        let t = read_member(&mut member, declared, &at)?;
        map.insert(key, t);
    }
    Ok(map)
}

/// The first name that two entries of the zip's central directory (at `cd_start`) share.
fn duplicate_member<R: Read + Seek>(
    reader: &mut R,
    cd_start: u64,
) -> std::io::Result<Option<String>> {
    reader.seek(SeekFrom::Start(cd_start))?;
    let mut reader = std::io::BufReader::new(reader);
    let mut seen = std::collections::HashSet::new();
    let mut header = [0u8; 46];
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        if header[..4] != *b"PK\x01\x02" {
            break; // end of the central directory
        }
        let field = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]) as usize;
        let mut name = vec![0u8; field(28)];
        reader.read_exact(&mut name)?;
        let skip = (field(30) + field(32)) as i64;
        reader.seek_relative(skip)?;
        if !seen.insert(name.clone()) {
            return Ok(Some(String::from_utf8_lossy(&name).into_owned()));
        }
    }
    Ok(None)
}

/// Reads one `.npy` member of an archive, never more than its header declares: the array's
/// bytes (shape x element size, within the member's declared size) are read in chunks and
/// decoded as they come, straight into the final buffer (a 411 MB fc6 costs 411 MB), and the
/// member must end there.
fn read_member(member: &mut impl Read, declared: u64, at: &str) -> Result<RawTensor, ImportError> {
    let corrupt = |e: std::io::Error| ImportError::corrupt(at, e.to_string());
    let mut prefix = [0u8; 10];
    member.read_exact(&mut prefix).map_err(corrupt)?;
    if &prefix[..6] != b"\x93NUMPY" || prefix[6] != 1 {
        return Err(ImportError::corrupt(at, "not a version 1 .npy member"));
    }
    let header_len = u16::from_le_bytes([prefix[8], prefix[9]]) as usize;
    let head_len = (prefix.len() + header_len) as u64;
    if head_len > declared {
        return Err(ImportError::corrupt(
            at,
            format!("header of {header_len} bytes does not fit in the member's {declared} bytes"),
        ));
    }
    let mut header = vec![0u8; header_len];
    member.read_exact(&mut header).map_err(corrupt)?;
    let text =
        std::str::from_utf8(&header).map_err(|_| ImportError::corrupt(at, "header is not text"))?;
    let descr = header_field(text, "descr")
        .ok_or_else(|| ImportError::corrupt(at, "header lacks 'descr'"))?
        .trim_matches(|c| c == '\'' || c == '"');
    let fortran = header_field(text, "fortran_order").is_some_and(|v| v == "True");
    let shape =
        parse_shape(text).ok_or_else(|| ImportError::corrupt(at, "header has no valid 'shape'"))?;
    let dtype = Dtype::parse(descr).map_err(|e| ImportError::Unsupported {
        what: at.to_string(),
        reason: e,
    })?;
    if dtype == Dtype::Object {
        return Err(ImportError::Unsupported {
            what: at.to_string(),
            reason: "object array inside an .npz".into(),
        });
    }
    let size = item_size(&dtype, at)?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| ImportError::corrupt(at, "shape overflows"))?;
    let body = count.saturating_mul(size) as u64;
    if body > declared - head_len {
        return Err(ImportError::corrupt(
            at,
            format!(
                "array of shape {shape:?} needs {body} bytes, the member holds {}",
                declared - head_len
            ),
        ));
    }
    // Room for the first values only until data arrives: a header may promise far more than
    // the member holds. The rest is reserved once, when the first part has come (a large
    // reallocation moves pages without copying them), so a 411 MB fc6 still costs 411 MB.
    let mut data: Vec<f32> = Vec::new();
    reserve(&mut data, count.min(FIRST_VALUES), &shape, at)?;
    let mut chunk = vec![0u8; CHUNK.min(body as usize)];
    let mut left = body as usize;
    while left > 0 {
        let n = left.min(CHUNK);
        member.read_exact(&mut chunk[..n]).map_err(|e| {
            ImportError::corrupt(at, format!("array of shape {shape:?} is truncated: {e}"))
        })?;
        if data.len() + n / size > data.capacity() {
            let rest = count - data.len();
            reserve(&mut data, rest, &shape, at)?;
        }
        decode_into(&chunk[..n], &dtype, &mut data);
        left -= n;
    }
    // What the member may still hold (numpy writes nothing after the array): reading it to its
    // end also verifies the zip checksum. Never more than declared, plus one byte to see a lie.
    let rest = declared - head_len - body;
    let extra = std::io::copy(&mut member.take(rest + 1), &mut std::io::sink()).map_err(corrupt)?;
    if extra > rest {
        return Err(ImportError::corrupt(
            at,
            format!("holds more data than the {declared} bytes it declares"),
        ));
    }
    assemble(data, &dtype, shape, fortran, at)
}

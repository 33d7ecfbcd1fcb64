//! numpy element types (`<f4`, `>f8`, `|O`...) and the decoding of raw array bytes, shared by
//! the `.npy` parser and the unpickler (numpy arrays inside pickles).

use crate::{FloatKind, ImportError, RawTensor, SourceDtype};

/// A numpy element type this importer understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// A float of 2, 4 or 8 bytes, little (`true`) or big endian.
    Float {
        /// Bytes per element.
        size: usize,
        /// Little endian.
        little: bool,
    },
    /// Python objects (pickled).
    Object,
}

impl Dtype {
    /// Parses numpy's type strings: `<f4`, `>f8`, `|O`, `f4`, `O8`...
    ///
    /// # Errors
    /// A message naming the unsupported type.
    pub(super) fn parse(code: &str) -> Result<Dtype, String> {
        let (little, body) = match code.as_bytes().first() {
            Some(b'<') => (true, &code[1..]),
            Some(b'>') => (false, &code[1..]),
            Some(b'|' | b'=') => (true, &code[1..]),
            _ => (true, code),
        };
        match body {
            "O" | "O8" | "O4" => Ok(Dtype::Object),
            "f2" | "e" => Ok(Dtype::Float { size: 2, little }),
            "f4" | "f" => Ok(Dtype::Float { size: 4, little }),
            "f8" | "d" => Ok(Dtype::Float { size: 8, little }),
            _ => Err(format!(
                "dtype '{code}' (weights must be float16, float32 or float64)"
            )),
        }
    }

    /// Applies the byte order from a pickled dtype's state (`<`, `>`, `|`, `=`).
    pub(super) fn set_byte_order(&mut self, order: &str) {
        if let Dtype::Float { little, .. } = self {
            match order {
                ">" => *little = false,
                "<" | "=" | "|" => *little = true,
                _ => {}
            }
        }
    }
}

/// Decodes raw array bytes into a row-major f32 tensor.
///
/// # Errors
/// [`ImportError::Corrupt`] when the byte count does not match the shape.
pub(super) fn decode_array(
    raw: &[u8],
    dtype: &Dtype,
    shape: Vec<usize>,
    fortran: bool,
    what: &str,
) -> Result<RawTensor, ImportError> {
    let size = item_size(dtype, what)?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count.and_then(|c| c.checked_mul(size)) != Some(raw.len()) {
        return Err(ImportError::corrupt(
            what,
            format!(
                "array of shape {shape:?} needs {} bytes of {size}-byte floats, found {}",
                count.unwrap_or(usize::MAX),
                raw.len()
            ),
        ));
    }
    let mut data = Vec::with_capacity(raw.len() / size);
    decode_into(raw, dtype, &mut data);
    assemble(data, dtype, shape, fortran, what)
}

/// Bytes per element of a numeric dtype.
///
/// # Errors
/// [`ImportError::Corrupt`] for object arrays.
pub(super) fn item_size(dtype: &Dtype, what: &str) -> Result<usize, ImportError> {
    match dtype {
        Dtype::Float { size, .. } => Ok(*size),
        Dtype::Object => Err(ImportError::corrupt(
            what,
            "object array where numbers were expected",
        )),
    }
}

/// Appends the values of `raw` (whole elements of `dtype`; a trailing partial element is
/// ignored) to `out`. Object dtypes append nothing.
pub(super) fn decode_into(raw: &[u8], dtype: &Dtype, out: &mut Vec<f32>) {
    let Dtype::Float { size, little } = *dtype else {
        return;
    };
    match (size, little) {
        (2, true) => out.extend(
            raw.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        (2, false) => out.extend(
            raw.chunks_exact(2)
                .map(|c| half::f16::from_be_bytes([c[0], c[1]]).to_f32()),
        ),
        (4, true) => out.extend(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        (4, false) => out.extend(
            raw.chunks_exact(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])),
        ),
        (_, true) => out.extend(
            raw.chunks_exact(8)
                .map(|c| f64::from_le_bytes(to8(c)) as f32),
        ),
        (_, false) => out.extend(
            raw.chunks_exact(8)
                .map(|c| f64::from_be_bytes(to8(c)) as f32),
        ),
    }
}

/// The tensor of decoded values `data` (in file order) of an array of `shape`: C order kept,
/// Fortran order turned into C order, the file's element type recorded.
///
/// # Errors
/// [`ImportError::Corrupt`] when `data` does not fill `shape`.
pub(super) fn assemble(
    data: Vec<f32>,
    dtype: &Dtype,
    shape: Vec<usize>,
    fortran: bool,
    what: &str,
) -> Result<RawTensor, ImportError> {
    let size = item_size(dtype, what)?;
    let little = matches!(dtype, Dtype::Float { little: true, .. });
    let kind = match size {
        2 => FloatKind::F16,
        4 => FloatKind::F32,
        _ => FloatKind::F64,
    };
    let stored = if little {
        SourceDtype::Little(kind)
    } else {
        SourceDtype::Big(kind)
    };
    if fortran && shape.len() > 1 {
        // Fortran order is C order of the reversed shape; reverse the axes back.
        let reversed: Vec<usize> = shape.iter().rev().copied().collect();
        let perm: Vec<usize> = (0..shape.len()).rev().collect();
        return Ok(RawTensor::new(what, reversed, data)?
            .permute(&perm)
            .stored_as(stored));
    }
    Ok(RawTensor::new(what, shape, data)?.stored_as(stored))
}

fn to8(c: &[u8]) -> [u8; 8] {
    let mut b = [0; 8];
    b.copy_from_slice(c);
    b
}

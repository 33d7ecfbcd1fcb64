//! A plain host tensor (shape + f32 values) and the layout changes weight files need.

use std::collections::BTreeMap;

use crate::ImportError;

/// Little-endian floating-point element types found in weight files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloatKind {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// single precision.
    F32,
    /// double precision.
    F64,
}

impl FloatKind {
    /// numpy's name of the type (`float16`, `bfloat16`, `float32`, `float64`).
    pub fn name(self) -> &'static str {
        match self {
            FloatKind::F16 => "float16",
            FloatKind::BF16 => "bfloat16",
            FloatKind::F32 => "float32",
            FloatKind::F64 => "float64",
        }
    }
}

/// The element type a tensor had in the file it was read from (values are always converted to
/// f32 on reading).
///
/// Displays and serializes as numpy names it: `float32`, `bfloat16`, `float64 big-endian`...
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceDtype {
    /// Little-endian floats: every format but big-endian numpy arrays.
    Little(FloatKind),
    /// Big-endian numpy floats (`>f2`, `>f4`, `>f8`).
    Big(FloatKind),
}

impl SourceDtype {
    /// The name: the [`FloatKind::name`], with ` big-endian` after it for big-endian data.
    pub fn name(self) -> &'static str {
        match self {
            SourceDtype::Little(kind) => kind.name(),
            SourceDtype::Big(FloatKind::F16) => "float16 big-endian",
            SourceDtype::Big(FloatKind::BF16) => "bfloat16 big-endian",
            SourceDtype::Big(FloatKind::F32) => "float32 big-endian",
            SourceDtype::Big(FloatKind::F64) => "float64 big-endian",
        }
    }
}

impl Default for SourceDtype {
    /// `float32`, what every tensor is once read.
    fn default() -> Self {
        SourceDtype::Little(FloatKind::F32)
    }
}

impl std::fmt::Display for SourceDtype {
    /// The [`name`](Self::name), honouring width and alignment (`{:<8}`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl serde::Serialize for SourceDtype {
    /// The [`name`](Self::name), as a string.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Decodes little-endian `bytes` of `kind` into f32 values (trailing partial elements ignored;
/// callers check the count against the shape).
pub(crate) fn decode_le(bytes: &[u8], kind: FloatKind) -> Vec<f32> {
    match kind {
        FloatKind::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        FloatKind::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        FloatKind::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        FloatKind::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
    }
}

/// A named collection of host tensors, the common currency of every reader.
pub type TensorMap = BTreeMap<String, RawTensor>;

/// A dense, row-major f32 tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values in row-major order.
    pub data: Vec<f32>,
    /// The element type in the file it was read from (`float32`, `float16`, `float64
    /// big-endian`...); values are always converted to f32 on reading.
    pub source_dtype: SourceDtype,
}

impl RawTensor {
    /// Wraps values, checking that they fill the shape.
    ///
    /// # Errors
    /// [`ImportError::Corrupt`] naming `name` when the counts disagree.
    pub fn new(name: &str, shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ImportError> {
        let expected = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(ImportError::Corrupt {
                what: name.to_string(),
                reason: format!("shape {shape:?} does not hold {} values", data.len()),
            });
        }
        Ok(Self {
            shape,
            data,
            source_dtype: SourceDtype::default(),
        })
    }

    /// Records the element type the file stored (see [`source_dtype`](Self::source_dtype)).
    pub fn stored_as(mut self, dtype: SourceDtype) -> Self {
        self.source_dtype = dtype;
        self
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Reorders the axes: output axis `i` is input axis `perm[i]` (numpy's `transpose(perm)`).
    pub fn permute(&self, perm: &[usize]) -> RawTensor {
        let rank = self.shape.len();
        assert_eq!(perm.len(), rank, "permutation rank");
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let mut in_strides = vec![1usize; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            in_strides[i] = in_strides[i + 1] * self.shape[i + 1];
        }
        let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let mut data = Vec::with_capacity(self.data.len());
        let mut index = vec![0usize; rank];
        for _ in 0..self.data.len() {
            let offset: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
            data.push(self.data[offset]);
            for axis in (0..rank).rev() {
                index[axis] += 1;
                if index[axis] < shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        RawTensor {
            shape,
            data,
            source_dtype: self.source_dtype,
        }
    }

    /// The same values under another shape with as many elements.
    pub fn reshape(mut self, shape: Vec<usize>) -> RawTensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.data.len(),
            "reshape size"
        );
        self.shape = shape;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_dtypes_print_and_serialize_as_numpy_names() {
        assert_eq!(SourceDtype::default().to_string(), "float32");
        assert_eq!(SourceDtype::Little(FloatKind::BF16).name(), "bfloat16");
        assert_eq!(
            SourceDtype::Big(FloatKind::F64).to_string(),
            "float64 big-endian"
        );
        // width and alignment apply, as `inspect` prints it
        assert_eq!(
            format!("{:<8}|", SourceDtype::Little(FloatKind::F16)),
            "float16 |"
        );
        assert_eq!(
            serde_json::to_string(&SourceDtype::Big(FloatKind::F32)).unwrap(),
            "\"float32 big-endian\""
        );
    }
}

//! Caffe `.caffemodel` files: a protobuf `NetParameter`, read with a small wire-format parser
//! (no protobuf code generation). Both layouts occur in the wild: V2 `layer` (field 100,
//! `LayerParameter`: name 1, type 2, blobs 7) and the older V1 `layers` (field 2,
//! `V1LayerParameter`: name 4, blobs 6), as in `bvlc_alexnet.caffemodel` and
//! `VGG_ILSVRC_16_layers.caffemodel`. `BlobProto`: num 1, channels 2, height 3, width 4
//! (legacy 4-D shape), data 5 (float, packed or not), shape 7 (`BlobShape`: dim 1, int64),
//! double_data 8.
//!
//! Each layer with blobs becomes `{name}.weight` (blob 0) and `{name}.bias` (blob 1), in Caffe's
//! own layouts (convolution OIHW, inner product `[out, in]`), which are PyTorch's.

use std::path::Path;

use crate::{FloatKind, ImportError, RawTensor, SourceDtype, TensorMap};

struct Wire<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'a str,
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Wire<'a> {
    fn err(&self, reason: &str) -> ImportError {
        ImportError::corrupt(
            self.what,
            format!("protobuf at byte {}: {reason}", self.pos),
        )
    }

    fn varint(&mut self) -> Result<u64, ImportError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .data
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ImportError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err("truncated field"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next `(field number, value)`, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ImportError> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(
                self.take(8)?
                    .try_into()
                    .map_err(|_| self.err("short fixed64"))?,
            )),
            2 => {
                let n =
                    usize::try_from(self.varint()?).map_err(|_| self.err("length overflows"))?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(
                self.take(4)?
                    .try_into()
                    .map_err(|_| self.err("short fixed32"))?,
            )),
            t => return Err(self.err(&format!("unsupported wire type {t}"))),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn message<'a>(data: &'a [u8], what: &'a str) -> Wire<'a> {
    Wire { data, pos: 0, what }
}

/// Parses a `BlobProto` into a tensor.
fn blob(data: &[u8], what: &str) -> Result<RawTensor, ImportError> {
    let mut w = message(data, what);
    let mut legacy = [0usize; 4];
    let mut has_legacy = false;
    let mut shape: Option<Vec<usize>> = None;
    let mut values: Vec<f32> = Vec::new();
    let mut double = false;
    while let Some((number, field)) = w.next()? {
        double |= number == 8;
        match (number, field) {
            (1..=4, Field::Varint(v)) => {
                legacy[number as usize - 1] = v as usize;
                has_legacy = true;
            }
            (5, Field::Bytes(packed)) => {
                values.extend(
                    packed
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            (5, Field::Fixed32(bits)) => values.push(f32::from_bits(bits)),
            (8, Field::Bytes(packed)) => values.extend(packed.chunks_exact(8).map(|c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            })),
            (8, Field::Fixed64(bits)) => values.push(f64::from_bits(bits) as f32),
            (7, Field::Bytes(s)) => {
                let mut dims = Vec::new();
                let mut sw = message(s, what);
                while let Some((n, f)) = sw.next()? {
                    match (n, f) {
                        (1, Field::Bytes(packed)) => {
                            let mut pw = message(packed, what);
                            while pw.pos < packed.len() {
                                dims.push(pw.varint()? as usize);
                            }
                        }
                        (1, Field::Varint(v)) => dims.push(v as usize),
                        _ => {}
                    }
                }
                shape = Some(dims);
            }
            _ => {}
        }
    }
    let shape = match shape {
        Some(s) => s,
        None if has_legacy => legacy.to_vec(),
        None => vec![values.len()],
    };
    let kind = if double {
        FloatKind::F64
    } else {
        FloatKind::F32
    };
    Ok(RawTensor::new(what, shape, values)?.stored_as(SourceDtype::Little(kind)))
}

/// Reads every layer's blobs of a `.caffemodel` (V1 or V2 layout).
///
/// # Errors
/// [`ImportError::Corrupt`] naming the file (and layer) for malformed or truncated messages.
pub fn parse_caffemodel(data: &[u8], what: &str) -> Result<TensorMap, ImportError> {
    let mut net = message(data, what);
    let mut map = TensorMap::new();
    let mut layers = 0;
    while let Some((number, field)) = net.next()? {
        let (Field::Bytes(layer), 100 | 2) = (field, number) else {
            continue;
        };
        layers += 1;
        let (name_field, blobs_field) = if number == 100 { (1, 7) } else { (4, 6) };
        let mut lw = message(layer, what);
        let mut name = None;
        let mut blobs = Vec::new();
        while let Some((n, f)) = lw.next()? {
            match f {
                Field::Bytes(b) if n == name_field => {
                    name = Some(String::from_utf8_lossy(b).into_owned())
                }
                Field::Bytes(b) if n == blobs_field => blobs.push(b),
                _ => {}
            }
        }
        let name =
            name.ok_or_else(|| ImportError::corrupt(what, format!("layer {layers} has no name")))?;
        for (blob_data, kind) in blobs.into_iter().zip(["weight", "bias"]) {
            let at = format!("{what}: layer '{name}' {kind}");
            let mut t = blob(blob_data, &at)?;
            // Legacy 4-D shapes store inner-product weights as (1, 1, out, in) and biases as
            // (1, 1, 1, out): drop the leading ones of everything but convolution kernels.
            while t.shape.len() > 1
                && t.shape[0] == 1
                && !(kind == "weight" && t.shape.len() == 4 && t.shape[2] > 1 && t.shape[1] > 1)
            {
                t.shape.remove(0);
            }
            map.insert(format!("{name}.{kind}"), t);
        }
    }
    if layers == 0 {
        return Err(ImportError::corrupt(
            what,
            "no layers: not a Caffe NetParameter",
        ));
    }
    Ok(map)
}

/// Reads a `.caffemodel` file.
///
/// # Errors
/// See [`parse_caffemodel`].
pub fn read_caffemodel(path: &Path) -> Result<TensorMap, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::io(path, e))?;
    parse_caffemodel(&bytes, &path.display().to_string())
}

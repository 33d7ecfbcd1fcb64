//! Column-blocked fully connected weights (`fc6.blocks.K.weight`, see
//! `alexvgg_models::BlockLinear`) against the canonical whole tensors (`fc6.weight`) that every
//! file format and converted file holds.

use std::collections::BTreeMap;

use crate::{RawTensor, TensorMap};

/// A block's index and shape.
type BlockShape = (usize, Vec<usize>);

/// Splits `prefix.blocks.K.{weight,bias}` out of `{prefix}.{weight,bias}`.
fn parse(path: &str) -> Option<(&str, usize, &str)> {
    let (head, kind) = path.rsplit_once('.')?;
    let (head, index) = head.rsplit_once('.')?;
    let prefix = head.strip_suffix(".blocks")?;
    Some((prefix, index.parse().ok()?, kind))
}

/// Column ranges along the last axis: splits `t` into pieces of the given widths.
fn split_columns(t: &RawTensor, widths: &[usize]) -> Vec<RawTensor> {
    let cols = *t.shape.last().unwrap_or(&0);
    let rows = t.len().checked_div(cols).unwrap_or(0);
    let mut start = 0;
    widths
        .iter()
        .map(|&w| {
            let mut data = Vec::with_capacity(rows * w);
            for r in 0..rows {
                data.extend_from_slice(&t.data[r * cols + start..r * cols + start + w]);
            }
            start += w;
            let mut shape = t.shape.clone();
            if let Some(last) = shape.last_mut() {
                *last = w;
            }
            RawTensor {
                shape,
                data,
                source_dtype: t.source_dtype,
            }
        })
        .collect()
}

/// For every blocked parameter of the module (paths and shapes from
/// [`raw_param_shapes`](crate::native::raw_param_shapes)), replaces the canonical whole tensor
/// in `tensors` by its column blocks.
///
/// A whole tensor whose shape does not fit is removed and reported in canonical terms
/// (`fc7.weight: expected [64, 64], found [32, 128]`); its block paths are returned as handled,
/// so that the loader does not also call them missing.
pub(crate) fn split_for_module(
    module_params: &[(String, Vec<usize>)],
    tensors: &mut TensorMap,
) -> (Vec<String>, Vec<String>) {
    let mut mismatches = Vec::new();
    let mut handled = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<BlockShape>> = BTreeMap::new();
    for (path, shape) in module_params {
        if let Some((prefix, k, kind)) = parse(path) {
            groups
                .entry((prefix.to_string(), kind.to_string()))
                .or_default()
                .push((k, shape.clone()));
        }
    }
    for ((prefix, kind), mut blocks) in groups {
        let key = format!("{prefix}.{kind}");
        let Some(whole) = tensors.get(&key) else {
            continue;
        };
        blocks.sort_by_key(|(k, _)| *k);
        let widths: Vec<usize> = blocks
            .iter()
            .map(|(_, s)| *s.last().unwrap_or(&0))
            .collect();
        let mut expected = blocks[0].1.clone();
        if let Some(last) = expected.last_mut() {
            *last = widths.iter().sum();
        }
        // the whole tensor must be the blocks side by side: same leading dims, summed columns
        if whole.shape != expected {
            mismatches.push(format!(
                "{key}: expected {expected:?}, found {:?}",
                whole.shape
            ));
            tensors.remove(&key);
            handled.extend(
                blocks
                    .iter()
                    .map(|(k, _)| format!("{prefix}.blocks.{k}.{kind}")),
            );
            continue;
        }
        let whole = tensors.remove(&key).expect("present");
        if let [(k, _)] = &blocks[..] {
            // one block (CPU backends): a rename, no copy
            tensors.insert(format!("{prefix}.blocks.{k}.{kind}"), whole);
            continue;
        }
        for ((k, _), piece) in blocks.iter().zip(split_columns(&whole, &widths)) {
            tensors.insert(format!("{prefix}.blocks.{k}.{kind}"), piece);
        }
    }
    (mismatches, handled)
}

/// Joins `prefix.blocks.K.kind` tensors back into canonical `prefix.kind` ones.
pub(crate) fn merge(tensors: TensorMap) -> TensorMap {
    let mut out = TensorMap::new();
    let mut groups: BTreeMap<(String, String), Vec<(usize, RawTensor)>> = BTreeMap::new();
    for (path, t) in tensors {
        match parse(&path) {
            Some((prefix, k, kind)) => groups
                .entry((prefix.to_string(), kind.to_string()))
                .or_default()
                .push((k, t)),
            None => {
                out.insert(path, t);
            }
        }
    }
    for ((prefix, kind), mut blocks) in groups {
        blocks.sort_by_key(|(k, _)| *k);
        if blocks.len() == 1 {
            out.insert(format!("{prefix}.{kind}"), blocks.remove(0).1);
            continue;
        }
        let rows = blocks[0].1.shape.iter().rev().skip(1).product::<usize>();
        let total: usize = blocks
            .iter()
            .map(|(_, t)| *t.shape.last().unwrap_or(&0))
            .sum();
        let mut data = Vec::with_capacity(rows * total);
        for r in 0..rows {
            for (_, t) in &blocks {
                let w = *t.shape.last().unwrap_or(&0);
                data.extend_from_slice(&t.data[r * w..(r + 1) * w]);
            }
        }
        let mut shape = blocks[0].1.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = total;
        }
        let source_dtype = blocks[0].1.source_dtype;
        out.insert(
            format!("{prefix}.{kind}"),
            RawTensor {
                shape,
                data,
                source_dtype,
            },
        );
    }
    out
}

/// Canonical names and shapes for a module's parameter list (blocks summed along columns).
pub(crate) fn merge_shapes(params: Vec<(String, Vec<usize>)>) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (path, shape) in params {
        match parse(&path) {
            Some((prefix, _, kind)) => {
                let key = format!("{prefix}.{kind}");
                match out.iter_mut().find(|(p, _)| *p == key) {
                    Some((_, s)) => {
                        if let (Some(a), Some(b)) = (s.last_mut(), shape.last()) {
                            *a += b;
                        }
                    }
                    None => out.push((key, shape)),
                }
            }
            None => out.push((path, shape)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_merge_is_the_identity() {
        let whole = RawTensor::new("t", vec![2, 6], (0..12).map(|v| v as f32).collect()).unwrap();
        let mut map = TensorMap::from([("fc6.weight".to_string(), whole.clone())]);
        let params = vec![
            ("fc6.blocks.0.weight".to_string(), vec![2, 3]),
            ("fc6.blocks.1.weight".to_string(), vec![2, 3]),
        ];
        assert!(split_for_module(&params, &mut map).0.is_empty());
        assert_eq!(
            map["fc6.blocks.1.weight"].data,
            vec![3.0, 4.0, 5.0, 9.0, 10.0, 11.0]
        );
        assert_eq!(merge(map)["fc6.weight"], whole);
        assert_eq!(
            merge_shapes(params),
            vec![("fc6.weight".to_string(), vec![2, 6])]
        );
    }
}

//! Every key remap and layout change between weight files and our modules, in one place.
//!
//! Our modules use burn's layouts: convolution weights `[out, in/groups, kh, kw]` (OIHW, as
//! PyTorch and Caffe), linear weights `[in, out]` (as TensorFlow; PyTorch and Caffe store
//! `[out, in]`), and fc6 reads the last feature map flattened channels-first `(c, h, w)`.
//! TensorFlow files (`bvlc_alexnet.npy`, `vgg16_weights.npz`) store convolutions HWIO and fc6's
//! rows in NHWC flatten order `(h, w, c)`.

use alexvgg_models::AlexNetVariant;
use alexvgg_models::params::{self, ParamLayer};

use crate::{ImportError, RawTensor, TensorMap};

pub use alexvgg_models::Architecture as Target;
pub use alexvgg_models::params::param_layers;

/// A layout change: the tensor, and how to name it in errors (`file: tensor 'conv1_W'`).
type Transform = fn(RawTensor, &str) -> Result<RawTensor, ImportError>;

/// Unchanged.
fn keep(t: RawTensor, _what: &str) -> Result<RawTensor, ImportError> {
    Ok(t)
}

/// Moves `from` to `to` in `dst`, transformed by `f`; records absent keys in `missing`.
fn take(
    src: &mut TensorMap,
    dst: &mut TensorMap,
    missing: &mut Vec<String>,
    (file, from): (&str, &str),
    to: String,
    f: impl FnOnce(RawTensor, &str) -> Result<RawTensor, ImportError>,
) -> Result<(), ImportError> {
    match src.remove(from) {
        Some(t) => {
            dst.insert(to, f(t, &format!("{file}: tensor '{from}'"))?);
        }
        None => missing.push(from.to_string()),
    }
    Ok(())
}

/// `[out, in]` -> `[in, out]`.
fn transpose(t: RawTensor, what: &str) -> Result<RawTensor, ImportError> {
    if t.shape.len() != 2 {
        return Err(ImportError::corrupt(
            what,
            format!("linear weight: expected 2 dimensions, found {:?}", t.shape),
        ));
    }
    Ok(t.permute(&[1, 0]))
}

/// HWIO -> OIHW.
fn hwio_to_oihw(t: RawTensor, what: &str) -> Result<RawTensor, ImportError> {
    if t.shape.len() != 4 {
        return Err(ImportError::corrupt(
            what,
            format!(
                "conv weight: expected 4 dimensions (HWIO), found {:?}",
                t.shape
            ),
        ));
    }
    Ok(t.permute(&[3, 2, 0, 1]))
}

/// Rows of a `[h*w*c, out]` TensorFlow fc6 weight reordered to `(c, h, w)`.
fn fc6_rows_hwc_to_chw(t: RawTensor, grid: usize, what: &str) -> Result<RawTensor, ImportError> {
    let (rows, out) = match t.shape[..] {
        [rows, out] if rows.is_multiple_of(grid * grid) => (rows, out),
        _ => {
            return Err(ImportError::corrupt(
                what,
                format!(
                    "fc6 weight: expected [{grid}*{grid}*C, out], found {:?}",
                    t.shape
                ),
            ));
        }
    };
    let c = rows / (grid * grid);
    // Row (c, h, w) of ours is row (h, w, c) of TensorFlow's. Moved in place, one row at a time,
    // so converting VGG16 (411 MB fc6) needs no second copy of the weight.
    let source_row: Vec<usize> = (0..rows)
        .map(|r| {
            let (ci, hw) = (r / (grid * grid), r % (grid * grid));
            hw * c + ci
        })
        .collect();
    let mut t = t;
    permute_rows_in_place(&mut t.data, out, &source_row);
    Ok(t)
}

/// Reorders the rows of a row-major `[rows, row_len]` buffer so that new row `i` is old row
/// `source[i]`, following the permutation's cycles with one spare row.
fn permute_rows_in_place(data: &mut [f32], row_len: usize, source: &[usize]) {
    let mut done = vec![false; source.len()];
    let mut spare = vec![0f32; row_len];
    for start in 0..source.len() {
        if done[start] || source[start] == start {
            continue;
        }
        spare.copy_from_slice(&data[start * row_len..(start + 1) * row_len]);
        let mut i = start;
        loop {
            done[i] = true;
            let from = source[i];
            if from == start {
                data[i * row_len..(i + 1) * row_len].copy_from_slice(&spare);
                break;
            }
            data.copy_within(from * row_len..(from + 1) * row_len, i * row_len);
            i = from;
        }
    }
}

fn finish(
    src: TensorMap,
    missing: Vec<String>,
    file: &str,
    target: &Target,
) -> Result<(), ImportError> {
    if missing.is_empty() && src.is_empty() {
        return Ok(());
    }
    let mut details = String::new();
    for key in &missing {
        details.push_str(&format!("\n  missing key: {key}"));
    }
    for (key, t) in &src {
        details.push_str(&format!(
            "\n  unexpected key: {} {:?}",
            crate::escape(key),
            t.shape
        ));
    }
    Err(ImportError::Mismatch {
        file: file.to_string(),
        model: target.describe(),
        details,
    })
}

/// PyTorch-convention files (torchvision `.pth`, safetensors, our fixtures): names and layouts.
///
/// - torchvision AlexNet: `features.{0,3,6,8,10}.*` -> `convs.{0..4}.conv.*`;
///   `classifier.{1,4,6}.*` -> `fc6/fc7/fc8.*`.
/// - torchvision VGG: `features.N.*` numbered as `make_layers` builds them (conv, `[bn,]` relu,
///   and one index per pool) -> `features.K.conv.*`, `features.K.bn.{gamma,beta,running_*}`;
///   `classifier.{0,3,6}.*` -> `fc6/fc7/fc8.*`.
/// - Caffe-named (`conv1.weight` ... `fc8.bias`, as caffe-to-PyTorch conversions and our
///   fixtures name the LRN AlexNets) -> `convs.{n-1}.conv.*`, `fc*.*`.
/// - Every linear weight `[out, in]` -> `[in, out]`.
pub fn from_torch(
    mut src: TensorMap,
    target: &Target,
    file: &str,
) -> Result<TensorMap, ImportError> {
    check_network(&src, target, file)?;
    timm_to_torchvision(&mut src);
    let mut dst = TensorMap::new();
    let mut missing = Vec::new();
    let torchvision = src.contains_key("features.0.weight");
    let batch_norm = matches!(
        target,
        Target::Vgg {
            batch_norm: true,
            ..
        }
    );
    // torchvision's `features` indices of the convolutions, and of `classifier`'s linears.
    let (conv_indices, fc_indices) = match target {
        Target::AlexNet(_) => (vec![0, 3, 6, 8, 10], [1, 4, 6]),
        Target::Vgg { depth, .. } => (
            params::vgg_table_convs(depth.table())
                .iter()
                .map(|c| c.torchvision_index(batch_norm))
                .collect(),
            [0, 3, 6],
        ),
    };
    let (mut conv_no, mut fc_no) = (0, 0);
    for ParamLayer {
        name,
        path,
        params,
        fc: is_fc,
    } in params::layers(target)
    {
        let source = match (torchvision, is_fc) {
            (false, _) => name.clone(),
            (true, true) => format!("classifier.{}", fc_indices[fc_no]),
            (true, false) => format!("features.{}", conv_indices[conv_no]),
        };
        let transform: Transform = if is_fc { transpose } else { keep };
        take(
            &mut src,
            &mut dst,
            &mut missing,
            (file, &format!("{source}.weight")),
            format!("{params}.weight"),
            transform,
        )?;
        take(
            &mut src,
            &mut dst,
            &mut missing,
            (file, &format!("{source}.bias")),
            format!("{params}.bias"),
            keep,
        )?;
        if batch_norm && !is_fc {
            // features.{k+1} is the BatchNorm after features.{k}.
            let bn = format!("features.{}", conv_indices[conv_no] + 1);
            for (from, to) in [
                ("weight", "gamma"),
                ("bias", "beta"),
                ("running_mean", "running_mean"),
                ("running_var", "running_var"),
            ] {
                take(
                    &mut src,
                    &mut dst,
                    &mut missing,
                    (file, &format!("{bn}.{from}")),
                    format!("{path}.bn.{to}"),
                    keep,
                )?;
            }
            src.remove(&format!("{bn}.num_batches_tracked"));
        }
        if is_fc {
            fc_no += 1;
        } else {
            conv_no += 1;
        }
    }
    finish(src, missing, file, target)?;
    Ok(dst)
}

/// timm's VGG (`vgg16.tv_in1k`) stores the classifier as convolutions: `pre_logits.fc1` is a
/// `[4096, 512, 7, 7]` conv (its input order `(c, h, w)` is already the flatten order),
/// `pre_logits.fc2` a `[4096, 4096, 1, 1]` conv, `head.fc` a linear. Renamed and reshaped to
/// torchvision's `classifier.{0,3,6}` `[out, in]` linears.
fn timm_to_torchvision(src: &mut TensorMap) {
    for (from, to) in [
        ("pre_logits.fc1", "classifier.0"),
        ("pre_logits.fc2", "classifier.3"),
        ("head.fc", "classifier.6"),
    ] {
        if let Some(w) = src.remove(&format!("{from}.weight")) {
            let out = w.shape.first().copied().unwrap_or(1);
            let rest = w.len() / out.max(1);
            src.insert(format!("{to}.weight"), w.reshape(vec![out, rest]));
        }
        if let Some(b) = src.remove(&format!("{from}.bias")) {
            src.insert(format!("{to}.bias"), b);
        }
    }
}

/// TensorFlow-convention files: `bvlc_alexnet.npy` (read as `conv1_W`, `conv1_b`, ...) and
/// Frossard's `vgg16_weights.npz` (`conv1_1_W`, ...).
///
/// - `{layer}_W` HWIO -> OIHW; `{layer}_b` as is.
/// - `fc6_W` rows `(h, w, c)` -> `(c, h, w)` (6x6 grid for AlexNet, 7x7 for VGG).
/// - Linear weights are already `[in, out]`.
pub fn from_tf(mut src: TensorMap, target: &Target, file: &str) -> Result<TensorMap, ImportError> {
    check_network(&src, target, file)?;
    let grid = match target {
        Target::AlexNet(_) => 6,
        Target::Vgg { .. } => 7,
    };
    let mut dst = TensorMap::new();
    let mut missing = Vec::new();
    for ParamLayer { name, params, .. } in params::layers(target) {
        let weight = format!("{params}.weight");
        match name.as_str() {
            "fc6" => take(
                &mut src,
                &mut dst,
                &mut missing,
                (file, "fc6_W"),
                weight,
                |t, what| fc6_rows_hwc_to_chw(t, grid, what),
            )?,
            "fc7" | "fc8" => take(
                &mut src,
                &mut dst,
                &mut missing,
                (file, &format!("{name}_W")),
                weight,
                keep,
            )?,
            _ => take(
                &mut src,
                &mut dst,
                &mut missing,
                (file, &format!("{name}_W")),
                weight,
                hwio_to_oihw,
            )?,
        }
        take(
            &mut src,
            &mut dst,
            &mut missing,
            (file, &format!("{name}_b")),
            format!("{params}.bias"),
            keep,
        )?;
    }
    finish(src, missing, file, target)?;
    Ok(dst)
}

/// Recognises a file meant for another network before any key is mapped, so the message says
/// "this looks like VGG16 weights; you asked for AlexNet" rather than listing 30 keys.
fn check_network(src: &TensorMap, target: &Target, file: &str) -> Result<(), ImportError> {
    match guess_network(src) {
        Some(found) if !found.fits(target) => Err(ImportError::WrongNetwork {
            file: file.to_string(),
            found: found.to_string(),
            wanted: target.describe(),
        }),
        _ => Ok(()),
    }
}

/// The family of networks a weight file's keys and shapes point to (see [`guess_network`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkFamily {
    /// A VGG (any depth, with or without BatchNorm).
    Vgg,
    /// torchvision's AlexNet (no LRN, no groups).
    AlexNetTorchvision,
    /// The LRN/grouped AlexNet of TensorFlow or Caffe.
    AlexNetLrn,
}

impl NetworkFamily {
    /// Whether weights of this family can fill `target`.
    pub fn fits(self, target: &Target) -> bool {
        match target {
            Target::AlexNet(AlexNetVariant::Torchvision) => {
                self == NetworkFamily::AlexNetTorchvision
            }
            Target::AlexNet(_) => self == NetworkFamily::AlexNetLrn,
            Target::Vgg { .. } => self == NetworkFamily::Vgg,
        }
    }
}

impl std::fmt::Display for NetworkFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            NetworkFamily::Vgg => "VGG",
            NetworkFamily::AlexNetTorchvision => "AlexNet (torchvision)",
            NetworkFamily::AlexNetLrn => "AlexNet (tf/caffe)",
        })
    }
}

/// Guesses which network a set of tensors belongs to from its keys and shapes.
pub fn guess_network(src: &TensorMap) -> Option<NetworkFamily> {
    let has = |k: &str| src.contains_key(k);
    if has("conv5_3_W")
        || has("conv1_1_W")
        || has("conv1_1.weight")
        || has("classifier.0.weight")
        || has("pre_logits.fc1.weight")
    {
        return Some(NetworkFamily::Vgg);
    }
    if has("features.0.weight") {
        // torchvision AlexNet's first conv has 64 filters of 11x11; VGG's are 3x3.
        return match src.get("features.0.weight").map(|t| t.shape.clone()) {
            Some(s) if s.len() == 4 && s[2] == 11 => Some(NetworkFamily::AlexNetTorchvision),
            _ => Some(NetworkFamily::Vgg),
        };
    }
    if has("conv1_W") || has("conv1.weight") {
        return Some(NetworkFamily::AlexNetLrn);
    }
    None
}

/// The TensorFlow name and shape a parameter has in the note's files (`conv1_1_W (3,3,3,64)`),
/// for a burn module path and burn shape; `None` for parameters TensorFlow files do not have
/// (BatchNorm).
pub fn tf_name(arch: &Target, path: &str, shape: &[usize]) -> Option<(String, Vec<usize>)> {
    for ParamLayer { name, params, .. } in params::layers(arch) {
        if path == format!("{params}.weight") {
            let tf_shape = match shape {
                [o, i, kh, kw] => vec![*kh, *kw, *i, *o],
                other => other.to_vec(),
            };
            return Some((format!("{name}_W"), tf_shape));
        }
        if path == format!("{params}.bias") {
            return Some((format!("{name}_b"), shape.to_vec()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fc6_rows_move_from_hwc_to_chw() {
        // grid 2, c 3, out 2: row (h, w, c) holds 100*h + 10*w + c (and its negative)
        let (grid, c) = (2, 3);
        let mut data = Vec::new();
        for h in 0..grid {
            for w in 0..grid {
                for ci in 0..c {
                    let v = (100 * h + 10 * w + ci) as f32;
                    data.extend([v, -v]);
                }
            }
        }
        let t = RawTensor::new("t", vec![12, 2], data).unwrap();
        let expected = t
            .clone()
            .reshape(vec![grid, grid, c, 2])
            .permute(&[2, 0, 1, 3])
            .reshape(vec![12, 2]);
        assert_eq!(fc6_rows_hwc_to_chw(t, grid, "t").unwrap(), expected);
    }
}

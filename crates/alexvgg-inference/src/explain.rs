//! Why a network chose a class: Grad-CAM and saliency maps, from burn's autodiff.
//!
//! For each image the score `S` is the chosen class's logit (before softmax; the most probable
//! class, or one asked for), and:
//!
//! - **Grad-CAM** (Selvaraju et al., 2017) at a layer `L` with activation `A` (`[C, h, w]`;
//!   by default the last convolution, after its ReLU): `relu(Σ_k mean_ij(∂S/∂A_k) · A_k)`,
//!   divided by its maximum, at `L`'s resolution `[h, w]`;
//! - **saliency** (Simonyan et al., 2014): the maximum over the colour channels of `|∂S/∂x|`,
//!   divided by its maximum, at the input's resolution `[H, W]`.
//!
//! A map whose maximum is not positive (every weighted activation negative, or a zero
//! gradient) is all zeros, not a division by zero.
//!
//! The gradient is burn's autodiff on any device (flex, ndarray, wgpu): the network's weights
//! stay plain tensors (constants for the backward pass), and only the tensor the gradient is
//! taken with respect to is an autodiff leaf. For Grad-CAM that is `L`'s activation: the pass
//! runs without autodiff up to `L` ([`Model::forward_until`]), and the rest of the network runs
//! from the leaf ([`Model::forward_from`]), so the backward pass covers only the layers after
//! `L`. Dropout and BatchNorm run as in inference (the model is put in validation mode).
//!
//! This is why the inference crate enables burn's `autodiff` feature: explaining a prediction
//! is inference with one backward pass, with no optimizer and no training state.

use alexvgg_models::{LayerKind, Model, ModelError, host_values, names};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;

use crate::preprocess::{ImageError, ImageLimits, ImageWarning, Preset, network_view, preprocess};

/// Which map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Gradient-weighted class activation mapping at a layer.
    GradCam,
    /// The input gradient's largest magnitude over the colour channels.
    Saliency,
}

impl Method {
    /// Every method, in the order help lists them.
    pub const ALL: [Method; 2] = [Method::GradCam, Method::Saliency];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::GradCam => "gradcam",
            Method::Saliency => "saliency",
        }
    }

    /// Name in pictures and reports (`Grad-CAM`, `saliency`).
    pub fn title(self) -> &'static str {
        match self {
            Method::GradCam => "Grad-CAM",
            Method::Saliency => "saliency",
        }
    }
}

/// The class whose logit is explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Each image's most probable class.
    Top1,
    /// This class index for every image.
    Class(usize),
}

impl std::str::FromStr for Target {
    type Err = String;

    /// `top1` or a class index.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("top1") {
            return Ok(Target::Top1);
        }
        s.parse::<usize>()
            .map(Target::Class)
            .map_err(|_| format!("'{s}' is neither top1 nor a class index (0, 1, ...)"))
    }
}

/// Errors explaining predictions.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// A layer name the network does not have.
    #[error("{network} has no layer '{layer}' (layers with maps, for Grad-CAM: {maps})")]
    UnknownLayer {
        /// The network.
        network: String,
        /// The name asked for.
        layer: String,
        /// The layers Grad-CAM can use, comma-separated.
        maps: String,
    },
    /// A layer without spatial positions (a fully connected layer) for Grad-CAM.
    #[error(
        "{layer} is a fully connected layer, without spatial size: Grad-CAM needs a layer with maps ({maps})"
    )]
    NotSpatial {
        /// The layer.
        layer: String,
        /// The layers Grad-CAM can use, comma-separated.
        maps: String,
    },
    /// A layer asked for with saliency, which is always at the input.
    #[error("saliency maps are at the input; a layer ('{0}') is for Grad-CAM only")]
    LayerForSaliency(String),
    /// A class index the network does not have.
    #[error("class {class} is out of range: the network has {classes} classes (0 to {})", classes.saturating_sub(1))]
    ClassOutOfRange {
        /// The index asked for.
        class: usize,
        /// The network's classes.
        classes: usize,
    },
    /// An input of another size than the network's own.
    #[error(
        "explaining needs inputs of {expected}x{expected} (the network's own size), got {found:?}"
    )]
    InputSize {
        /// The network's input side.
        expected: usize,
        /// The input dimensions given.
        found: [usize; 4],
    },
    /// The backward pass gave no gradient for the explained tensor.
    #[error("no gradient reached {0}")]
    NoGradient(String),
    /// The network failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// One image's explanation.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// The class explained.
    pub class: usize,
    /// Its logit (the score `S` whose gradient makes the map).
    pub logit: f32,
    /// Its softmax probability.
    pub probability: f32,
    /// Map height: the layer's (Grad-CAM) or the input's (saliency).
    pub height: usize,
    /// Map width.
    pub width: usize,
    /// The map, row-major, in `[0, 1]` (all zeros when its maximum was not positive).
    pub map: Vec<f32>,
}

/// A network ready to explain its predictions: in validation mode (no dropout, BatchNorm with
/// its running statistics) on its device.
#[derive(Debug)]
pub struct Explainer {
    model: Model,
    device: Device,
}

impl Explainer {
    /// Prepares `model` (already on `device`).
    pub fn new(model: Model, device: &Device) -> Self {
        Self {
            model: model.valid(),
            device: device.clone(),
        }
    }

    /// The network.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The layers Grad-CAM can use: those with spatial maps (convolutions, LRN, pools), in
    /// network order.
    pub fn map_layers(&self) -> Vec<String> {
        let side = self.model.input_size();
        self.model
            .layers([3, side, side])
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !matches!(r.kind, LayerKind::Input | LayerKind::Linear))
            .map(|r| r.name)
            .collect()
    }

    /// Grad-CAM's default layer: the last convolution (`conv5`, `conv5_3`), after its ReLU.
    pub fn default_layer(&self) -> Option<String> {
        let side = self.model.input_size();
        self.model
            .layers([3, side, side])
            .unwrap_or_default()
            .into_iter()
            .rev()
            .find(|r| r.kind == LayerKind::Conv)
            .map(|r| r.name)
    }

    /// The layer a method works at: Grad-CAM's `layer` (default: [`default_layer`]), checked;
    /// `None` for saliency (the input).
    ///
    /// # Errors
    /// [`ExplainError::UnknownLayer`] and [`ExplainError::NotSpatial`] (both listing the layers
    /// with maps), [`ExplainError::LayerForSaliency`].
    ///
    /// [`default_layer`]: Self::default_layer
    pub fn layer(
        &self,
        method: Method,
        layer: Option<&str>,
    ) -> Result<Option<String>, ExplainError> {
        let maps = self.map_layers();
        match (method, layer) {
            (Method::Saliency, None) => Ok(None),
            (Method::Saliency, Some(l)) => Err(ExplainError::LayerForSaliency(l.to_string())),
            (Method::GradCam, None) => Ok(self.default_layer()),
            (Method::GradCam, Some(l)) if maps.iter().any(|m| m == l) => Ok(Some(l.to_string())),
            (Method::GradCam, Some(l)) => {
                let maps = maps.join(", ");
                if names::FC.contains(&l) {
                    Err(ExplainError::NotSpatial {
                        layer: l.to_string(),
                        maps,
                    })
                } else {
                    Err(ExplainError::UnknownLayer {
                        network: match self.model {
                            Model::AlexNet(_) => "AlexNet".to_string(),
                            Model::Vgg(_) => "VGG".to_string(),
                        },
                        layer: l.to_string(),
                        maps,
                    })
                }
            }
        }
    }

    /// Checks a target against the network's classes.
    ///
    /// # Errors
    /// [`ExplainError::ClassOutOfRange`].
    pub fn check_target(&self, target: Target) -> Result<(), ExplainError> {
        let classes = self.model.num_classes();
        match target {
            Target::Class(class) if class >= classes => {
                Err(ExplainError::ClassOutOfRange { class, classes })
            }
            _ => Ok(()),
        }
    }

    /// The maps of `method` (at `layer` for Grad-CAM, default the last convolution) for a
    /// batch, explaining `target`'s logit.
    ///
    /// # Errors
    /// [`ExplainError`] for a bad layer or class, an input of another size than the network's,
    /// a gradient that could not be read back.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, S, S]` row-major, as `dims` (`S` = the network's input size)
    /// - output: `batch` maps of `[h, w]` (Grad-CAM: the layer's; saliency: `[S, S]`)
    pub fn explain(
        &self,
        input: Vec<f32>,
        dims: [usize; 4],
        method: Method,
        layer: Option<&str>,
        target: Target,
    ) -> Result<Vec<Explanation>, ExplainError> {
        let layer = self.layer(method, layer)?;
        self.check_target(target)?;
        let side = self.model.input_size();
        let [n, c, h, w] = dims;
        if c != 3 || h != side || w != side {
            return Err(ExplainError::InputSize {
                expected: side,
                found: dims,
            });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let x = Tensor::<4>::from_data(TensorData::new(input, dims), &self.device);
        // the tensor the gradient is taken with respect to, as an autodiff leaf, and the logits
        let (leaf, name) = match &layer {
            None => (x, names::INPUT),
            Some(layer) => {
                let mut found = None;
                self.model.forward_until(x, layer, &mut |name, t| {
                    if name == layer {
                        found = Some(t.clone());
                    }
                })?;
                (
                    found.ok_or_else(|| ExplainError::NoGradient(layer.clone()))?,
                    layer.as_str(),
                )
            }
        };
        let values = host_values(leaf.clone())?;
        let leaf_dims = leaf.dims();
        let leaf = leaf.autodiff().require_grad();
        let logits = self.model.forward_from(name, leaf.clone())?; // [n, classes]
        let scores = host_values(logits.clone().detach())?;
        let classes = scores.len() / n;
        let chosen: Vec<usize> = scores
            .chunks(classes)
            .map(|row| match target {
                Target::Class(c) => c,
                Target::Top1 => argmax(row),
            })
            .collect();
        // S: the sum over the batch of each image's chosen logit (images do not interact, so
        // each image's gradient is that of its own logit)
        let mut mask = vec![0f32; n * classes];
        for (i, &c) in chosen.iter().enumerate() {
            mask[i * classes + c] = 1.0;
        }
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [n, classes]), &self.device);
        let score = (logits * mask).sum();
        let grads = score.backward();
        let grad = leaf
            .grad(&grads)
            .ok_or_else(|| ExplainError::NoGradient(name.to_string()))?;
        let grad = host_values(grad)?;
        let [_, lc, lh, lw] = leaf_dims;
        let plane = lc * lh * lw;
        Ok((0..n)
            .map(|i| {
                let (a, g) = (
                    &values[i * plane..(i + 1) * plane],
                    &grad[i * plane..(i + 1) * plane],
                );
                let map = match method {
                    Method::GradCam => grad_cam(a, g, lc, lh * lw),
                    Method::Saliency => saliency(g, lc, lh * lw),
                };
                let row = &scores[i * classes..(i + 1) * classes];
                let class = chosen[i];
                Explanation {
                    class,
                    logit: row[class],
                    probability: softmax_at(row, class),
                    height: lh,
                    width: lw,
                    map,
                }
            })
            .collect())
    }
}

/// Grad-CAM of one image: `relu(Σ_k mean(g_k) · a_k)` over `channels` planes of `positions`
/// values, divided by its maximum.
///
/// # Shapes
/// - `a`, `g`: `[channels, positions]` row-major
/// - output: `[positions]`
pub fn grad_cam(a: &[f32], g: &[f32], channels: usize, positions: usize) -> Vec<f32> {
    let mut cam = vec![0f64; positions];
    for k in 0..channels {
        let (ak, gk) = (
            &a[k * positions..(k + 1) * positions],
            &g[k * positions..(k + 1) * positions],
        );
        let weight = gk.iter().map(|&v| f64::from(v)).sum::<f64>() / positions.max(1) as f64;
        for (c, &v) in cam.iter_mut().zip(ak) {
            *c += weight * f64::from(v);
        }
    }
    normalized(cam.into_iter().map(|v| v.max(0.0)).collect())
}

/// Saliency of one image: the largest `|g|` over `channels` planes of `positions` values,
/// divided by its maximum.
///
/// # Shapes
/// - `g`: `[channels, positions]` row-major
/// - output: `[positions]`
pub fn saliency(g: &[f32], channels: usize, positions: usize) -> Vec<f32> {
    let map = (0..positions)
        .map(|p| {
            (0..channels)
                .map(|k| f64::from(g[k * positions + p].abs()))
                .fold(0.0, f64::max)
        })
        .collect();
    normalized(map)
}

/// `map` divided by its maximum; all zeros when the maximum is not positive and finite (a map
/// with nothing in it, or a gradient that is not a number).
fn normalized(map: Vec<f64>) -> Vec<f32> {
    let max = map.iter().copied().fold(0.0, f64::max);
    if max > 0.0 && max.is_finite() {
        map.into_iter().map(|v| (v / max) as f32).collect()
    } else {
        vec![0.0; map.len()]
    }
}

/// Index of the largest value (the first of equals).
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// The softmax probability of `class` in a row of logits.
fn softmax_at(row: &[f32], class: usize) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
    (f64::from(row[class] - max).exp() / sum) as f32
}

/// An image ready to explain: the network's input, the picture the network sees, and the
/// warnings its file raised (as for classify, [`load_image_checked`]).
#[derive(Clone, Debug)]
pub struct Prepared {
    /// `[3, side, side]` network input.
    pub input: Vec<f32>,
    /// The resized and cropped image before normalisation, `side` x `side` RGB.
    pub view: RgbImage,
    /// Decoding warnings (e.g. a truncated JPEG whose missing part decodes grey).
    pub warnings: Vec<ImageWarning>,
}

/// Decodes and preprocesses images in parallel, refusing images beyond `limits`, keeping for
/// each the picture the network sees (for overlays).
pub fn prepare_views(
    paths: &[std::path::PathBuf],
    preset: Preset,
    side: usize,
    limits: &ImageLimits,
) -> Vec<Result<Prepared, ImageError>> {
    crate::classify::load_each(paths, limits, |loaded| Prepared {
        input: preprocess(&loaded.image, preset, side),
        view: network_view(&loaded.image, preset, side),
        warnings: loaded.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_cam_weights_channels_by_their_mean_gradient() {
        // two channels of two positions: weights 1 and -1
        let a = [1.0, 3.0, 2.0, 0.0];
        let g = [0.5, 1.5, -1.0, -1.0];
        // 1 * [1, 3] - 1 * [2, 0] = [-1, 3] -> relu [0, 3] -> / 3
        assert_eq!(grad_cam(&a, &g, 2, 2), vec![0.0, 1.0]);
        // nothing positive: zeros, not NaN
        assert_eq!(grad_cam(&a, &[0.0; 4], 2, 2), vec![0.0, 0.0]);
        assert_eq!(grad_cam(&a, &[-1.0; 4], 2, 2), vec![0.0, 0.0]);
    }

    #[test]
    fn saliency_is_the_largest_magnitude_over_channels() {
        let g = [1.0, -4.0, -2.0, 1.0, 0.5, 0.0];
        assert_eq!(saliency(&g, 3, 2), vec![0.5, 1.0]);
        assert_eq!(saliency(&[0.0; 6], 3, 2), vec![0.0, 0.0]);
        assert_eq!(saliency(&[f32::NAN; 6], 3, 2), vec![0.0, 0.0]);
    }

    #[test]
    fn targets_parse() {
        assert_eq!("top1".parse::<Target>(), Ok(Target::Top1));
        assert_eq!("7".parse::<Target>(), Ok(Target::Class(7)));
        assert!("-1".parse::<Target>().is_err());
        assert!((softmax_at(&[0.0, 0.0], 1) - 0.5).abs() < 1e-7);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}

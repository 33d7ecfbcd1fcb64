//! Named activations as features: any set of layers (`conv5`, `fc7`, `conv5_3`...) from one
//! forward pass that stops at the last layer asked for, on the burn model or the CPU engine,
//! optionally pooled over space (global average or max) into one vector per image.
//!
//! Names are the ones `alexvgg layers` prints and the original scripts use: a convolution's
//! name is its output after ReLU (and BatchNorm), `fc6`/`fc7` are after ReLU, `fc8` the logits.

use std::collections::HashMap;

use alexvgg_cpu::{Activation, EngineError};
use alexvgg_models::{Model, ModelError, host_values};
use burn::tensor::{Tensor, TensorData};

use crate::runner::Runner;

/// Global pooling of a feature map over its spatial positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpatialPool {
    /// The mean over positions.
    Avg,
    /// The maximum over positions.
    Max,
}

impl SpatialPool {
    /// Every choice, in the order help lists them.
    pub const ALL: [SpatialPool; 2] = [SpatialPool::Avg, SpatialPool::Max];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SpatialPool::Avg => "avg",
            SpatialPool::Max => "max",
        }
    }
}

/// One layer's activations for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    /// Layer name.
    pub layer: String,
    /// Shape: `[batch, C, H, W]` for a map, `[batch, C]` for a vector or a pooled map.
    pub shape: Vec<usize>,
    /// Values, row-major (maps channels-first).
    pub data: Vec<f32>,
}

/// Errors extracting features.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// No layer was asked for.
    #[error("no layer asked for")]
    NoLayers,
    /// A layer the network does not have.
    #[error("no layer '{layer}' in this network (layers: {known})")]
    UnknownLayer {
        /// The name asked for.
        layer: String,
        /// The names it has.
        known: String,
    },
    /// The burn model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The CPU engine failed (e.g. an input too small for a layer up to the last one asked).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Checks that `model` can take a `side` x `side` input as far as the last of `layers`: the
/// layers after it may not fit (a headless pass), but those up to it must.
///
/// # Errors
/// [`FeaturesError`] for unknown layers, and the model's error for a layer up to the last one
/// asked that the input does not fit (fully connected layers need the original input size).
pub fn check_input(model: &Model, layers: &[String], side: usize) -> Result<(), FeaturesError> {
    let names = model.activation_names();
    let last = last_in_order(&names, layers)?;
    let last_at = names.iter().position(|n| *n == last).unwrap_or(0);
    let failing = match model.layers([3, side, side]) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    // the first layer that does not fit: a window too large, or fc6 for a wrong flatten size
    let at = match &failing {
        ModelError::InputTooSmall { layer, .. } => names.iter().position(|n| n == layer),
        ModelError::FlattenMismatch { .. } => names.iter().position(|n| n == "fc6"),
        _ => Some(0),
    };
    match at {
        Some(i) if i > last_at => Ok(()),
        _ => Err(failing.into()),
    }
}

/// The activation names the runner's network reports, in order.
pub fn layer_names(runner: &Runner) -> Vec<String> {
    match runner {
        Runner::Burn { model, .. } => model.activation_names(),
        Runner::Kernels(engine) => engine
            .layer_names()
            .into_iter()
            .map(str::to_string)
            .collect(),
    }
}

/// The activations of `layers` for a batch, in the order asked, each pooled with `pool` when
/// given (pooling leaves fully connected layers as they are). The pass stops at the last of
/// the layers in network order, so an input need only fit the layers up to it.
///
/// # Errors
/// [`FeaturesError`] for unknown layers, inputs the layers cannot take.
///
/// # Shapes
/// - `input`: `[batch, 3, H, W]` row-major, as `dims`
/// - each output: `[batch, C, h, w]`, or `[batch, C]` for vectors and pooled maps
pub fn extract(
    runner: &Runner,
    input: Vec<f32>,
    dims: [usize; 4],
    layers: &[String],
    pool: Option<SpatialPool>,
) -> Result<Vec<Feature>, FeaturesError> {
    let names = layer_names(runner);
    let last = last_in_order(&names, layers)?;
    let mut found: HashMap<String, Feature> = HashMap::new();
    let wanted = |name: &str| layers.iter().any(|l| l == name);
    match runner {
        Runner::Burn { model, device } => {
            let x = Tensor::<4>::from_data(TensorData::new(input, dims), device);
            let mut failed = None;
            model.forward_until(x, &last, &mut |name, t| {
                if !wanted(name) || failed.is_some() {
                    return;
                }
                let [b, c, h, w] = t.dims();
                match host_values(t.clone()) {
                    Ok(data) => {
                        let shape = if (h, w) == (1, 1) && is_vector(name) {
                            vec![b, c]
                        } else {
                            vec![b, c, h, w]
                        };
                        found.insert(name.to_string(), feature(name, shape, data));
                    }
                    Err(e) => failed = Some(e),
                }
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Runner::Kernels(engine) => {
            engine.forward_until(&input, dims, &last, &mut |name, act| {
                if !wanted(name) {
                    return;
                }
                let f = match act {
                    Activation::Map(m) => feature(
                        name,
                        vec![dims[0], m.channels, m.height, m.width],
                        m.to_nchw(),
                    ),
                    Activation::Vector { data, batch } => {
                        feature(name, vec![batch, data.len() / batch.max(1)], data.to_vec())
                    }
                };
                found.insert(name.to_string(), f);
            })?;
        }
    }
    Ok(layers
        .iter()
        .filter_map(|l| found.get(l).cloned())
        .map(|f| match pool {
            Some(p) => pooled(f, p),
            None => f,
        })
        .collect())
}

/// Whether a name is a fully connected layer's (reported as `[batch, F, 1, 1]` by the models).
fn is_vector(name: &str) -> bool {
    alexvgg_models::names::FC.contains(&name)
}

fn feature(layer: &str, shape: Vec<usize>, data: Vec<f32>) -> Feature {
    Feature {
        layer: layer.to_string(),
        shape,
        data,
    }
}

/// The layer of `layers` that comes last in `names`.
fn last_in_order(names: &[String], layers: &[String]) -> Result<String, FeaturesError> {
    if layers.is_empty() {
        return Err(FeaturesError::NoLayers);
    }
    let mut last = 0;
    for layer in layers {
        let Some(i) = names.iter().position(|n| n == layer) else {
            return Err(FeaturesError::UnknownLayer {
                layer: layer.clone(),
                known: names.join(", "),
            });
        };
        last = last.max(i);
    }
    Ok(names[last].clone())
}

/// A map pooled over its positions into `[batch, C]`; vectors pass through.
fn pooled(f: Feature, pool: SpatialPool) -> Feature {
    let &[b, c, h, w] = f.shape.as_slice() else {
        return f;
    };
    let data = f
        .data
        .chunks(h * w)
        .map(|plane| match pool {
            SpatialPool::Avg => plane.iter().sum::<f32>() / plane.len().max(1) as f32,
            SpatialPool::Max => plane.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        })
        .collect();
    Feature {
        layer: f.layer,
        shape: vec![b, c],
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_reduces_each_plane() {
        let f = feature(
            "conv5",
            vec![1, 2, 1, 3],
            vec![1.0, 2.0, 6.0, -1.0, -2.0, -3.0],
        );
        let avg = pooled(f.clone(), SpatialPool::Avg);
        assert_eq!(avg.shape, vec![1, 2]);
        assert_eq!(avg.data, vec![3.0, -2.0]);
        assert_eq!(pooled(f, SpatialPool::Max).data, vec![6.0, -1.0]);
    }

    #[test]
    fn the_last_layer_in_network_order_ends_the_pass() {
        let names: Vec<String> = ["conv1", "pool1", "conv2", "fc6", "fc7"]
            .map(String::from)
            .to_vec();
        let ask = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            last_in_order(&names, &ask(&["fc6", "conv1"])).unwrap(),
            "fc6"
        );
        assert!(matches!(
            last_in_order(&names, &ask(&["conv9"])),
            Err(FeaturesError::UnknownLayer { .. })
        ));
        assert!(matches!(
            last_in_order(&names, &[]),
            Err(FeaturesError::NoLayers)
        ));
    }
}

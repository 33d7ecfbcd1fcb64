//! Rough training-memory estimates, checked before anything is allocated: a `--hidden` of ten
//! million or a batch of a hundred thousand images is refused with the memory it would need,
//! instead of aborting on the allocation.
//!
//! The estimate counts float32 values: the parameters with their gradients and optimizer state
//! (momentum: one more copy, Adam: two), and per image of a batch the input (three copies: the
//! decoded batch, the prefetched next one and the tensor) and every layer's output twice
//! (kept for the backward pass, and its gradient). Framework overheads and temporary buffers
//! come on top, so it is a lower bound; it is meant to catch settings that are off by orders
//! of magnitude, not to plan a tight fit.

use alexvgg_models::shape::output_size;
use alexvgg_models::vgg::VggItem;
use alexvgg_models::{Architecture, NetworkShape, Pad};

use crate::config::{OptimizerKind, OptimizerSettings};

/// The limit of [`RunOptions::max_memory`](crate::RunOptions::max_memory) where the
/// machine's memory cannot be read: 64 GiB.
pub const FALLBACK_MAX_MEMORY: u64 = 64 << 30;

/// The default limit of [`RunOptions::max_memory`](crate::RunOptions::max_memory): the
/// machine's physical memory where it can be read (`/proc/meminfo` on Linux), else
/// [`FALLBACK_MAX_MEMORY`].
pub fn default_max_memory() -> u64 {
    alexvgg_inference::memory::physical_memory().unwrap_or(FALLBACK_MAX_MEMORY)
}

/// Bytes in a GiB, for messages.
pub(crate) const GIB: f64 = (1u64 << 30) as f64;

/// What a network of a given shape needs to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Parameter values (trainable ones and BatchNorm statistics).
    pub parameters: u128,
    /// Float32 values held per image of a batch (input copies, activations and their
    /// gradients).
    pub per_image: u128,
    /// Bytes of the parameters with their gradients and optimizer state.
    pub parameter_bytes: u128,
    /// Bytes of a batch's inputs and activations.
    pub batch_bytes: u128,
}

impl MemoryEstimate {
    /// Estimated bytes in all.
    pub fn bytes(&self) -> u128 {
        self.parameter_bytes.saturating_add(self.batch_bytes)
    }
}

/// Estimates the memory of training `arch` at `shape` with batches of `batch` images.
///
/// Computed in `u128` without allocating, so absurd shapes give absurd numbers, not overflows.
pub fn estimate(
    arch: &Architecture,
    shape: &NetworkShape,
    batch: usize,
    optimizer: &OptimizerSettings,
) -> MemoryEstimate {
    let (parameters, activations) = count(arch, shape);
    let side = arch.input_size() as u128;
    let per_image = (9 * side * side).saturating_add(activations.saturating_mul(2));
    let copies: u128 = match optimizer.kind {
        OptimizerKind::Sgd if optimizer.momentum > 0.0 => 3,
        OptimizerKind::Sgd => 2,
        OptimizerKind::Adam => 4,
    };
    MemoryEstimate {
        parameters,
        per_image,
        parameter_bytes: parameters.saturating_mul(4 * copies),
        batch_bytes: (batch as u128).saturating_mul(per_image).saturating_mul(4),
    }
}

/// Parameter values and per-image activation values (forward outputs) of `arch` at `shape`.
fn count(arch: &Architecture, shape: &NetworkShape) -> (u128, u128) {
    let divisor = shape.width_divisor.max(1) as u128;
    let hidden = shape.hidden as u128;
    let classes = shape.num_classes as u128;
    let (mut params, mut acts) = (0u128, 0u128);
    let mut side = arch.input_size();
    let mut in_c: u128 = 3;
    let sq = |s: usize| (s as u128) * (s as u128);
    let features = match arch {
        Architecture::AlexNet(variant) => {
            let spec = variant.spec();
            let (pk, ps, ppad, pceil) = spec.pool;
            for stage in spec.convs {
                let out_c = stage.channels as u128 / divisor;
                let groups = stage.groups as u128;
                let k = stage.kernel as u128;
                params += k * k * (in_c / groups.max(1)) * out_c + out_c;
                side = output_size(side, stage.kernel, stage.stride, stage.pad, false).unwrap_or(1);
                // convolution and ReLU outputs; LRN keeps a few intermediates
                acts += out_c * sq(side) * if stage.lrn { 5 } else { 2 };
                if stage.pool {
                    side = output_size(side, pk, ps, ppad, pceil).unwrap_or(1);
                    acts += out_c * sq(side);
                }
                in_c = out_c;
            }
            let grid = spec.adaptive_pool.unwrap_or(6) as u128;
            in_c * grid * grid
        }
        Architecture::Vgg { depth, batch_norm } => {
            for item in depth.table() {
                match *item {
                    VggItem::Conv(c) => {
                        let out_c = c as u128 / divisor;
                        params += 9 * in_c * out_c + out_c;
                        if *batch_norm {
                            params += 4 * out_c;
                        }
                        side = output_size(side, 3, 1, Pad::Explicit(1), false).unwrap_or(1);
                        acts += out_c * sq(side) * if *batch_norm { 4 } else { 2 };
                        in_c = out_c;
                    }
                    VggItem::Pool => {
                        side = output_size(side, 2, 2, Pad::Explicit(0), false).unwrap_or(1);
                        acts += in_c * sq(side);
                    }
                }
            }
            in_c * 49
        }
    };
    // fc6, fc7, fc8 (saturating: `hidden` comes straight from the user)
    let fc = [(features, hidden), (hidden, hidden), (hidden, classes)]
        .iter()
        .fold(0u128, |sum, &(i, o)| {
            sum.saturating_add(i.saturating_mul(o).saturating_add(o))
        });
    params = params.saturating_add(fc);
    acts = acts.saturating_add(features + 4 * hidden + classes);
    (params, acts)
}

/// `bytes` in GiB, for messages.
pub(crate) fn gib(bytes: u128) -> String {
    let g = bytes as f64 / GIB;
    if g >= 100.0 {
        format!("{g:.0} GiB")
    } else {
        format!("{g:.1} GiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alexvgg_models::{AlexNetVariant, VggDepth};

    const SGD: OptimizerSettings = OptimizerSettings {
        kind: OptimizerKind::Sgd,
        momentum: 0.9,
        weight_decay: 0.0,
    };

    #[test]
    fn parameter_counts_match_the_real_networks() {
        let full = |arch| count(&arch, &NetworkShape::default()).0;
        // torchvision's published counts
        assert_eq!(
            full(Architecture::AlexNet(AlexNetVariant::Torchvision)),
            61_100_840
        );
        let vgg = |depth, batch_norm| Architecture::Vgg { depth, batch_norm };
        assert_eq!(full(vgg(VggDepth::Vgg16, false)), 138_357_544);
        // BatchNorm: weight, bias and the two running statistics per channel
        assert_eq!(full(vgg(VggDepth::Vgg11, true)), 132_868_840 + 2 * 2_752);
        // the grouped BVLC AlexNet
        assert_eq!(
            full(Architecture::AlexNet(AlexNetVariant::Caffe)),
            60_965_224
        );
    }

    #[test]
    fn estimates_grow_with_hidden_and_batch() {
        let arch = Architecture::AlexNet(AlexNetVariant::Tf);
        let shape = NetworkShape::default();
        let e = estimate(&arch, &shape, 32, &SGD);
        assert!(e.bytes() > 500 << 20 && e.bytes() < 4 << 30, "{e:?}");
        let huge = NetworkShape {
            hidden: 10_000_000,
            ..shape
        };
        assert!(estimate(&arch, &huge, 1, &SGD).parameter_bytes > 1 << 40);
        let e = estimate(&arch, &shape, 100_000, &SGD);
        assert!(e.batch_bytes > 100 << 30, "{e:?}");
        // full VGG16 at batch 32 with SGD and momentum (docs/fine-tuning.md quotes it)
        let vgg = Architecture::Vgg {
            depth: VggDepth::Vgg16,
            batch_norm: false,
        };
        let e = estimate(&vgg, &shape, 32, &SGD);
        assert!(e.bytes() > 6 << 30 && e.bytes() < 12 << 30, "{e:?}");
        // no overflow for absurd values
        let absurd = NetworkShape {
            hidden: usize::MAX,
            ..shape
        };
        let _ = estimate(&arch, &absurd, usize::MAX, &SGD);
    }
}

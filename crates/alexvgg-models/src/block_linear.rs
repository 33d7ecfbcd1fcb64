//! A fully connected layer whose weight can be split into column blocks, so that no single GPU
//! buffer exceeds what one storage binding may address (128 MiB under WebGPU, lavapipe and many
//! GPUs; AlexNet's fc6 weight is 151 MB and VGG16's 411 MB). On CPU backends there is one block
//! and the layer is exactly burn's `Linear`.

use burn::module::Module;
use burn::nn::{Dropout, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::{Pass, Stopped};

/// Largest weight block, in bytes, for devices whose storage bindings are capped.
pub const WGPU_BLOCK_BYTES: usize = 128 * 1024 * 1024;

/// The block-size cap that `device` needs: `Some(128 MiB)` for wgpu devices (the WebGPU
/// default limit, also lavapipe's), `None` (one block) for CPU backends.
pub fn weight_block_limit(device: &Device) -> Option<usize> {
    // burn 0.22 does not re-export its dispatch enum; its Debug form names the runtime.
    let name = format!("{device:?}");
    (name.contains("Wgpu") || name.contains("Cube")).then_some(WGPU_BLOCK_BYTES)
}

/// `y = x W + b` with `W: [d_in, d_out]` stored as `blocks` column slices.
#[derive(Module, Debug)]
pub struct BlockLinear {
    /// Column blocks, each a `Linear` with `d_out / blocks.len()` outputs.
    pub blocks: Vec<Linear>,
}

impl BlockLinear {
    /// A layer with weights initialised as burn's `Linear` (same fan-in), split into the fewest
    /// equal column blocks whose weights fit in `max_block_bytes` (one block for `None`).
    pub fn new(d_in: usize, d_out: usize, max_block_bytes: Option<usize>, device: &Device) -> Self {
        let count = block_count(d_in, d_out, max_block_bytes);
        let blocks = (0..count)
            .map(|_| LinearConfig::new(d_in, d_out / count).init(device))
            .collect();
        Self { blocks }
    }

    /// Applies the layer.
    ///
    /// # Shapes
    /// - `input`: `[batch, d_in]`
    /// - output: `[batch, d_out]`
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        match &self.blocks[..] {
            [one] => one.forward(input),
            blocks => Tensor::cat(blocks.iter().map(|b| b.forward(input.clone())).collect(), 1),
        }
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.blocks[0].weight.dims()[0]
    }

    /// Output features (all blocks).
    pub fn d_out(&self) -> usize {
        self.blocks.iter().map(|b| b.weight.dims()[1]).sum()
    }

    /// The whole layer as burn's `Linear` holds it: the column blocks joined (no copy for one
    /// block), zeros where a block has no bias.
    ///
    /// # Shapes
    /// - output: weight `[d_in, d_out]`, bias `[d_out]`
    pub fn into_weight_bias(self) -> (Tensor<2>, Tensor<1>) {
        let (weights, biases): (Vec<_>, Vec<_>) = self
            .blocks
            .into_iter()
            .map(|b| {
                let w = b.weight.into_value();
                let bias = match b.bias {
                    Some(bias) => bias.into_value(),
                    None => Tensor::zeros([w.dims()[1]], &w.device()),
                };
                (w, bias)
            })
            .unzip();
        (join(weights, 1), join(biases, 0))
    }
}

/// Concatenates `parts` along `dim`; a single part is returned as it is (no copy of a large
/// weight).
fn join<const D: usize>(mut parts: Vec<Tensor<D>>, dim: usize) -> Tensor<D> {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        Tensor::cat(parts, dim)
    }
}

/// Runs the first `depth` layers of a `fc6 -> fc7 -> fc8` classifier (3 = logits) that `pass`
/// runs (not those before its starting activation): each with its optional input dropout, ReLU
/// after all but the logits, reporting each output as `[batch, features, 1, 1]`.
///
/// # Shapes
/// - `x`: `[batch, features]`
/// - output: `[batch, out]` of the last layer run
pub(crate) fn classifier(
    layers: [(&str, Option<&Dropout>, &BlockLinear); 3],
    x: Tensor<2>,
    depth: usize,
    pass: &mut Pass,
) -> Result<Tensor<2>, Stopped> {
    let mut x = x; // [batch, features]
    for (i, (name, dropout, fc)) in layers.into_iter().take(depth).enumerate() {
        if pass.skips(name) {
            continue;
        }
        if let Some(dropout) = dropout {
            x = dropout.forward(x);
        }
        x = crate::kernels::linear(fc, x, i < 2); // [batch, out], ReLU but on the logits
        let [b, f] = x.dims();
        pass.emit(name, &x.clone().reshape([b, f, 1, 1]))?;
    }
    Ok(x)
}

/// The fewest equal column blocks (dividing `d_out`) whose `[d_in, d_out / n]` f32 weight fits.
pub fn block_count(d_in: usize, d_out: usize, max_block_bytes: Option<usize>) -> usize {
    let Some(limit) = max_block_bytes else {
        return 1;
    };
    (1..=d_out)
        .find(|&n| d_out.is_multiple_of(n) && d_in * (d_out / n) * 4 <= limit)
        .unwrap_or(d_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_blocks_compute_the_same_layer() {
        let device = Device::default();
        let split = BlockLinear::new(6, 8, Some(6 * 2 * 4), &device);
        assert_eq!(split.blocks.len(), 4);
        let x = Tensor::<2>::random([3, 6], burn::tensor::Distribution::Default, &device);
        let want = split.forward(x.clone());
        let (w, b) = split.into_weight_bias();
        assert_eq!((w.dims(), b.dims()), ([6, 8], [8]));
        let got = x.matmul(w) + b.unsqueeze();
        want.into_data()
            .assert_approx_eq::<f32>(&got.into_data(), burn::tensor::Tolerance::default());
    }

    #[test]
    fn blocks_fit_the_binding_limit() {
        assert_eq!(block_count(9216, 4096, None), 1);
        assert_eq!(block_count(9216, 4096, Some(WGPU_BLOCK_BYTES)), 2); // 151 MB -> 2 x 75.5 MB
        assert_eq!(block_count(25088, 4096, Some(WGPU_BLOCK_BYTES)), 4); // 411 MB -> 4 x 103 MB
        assert_eq!(block_count(4096, 4096, Some(WGPU_BLOCK_BYTES)), 1);
        assert_eq!(block_count(4096, 1000, Some(WGPU_BLOCK_BYTES)), 1);
    }
}

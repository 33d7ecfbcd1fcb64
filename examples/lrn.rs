//! The study note's LRN example: x = 1..32 as NHWC [2, 2, 2, 4], depth_radius 2, bias 0,
//! alpha 1, beta 1. Prints every output and the three the note works out by hand:
//! 26 -> 0.00923952, 17 -> 0.017453, 20 -> 0.018433.
//!
//! ```sh
//! cargo run --release --example lrn
//! ```

use alexvgg_inference::device::make_device;
use alexvgg_models::LrnConfig;
use burn::tensor::{Int, Tensor};

fn main() -> anyhow::Result<()> {
    let (_, device) = make_device(None)?;
    // NHWC as in TensorFlow, then NCHW for our module.
    let x = Tensor::<1, Int>::arange(1..33, &device)
        .float()
        .reshape([2, 2, 2, 4]);
    let lrn = LrnConfig::new(2)
        .with_bias(0.0)
        .with_alpha(1.0)
        .with_beta(1.0)
        .init();
    let y = lrn.forward(x.permute([0, 3, 1, 2])).permute([0, 2, 3, 1]);
    let y = alexvgg_models::host_values(y)?;
    for (i, v) in y.iter().enumerate() {
        println!("{:>2} -> {v:.9}", i + 1);
    }
    for (input, note) in [(26usize, 0.00923952f32), (17, 0.017453), (20, 0.018433)] {
        println!("x = {input}: {:.8} (the note: {note})", y[input - 1]);
    }
    Ok(())
}

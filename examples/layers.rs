//! Inspect a network layer by layer: the note's AlexNet table, and each activation's shape and
//! value range from a real forward pass (random weights, random input).
//!
//! ```sh
//! cargo run --release --example layers
//! ```

use alexvgg_inference::device::make_device;
use alexvgg_models::{AlexNetConfig, AlexNetVariant, gflops};
use burn::tensor::{Distribution, Tensor};

fn main() -> anyhow::Result<()> {
    let (_, device) = make_device(None)?;
    let model = AlexNetConfig::new(AlexNetVariant::Tf).init(&device);
    let rows = model.layers([3, 227, 227])?;
    for row in &rows {
        let [c, h, w] = row.output;
        println!(
            "{:<8} {h:>3}x{w:<3}x{c:<5} params {:>11}",
            row.name, row.params
        );
    }
    println!("{:.2} GFLOP per image\n", gflops(&rows));

    let x = Tensor::<4>::random(
        [1, 3, 227, 227],
        Distribution::Uniform(-100.0, 100.0),
        &device,
    );
    model.forward_observed(x, &mut |name, t| {
        let min = t.clone().min().into_scalar::<f32>();
        let max = t.clone().max().into_scalar::<f32>();
        println!("{name:<8} {:?} range [{min:.3}, {max:.3}]", t.dims());
    });
    Ok(())
}

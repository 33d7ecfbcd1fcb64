//! `alexvgg layers`: the per-layer table (the note's AlexNet table, read off the real modules).

use std::path::PathBuf;

use alexvgg_inference::device::make_device;
use alexvgg_inference::pretrained::Pretrained;
use alexvgg_inference::tables;
use alexvgg_models::NetworkShape;
use anyhow::{Result, bail};
use clap::Args;

use super::ModelArgs;

/// Print the per-layer table (output size, window, groups, parameters, multiply-adds).
#[derive(Args)]
pub struct LayersArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input side (default: the original's, 227 or 224), at most 8192.
    #[arg(long)]
    input: Option<usize>,
    /// Describe the network of a weight file or fine-tuning output directory (its classes,
    /// width and architecture) instead of the original.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The largest `--input` side: far beyond any real input, small enough that every count of
/// the table (multiply-adds of VGG19 at this side: about 10^13) is exact.
pub const MAX_INPUT_SIDE: usize = 8192;

/// Runs `alexvgg layers`.
pub fn run(a: LayersArgs) -> Result<()> {
    if let Some(side) = a.input
        && !(1..=MAX_INPUT_SIDE).contains(&side)
    {
        bail!("--input {side} is out of range: the input side must be 1 to {MAX_INPUT_SIDE}");
    }
    let model_arch = a.model.arch()?;
    let device = make_device(Some("cpu"))?.1;
    let (arch, net) = match &a.weights {
        Some(w) => {
            // the network the weights fill: their own classes and width
            let p = Pretrained::load(Some(&w.to_string_lossy()), model_arch, &device)?;
            (p.arch, p.model)
        }
        None => (
            model_arch,
            model_arch.init(&NetworkShape::default(), &device)?,
        ),
    };
    let side = a.input.unwrap_or(arch.input_size());
    let rows = net.layers([3, side, side])?;
    if a.json {
        let json = tables::layers_json(&arch, &rows);
        outln!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        out!("{}", tables::layers_text(&arch, &rows));
    }
    Ok(())
}

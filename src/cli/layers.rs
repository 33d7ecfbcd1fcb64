//! `alexvgg layers`: the per-layer table (the note's AlexNet table, read off the real modules).

use std::path::PathBuf;

use alexvgg_inference::device::make_device;
use alexvgg_inference::pretrained::Pretrained;
use alexvgg_inference::tables;
use alexvgg_models::NetworkShape;
use anyhow::Result;
use clap::Args;

use super::ModelArgs;

/// Print the per-layer table (output size, window, groups, parameters, multiply-adds).
#[derive(Args)]
pub struct LayersArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input side (default: the original's, 227 or 224).
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

/// Runs `alexvgg layers`.
pub fn run(a: LayersArgs) -> Result<()> {
    let device = make_device(Some("cpu"))?.1;
    let (arch, net) = match &a.weights {
        Some(w) => {
            // the network the weights fill: their own classes and width
            let p = Pretrained::load(Some(&w.to_string_lossy()), a.model.arch(), &device)?;
            (p.arch, p.model)
        }
        None => {
            let arch = a.model.arch();
            (arch, arch.init(&NetworkShape::default(), &device)?)
        }
    };
    let side = a.input.unwrap_or(arch.input_size());
    let rows = net.layers([3, side, side])?;
    if a.json {
        let json = tables::layers_json(&arch, &rows);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", tables::layers_text(&arch, &rows));
    }
    Ok(())
}

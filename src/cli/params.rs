//! `alexvgg params`: every parameter tensor with its burn shape and the note's TensorFlow name.

use alexvgg_inference::device::make_device;
use alexvgg_inference::tables;
use alexvgg_models::NetworkShape;
use anyhow::Result;
use clap::Args;

use super::ModelArgs;

/// List every parameter tensor with its burn shape and the note's TensorFlow name/shape.
#[derive(Args)]
pub struct ParamsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `alexvgg params`.
pub fn run(a: ParamsArgs) -> Result<()> {
    let arch = a.model.arch()?;
    let device = make_device(Some("cpu"))?.1;
    let net = arch.init(&NetworkShape::default(), &device)?;
    let rows = tables::param_rows(&arch, &net);
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        out!("{}", tables::params_text(&arch, &rows));
    }
    Ok(())
}

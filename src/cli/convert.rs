//! `alexvgg convert`: a weight file, once, into burn's native burnpack format.

use std::path::PathBuf;

use alexvgg_inference::device::make_device;
use anyhow::{Context, Result};
use clap::Args;

use super::ModelArgs;

/// Convert a weight file once into burn's native format (fast to load).
#[derive(Args)]
pub struct ConvertArgs {
    /// Input weights (.npy, .npz, .pth, .caffemodel, safetensors, burnpack).
    input: PathBuf,
    /// Output burnpack file.
    output: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
}

/// Runs `alexvgg convert`.
pub fn run(a: ConvertArgs) -> Result<()> {
    let arch = a.model.arch();
    let device = make_device(Some("cpu"))?.1;
    let (format, shape) = alexvgg_import::convert(&a.input, &arch, &a.output, &device)
        .with_context(|| format!("converting {} to {}", a.input.display(), a.output.display()))?;
    println!(
        "converted {} ({}) to {} for {} ({} classes)",
        a.input.display(),
        format.name(),
        a.output.display(),
        arch.describe(),
        shape.num_classes
    );
    Ok(())
}

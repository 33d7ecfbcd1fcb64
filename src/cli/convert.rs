//! `alexvgg convert`: a weight file, once, into burn's native burnpack format.

use std::path::PathBuf;

use alexvgg_inference::device::make_device;
use alexvgg_inference::files::{check_target, remove_stale_scratch};
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
///
/// The output must not exist or be a regular file (a symlink, FIFO, device or directory is
/// refused, never replaced), and must not be the input; scratch files of conversions to the
/// same output that were killed before they finished are removed first.
pub fn run(a: ConvertArgs) -> Result<()> {
    let arch = a.model.arch()?;
    check_target(&a.input, &a.output)?;
    for stale in remove_stale_scratch(&a.output) {
        eprintln!(
            "removed {}, left by a conversion that did not finish",
            stale.display()
        );
    }
    let device = make_device(Some("cpu"))?.1;
    let (format, shape) = alexvgg_import::convert(&a.input, &arch, &a.output, &device)
        .with_context(|| format!("converting {} to {}", a.input.display(), a.output.display()))?;
    outln!(
        "converted {} ({}) to {} for {} ({} classes)",
        a.input.display(),
        format.name(),
        a.output.display(),
        arch.describe(),
        shape.num_classes
    );
    Ok(())
}

//! `alexvgg make-dataset`: a synthetic image folder to try fine-tuning on.

use std::path::PathBuf;

use alexvgg_train::FinetuneError;
use alexvgg_train::synth::make_dataset_with;
use anyhow::{Result, anyhow};
use clap::Args;

/// Write a synthetic image folder (classes of distinct shapes, textures and colours).
#[derive(Args)]
pub struct MakeDatasetArgs {
    /// Output folder (one sub-folder per class is created).
    dir: PathBuf,
    /// Number of classes (2 to 8).
    #[arg(long, default_value_t = 6)]
    classes: usize,
    /// Images per class (1 to 100000).
    #[arg(long, default_value_t = 50)]
    per_class: usize,
    /// Image side in pixels (16 to 4096; at most 64 GiB of pixels in all).
    #[arg(long, default_value_t = 96)]
    size: u32,
    /// Seed (the same seed writes the same images).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write into DIR even though it is not empty (images of the same names are replaced).
    #[arg(long)]
    overwrite: bool,
}

/// Runs `alexvgg make-dataset`.
pub fn run(a: MakeDatasetArgs) -> Result<()> {
    make_dataset_with(&a.dir, a.classes, a.per_class, a.size, a.seed, a.overwrite).map_err(
        |e| match e {
            FinetuneError::Setting { setting, reason } => {
                anyhow!("--{}: {reason}", setting.replace('_', "-"))
            }
            e => e.into(),
        },
    )?;
    outln!(
        "wrote {} images ({} classes x {}, {size}x{size}) to {}",
        a.classes * a.per_class,
        a.classes,
        a.per_class,
        a.dir.display(),
        size = a.size
    );
    Ok(())
}

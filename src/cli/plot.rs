//! `alexvgg plot`: redraws a fine-tuning run's training curves (`curves.png`) from its
//! `metrics.jsonl`.

use std::path::PathBuf;

use alexvgg_inference::plot::plot_run;
use anyhow::Result;
use clap::Args;

use super::printable_path;

/// Redraw a fine-tuning run's training curves (loss and top-1 per epoch) as a PNG.
#[derive(Args)]
pub struct PlotArgs {
    /// The run's output directory (`finetune --out`).
    run_dir: PathBuf,
    /// The picture to write (default: RUN_DIR/curves.png).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `alexvgg plot`.
pub fn run(a: PlotArgs) -> Result<()> {
    let written = plot_run(&a.run_dir, a.out.as_deref())?;
    outln!("wrote {}", printable_path(&written));
    Ok(())
}

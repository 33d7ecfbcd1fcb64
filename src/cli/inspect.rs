//! `alexvgg inspect`: the tensors of a weight file, without building a model.

use std::path::PathBuf;

use alexvgg_import::{Format, guess_network, read_tensors};
use anyhow::Result;
use clap::Args;

/// List the tensors of a weight file (name, dtype, shape) without building a model.
#[derive(Args)]
pub struct InspectArgs {
    /// Weight file.
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `alexvgg inspect`.
pub fn run(a: InspectArgs) -> Result<()> {
    let (format, map) = read_tensors(&a.file)?;
    if a.json {
        let tensors: Vec<_> = map
            .iter()
            .map(|(k, t)| serde_json::json!({"name": k, "dtype": t.source_dtype, "shape": t.shape}))
            .collect();
        let json = serde_json::json!({"file": a.file, "format": format.name(), "tensors": tensors});
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "{} ({}), {} tensors",
        a.file.display(),
        format.name(),
        map.len()
    );
    for (k, t) in &map {
        println!("  {k:<32} {:<8} {:?}", t.source_dtype, t.shape);
    }
    if let Some(g) = guess_network(&map).filter(|_| format != Format::Burnpack) {
        println!("looks like: {g}");
    }
    Ok(())
}

//! `alexvgg inspect`: the tensors of a weight file, without building a model.

use std::path::PathBuf;

use alexvgg_import::{Format, guess_network, read_tensors};
use anyhow::Result;
use clap::Args;

use super::{printable, printable_path};

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
        // a file name that is not UTF-8 is written with U+FFFD in place of its bad bytes
        let json = serde_json::json!({
            "file": a.file.to_string_lossy(), "format": format.name(), "tensors": tensors,
        });
        outln!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    outln!(
        "{} ({}), {} tensors",
        printable_path(&a.file),
        format.name(),
        map.len()
    );
    for (k, t) in &map {
        outln!("  {:<32} {:<8} {:?}", printable(k), t.source_dtype, t.shape);
    }
    if let Some(g) = guess_network(&map).filter(|_| format != Format::Burnpack) {
        outln!("looks like: {}", printable(&g.to_string()));
    }
    Ok(())
}

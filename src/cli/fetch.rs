//! `alexvgg fetch`: known weights into the cache, verified and converted; `--list` the table.

use std::io::IsTerminal;

use alexvgg_inference::weights::{self, Checksum};
use anyhow::{Context, Result};
use clap::Args;

/// Download known weights into the cache (resuming an interrupted download), verify them
/// and convert them to burnpack; `--list` prints the table of known weights.
#[derive(Args)]
pub struct FetchArgs {
    /// Known weight names (see --list).
    names: Vec<String>,
    /// Print the known weights (name, network, checksum, licence, accuracy, preprocessing).
    #[arg(long)]
    list: bool,
}

/// Runs `alexvgg fetch`.
pub fn run(a: FetchArgs) -> Result<()> {
    // every name is checked before anything is downloaded
    let entries = a
        .names
        .iter()
        .map(|name| weights::find(name))
        .collect::<Result<Vec<_>, _>>()?;
    if a.list || a.names.is_empty() {
        list()?;
    }
    for entry in &entries {
        let name = &entry.name;
        let f = weights::fetch(entry, std::io::stderr().is_terminal())
            .with_context(|| format!("fetching {name}"))?;
        let from = match (&f.source, &f.via) {
            (Some(url), None) => format!(" (downloaded from {url})"),
            (Some(url), Some(via)) => format!(" (the fallback {via}, downloaded from {url})"),
            (None, Some(via)) => format!(" (the fallback {via}, from the cache)"),
            (None, None) => " (already in the cache)".to_string(),
        };
        outln!(
            "{name}: {}{}{from}",
            f.original.display(),
            f.native
                .map(|n| format!(", converted to {}", n.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn list() -> Result<()> {
    for w in weights::known() {
        let acc = w
            .accuracy
            .map_or("-".to_string(), |(t1, t5)| format!("{t1}/{t5}"));
        let mut sum = match &w.checksum {
            Some(Checksum::Sha256Prefix(h)) => format!("sha256 {h}..."),
            Some(Checksum::Sha256(h)) => format!("sha256 {h}"),
            Some(Checksum::Sha1(h)) => format!("sha1 {h}"),
            None => "none published".to_string(),
        };
        match &w.recorded_sha256 {
            Some(h) => sum.push_str(&format!(", recorded sha256 {h}")),
            None if w.checksum.is_none() => {
                sum.push_str(", none recorded (checked by structure; mirrors refused)")
            }
            None => {}
        }
        let sources: String = w
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{:<20} {} {}\n",
                    "",
                    if i == 0 { "source:" } else { "mirror:" },
                    s.url
                )
            })
            .collect();
        let fallback = w
            .fallback
            .as_ref()
            .map(|f| format!("{:<20} fallback: {f} ({})\n", "", w.fallback_note))
            .unwrap_or_default();
        out!(
            "{:<20} {:<20} top-1/5 {:<14} {:<12}\n{sources}{fallback}{:<20} {}\n{:<20} checksum: {sum}; size: {}{} bytes; licence: {}\n",
            w.name,
            w.architecture.name(),
            acc,
            w.preset.name(),
            "",
            w.source,
            "",
            if w.size_note.starts_with("exact") {
                ""
            } else {
                "at most "
            },
            w.size,
            w.licence
        );
    }
    Ok(())
}

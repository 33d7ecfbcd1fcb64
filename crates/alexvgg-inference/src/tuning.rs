//! The machine's kernel choices (`alexvgg tune`, see [`alexvgg_cpu::tune`]): where the table
//! lives, and the one the CPU engine uses.
//!
//! The table is `tuning.txt` in the cache directory ([`crate::weights::cache_dir`]). Every CPU
//! engine built by [`crate::runner::Runner`] uses it when it was measured on this machine at the
//! engine's SIMD level; `ALEXVGG_TUNING=off` leaves it unused (the fixed rules, as in the tests,
//! which never write one).

use std::path::PathBuf;
use std::sync::OnceLock;

use alexvgg_cpu::Simd;
use alexvgg_cpu::tune::Tuning;

use crate::weights::{WeightsError, cache_dir};

/// The variable that turns the recorded table off (`off`, `0` or `no`).
pub const TUNING_ENV: &str = "ALEXVGG_TUNING";

/// The tuning file: `tuning.txt` in the cache directory.
///
/// # Errors
/// [`WeightsError::NoCache`] when there is no cache directory.
pub fn path() -> Result<PathBuf, WeightsError> {
    Ok(cache_dir()?.join("tuning.txt"))
}

/// Reads the tuning file, if there is one; `Err` says why it cannot be used.
pub fn read() -> Result<Option<Tuning>, String> {
    let Ok(path) = path() else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Tuning::parse(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The table for engines at level `simd` on this machine: `None` when there is none, when
/// [`TUNING_ENV`] turns it off, or when it was measured on another machine or level. Read once
/// per process; a file that cannot be used is reported once on standard error and ignored (the
/// engine keeps its fixed rules).
pub fn active(simd: Simd) -> Option<&'static Tuning> {
    static TABLE: OnceLock<Option<Tuning>> = OnceLock::new();
    let off = std::env::var(TUNING_ENV)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "off" | "0" | "no"));
    if off {
        return None;
    }
    let table = TABLE.get_or_init(|| match read() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warning: ignoring the tuning table {e}; `alexvgg tune` writes a new one");
            None
        }
    });
    table
        .as_ref()
        .filter(|t| t.machine == Tuning::machine_of(simd))
}

/// Writes `table` as the tuning file (a temporary file renamed into place, so a reader never
/// sees half a table) and returns its path.
///
/// # Errors
/// A message naming the file when the cache directory or the file cannot be written.
pub fn save(table: &Tuning) -> Result<PathBuf, String> {
    let path = path().map_err(|e| e.to_string())?;
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension("txt.partial");
    std::fs::write(&tmp, table.to_text()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

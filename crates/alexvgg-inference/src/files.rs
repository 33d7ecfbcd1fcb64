//! Checks before writing a converted weight file: the target must be a regular file (or not
//! exist yet) and must not be the input, and the scratch files of killed conversions are
//! removed.
//!
//! A conversion (`alexvgg_import::convert`) writes `OUT` with the extension replaced by
//! `partial` and renames it into place; the burnpack writer builds that file as
//! `OUT.partial.PID-N.tmp` beside it (the stem of `OUT`, then `.partial.PID-N.tmp`). A run
//! killed with SIGKILL leaves those behind; [`remove_stale_scratch`] deletes the ones whose
//! process is gone.

use std::path::{Path, PathBuf};

/// A conversion target that must not be written.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Something other than a regular file is at the target.
    #[error("{path} exists and is {kind}, not a regular file: refusing to replace it")]
    NotAFile {
        /// The target.
        path: PathBuf,
        /// What is there.
        kind: &'static str,
    },
    /// The target (or the conversion's scratch file) is the input itself.
    #[error("{output} is the input file {input}: converting would replace the input")]
    SameFile {
        /// The input.
        input: PathBuf,
        /// The target.
        output: PathBuf,
    },
    /// The target could not be examined.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What kind of file system object `meta` describes (a symlink only when `meta` did not
/// follow it), for messages about files that are not regular ones.
pub(crate) fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        return "a symbolic link";
    }
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// Whether two paths name the same file (same device and inode on Unix, same canonical path
/// elsewhere); `false` when either does not exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// The file a conversion to `output` writes before renaming it into place.
pub fn scratch_of(output: &Path) -> PathBuf {
    output.with_extension("partial")
}

/// Checks that converting `input` to `output` replaces nothing it must not: `output` must
/// not exist or be a regular file (not a symlink, FIFO, device or directory), and neither
/// `output` nor the conversion's scratch file may be `input`.
///
/// # Errors
/// [`TargetError`] saying why.
pub fn check_target(input: &Path, output: &Path) -> Result<(), TargetError> {
    match std::fs::symlink_metadata(output) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(TargetError::NotAFile {
                path: output.to_path_buf(),
                kind: kind(&meta),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TargetError::Io {
                path: output.to_path_buf(),
                source,
            });
        }
    }
    for written in [output.to_path_buf(), scratch_of(output)] {
        if same_file(input, &written) {
            return Err(TargetError::SameFile {
                input: input.to_path_buf(),
                output: written,
            });
        }
    }
    Ok(())
}

/// Whether process `pid` is running, where that can be told (`/proc` on Linux); `None`
/// elsewhere.
pub fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

/// Removes the scratch files (`STEM.partial.PID-N.tmp`) that conversions to `output` killed
/// before they finished left beside it: those of processes that are no longer running (or,
/// where that cannot be told, older than a day). Returns the files removed.
pub fn remove_stale_scratch(output: &Path) -> Vec<PathBuf> {
    let scratch = scratch_of(output);
    let (Some(dir), Some(name)) = (
        scratch.parent(),
        scratch.file_name().and_then(|n| n.to_str()),
    ) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        let stale = match process_alive(pid) {
            Some(alive) => !alive || pid == std::process::id(),
            None => meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 24 * 3600),
        };
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed.sort();
    removed
}

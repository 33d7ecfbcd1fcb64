//! Known pretrained weights: where they come from, what they fit, how to preprocess for them,
//! and a download cache that verifies what it stores.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use alexvgg_models::{AlexNetVariant, Architecture, NetworkShape};
use sha2::{Digest, Sha256};

use crate::preprocess::Preset;

/// Environment variable overriding the cache directory.
pub const CACHE_ENV: &str = "ALEXVGG_CACHE";
/// Environment variable overriding where known weights are downloaded from (a mirror: the
/// file name is appended), e.g. for an air-gapped machine or tests.
pub const MIRROR_ENV: &str = "ALEXVGG_MIRROR";
/// Environment variable setting the download timeout in seconds ([`FetchOptions::timeout`]).
pub const TIMEOUT_ENV: &str = "ALEXVGG_DOWNLOAD_TIMEOUT";
/// The default download timeout: connecting, waiting for the response, and each read.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// A lock file untouched for this long is taken over even where its process cannot be
/// checked (a downloading process refreshes it every few seconds).
pub const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(600);

/// How a download is verified.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Checksum {
    /// The leading hex digits of the SHA-256 (torchvision puts 8 in its file names).
    Sha256Prefix(String),
    /// A whole SHA-256.
    Sha256(String),
    /// A SHA-1 (the Caffe model zoo's).
    Sha1(String),
}

/// A published weight file: one row of `weights/known.json`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct WeightsEntry {
    /// Name on the command line.
    pub name: String,
    /// File name in the cache.
    pub file: String,
    /// Network the file fits.
    #[serde(with = "alexvgg_models::arch::by_name")]
    pub architecture: Architecture,
    /// Where it can be downloaded, tried in order: the original host first, then mirrors.
    pub sources: Vec<Source>,
    /// Published checksum, where there is one; without, downloads are checked by structure.
    pub checksum: Option<Checksum>,
    /// Size of the file in bytes, or an upper bound of it ([`size_note`](Self::size_note)
    /// says which): a download that grows beyond it is stopped and discarded.
    pub size: u64,
    /// Where the size comes from.
    pub size_note: String,
    /// The network the file holds (fetching checks the converted weights against it): the full
    /// widths and 1000 classes for the published weights.
    #[serde(default)]
    pub shape: NetworkShape,
    /// Where the checksum comes from, or why there is none.
    pub checksum_note: String,
    /// A SHA-256 recorded for the file where none is published: a copy from any source must
    /// match it. Recorded once a file from the original host has passed the structure check
    /// (`fetch` prints it), or taken from public code that pins the same file.
    #[serde(default)]
    pub recorded_sha256: Option<String>,
    /// Where the recorded SHA-256 comes from, or why there is none.
    #[serde(default)]
    pub recorded_note: String,
    /// Another known entry holding the same weights in another format: when none of this
    /// entry's sources serves a verified file, that entry is fetched and converted to this
    /// entry's network and burnpack instead.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Why the fallback holds the same weights.
    #[serde(default)]
    pub fallback_note: String,
    /// Licence of the weights.
    pub licence: String,
    /// Published accuracy (top-1, top-5 %), where known.
    pub accuracy: Option<(f32, f32)>,
    /// Preprocessing the weights were trained with.
    #[serde(rename = "preprocess")]
    pub preset: Preset,
    /// Class list (`imagenet-1k`: `weights/imagenet_classes.tsv`).
    pub classes: String,
    /// Where the weights come from.
    pub source: String,
}

/// One place a known weight file can be downloaded from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Source {
    /// The file's URL.
    pub url: String,
    /// Where this URL was found (the original host, or the public project that uses the mirror).
    pub found_in: String,
}

impl WeightsEntry {
    /// Whether a copy of the file can be verified by a hash (published or recorded): only
    /// then is it accepted from a mirror.
    pub fn has_hash(&self) -> bool {
        self.checksum.is_some() || self.recorded_sha256.is_some()
    }
}

/// The table of known weights (`weights/known.json`, compiled in).
const KNOWN_JSON: &str = include_str!("../../../weights/known.json");

/// The weights the study note and the field use, from `weights/known.json`.
pub fn known() -> Vec<WeightsEntry> {
    serde_json::from_str(KNOWN_JSON).expect("weights/known.json is valid (checked by a test)")
}

/// Preprocessing for a weight file that is not a known entry: Caffe's for the LRN AlexNets and
/// TensorFlow-layout VGG files (Frossard's), torchvision's for PyTorch-layout files.
pub fn default_preset(arch: &Architecture, format: alexvgg_import::Format) -> Preset {
    use alexvgg_import::Format;
    match (arch, format) {
        (Architecture::AlexNet(AlexNetVariant::Torchvision), _) => Preset::Torchvision,
        (Architecture::AlexNet(_), _) => Preset::Caffe,
        (Architecture::Vgg { .. }, Format::Npy | Format::Npz) => Preset::Frossard,
        (Architecture::Vgg { .. }, _) => Preset::Torchvision,
    }
}

/// The default weights for an architecture, where one is known.
pub fn default_for(arch: &Architecture) -> Option<WeightsEntry> {
    known().into_iter().find(|w| w.architecture == *arch)
}

/// Errors resolving or fetching weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Neither a file nor a known name.
    #[error("'{0}' is neither an existing file nor a known weights name (known: {1})")]
    Unknown(String, String),
    /// No cache directory could be determined.
    #[error("no cache directory: set {CACHE_ENV} or HOME")]
    NoCache,
    /// Download failed.
    #[error("downloading {url} failed: {reason}")]
    Download {
        /// Source.
        url: String,
        /// Why.
        reason: String,
    },
    /// The downloaded file's hash does not match.
    #[error("{file}: {found} does not match the published {expected}; the download was discarded")]
    Checksum {
        /// File name.
        file: String,
        /// Published checksum, with its kind.
        expected: String,
        /// Computed hash.
        found: String,
    },
    /// Another process is fetching the same file into the same cache.
    #[error(
        "{file} is being downloaded by another process (pid {pid}, lock file {lock}); wait for it to finish, or remove the lock file if no alexvgg is running"
    )]
    Busy {
        /// File name.
        file: String,
        /// The process holding the lock, as it wrote it.
        pid: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The file is not weights for the entry's network.
    #[error(
        "{file} does not hold the expected network's weights (the download was discarded): {reason}"
    )]
    Structure {
        /// File name.
        file: String,
        /// Why.
        reason: String,
    },
    /// A mirror's copy cannot be verified: the entry has neither a published nor a recorded
    /// hash, and only the original host is trusted on the structure check alone.
    #[error(
        "a mirror's copy of {file} cannot be verified: no checksum is published or recorded for it (only the original host is trusted on the structure check alone; see docs/weight-formats.md, 'Recording a checksum')"
    )]
    Unverifiable {
        /// File name.
        file: String,
    },
    /// No source served a verified file (nor did the fallback's).
    #[error("{}", unavailable_message(name, tried, cache))]
    Unavailable {
        /// The known name.
        name: String,
        /// Each source tried, in order, with its failure.
        tried: Vec<SourceFailure>,
        /// The cache directory the file was to go to.
        cache: PathBuf,
    },
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
}

/// One source that did not serve a verified file.
#[derive(Debug)]
pub struct SourceFailure {
    /// The file asked for.
    pub file: String,
    /// The source's URL.
    pub url: String,
    /// What went wrong.
    pub error: Box<WeightsError>,
}

fn unavailable_message(name: &str, tried: &[SourceFailure], cache: &Path) -> String {
    let mut msg = format!(
        "no source served a verified copy of {name}; tried {} source{}:",
        tried.len(),
        if tried.len() == 1 { "" } else { "s" }
    );
    for (i, t) in tried.iter().enumerate() {
        // a download error names its URL, which the line already gives
        let why = match &*t.error {
            WeightsError::Download { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        msg.push_str(&format!("\n  {}. {} ({}): {why}", i + 1, t.url, t.file));
    }
    let mut files: Vec<&str> = Vec::new();
    for t in tried {
        if !files.contains(&t.file.as_str()) {
            files.push(&t.file);
        }
    }
    let file = files.first().copied().unwrap_or(name);
    let others = if files.len() > 1 {
        format!(
            " (or {}, which holds the same weights)",
            files[1..].join(", ")
        )
    } else {
        String::new()
    };
    msg.push_str(&format!(
        "\nTo proceed: download {file}{others} yourself and pass `--weights PATH`; or put it in the cache as {} (it is verified and converted on first use); or set {MIRROR_ENV} to a server holding {file} (its URL + /{file} is fetched).",
        cache.join(file).display()
    ));
    msg
}

/// The cache directory: `$ALEXVGG_CACHE`, else `$XDG_CACHE_HOME/alexvgg`, else `~/.cache/alexvgg`.
///
/// # Errors
/// [`WeightsError::NoCache`] when none of those variables is set.
pub fn cache_dir() -> Result<PathBuf, WeightsError> {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("alexvgg"));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache").join("alexvgg"))
        .ok_or(WeightsError::NoCache)
}

/// Resolves `--weights`: an existing path as is (with the known entry whose file name it has,
/// if any), else a known name, fetched into the cache on first use. For a known name the
/// converted burnpack (made when it was fetched) is returned when present: it loads fastest.
///
/// # Errors
/// [`WeightsError`] for unknown names and failed downloads.
pub fn resolve(spec: &str) -> Result<(PathBuf, Option<WeightsEntry>), WeightsError> {
    let path = Path::new(spec);
    if path.exists() {
        let entry = path.file_name().and_then(|f| {
            known()
                .into_iter()
                .find(|w| std::ffi::OsStr::new(&w.file) == f)
        });
        return Ok((path.to_path_buf(), entry));
    }
    let entry = find(spec)?;
    let fetched = fetch(&entry, std::io::stderr().is_terminal())?;
    Ok((fetched.native.unwrap_or(fetched.original), Some(entry)))
}

/// The known entry called `name`.
///
/// # Errors
/// [`WeightsError::Unknown`] listing the known names.
pub fn find(name: &str) -> Result<WeightsEntry, WeightsError> {
    known().into_iter().find(|w| w.name == name).ok_or_else(|| {
        WeightsError::Unknown(
            name.to_string(),
            known()
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })
}

/// What [`fetch`] leaves in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The verified original file.
    pub original: PathBuf,
    /// Its conversion to burnpack (`NAME.bpk`), when it could be made.
    pub native: Option<PathBuf>,
    /// The URL that served the file now; `None` when it was already in the cache.
    pub source: Option<String>,
    /// The fallback entry whose file was fetched and converted instead, if any.
    pub via: Option<String>,
}

/// How [`fetch_with`] downloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Timeout for connecting, for the response to start and for each read: a server that
    /// accepts and never answers, or stops sending, fails the download after this long (it
    /// is kept and the next attempt resumes it).
    pub timeout: std::time::Duration,
}

impl FetchOptions {
    /// The default options ([`DEFAULT_TIMEOUT`], or [`TIMEOUT_ENV`] seconds when it holds a
    /// positive number) with `progress`.
    pub fn from_env(progress: bool) -> Self {
        let timeout = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_TIMEOUT, std::time::Duration::from_secs_f64);
        Self { progress, timeout }
    }
}

/// [`fetch_into`] the [`cache_dir`].
///
/// # Errors
/// As [`fetch_into`].
pub fn fetch(entry: &WeightsEntry, progress: bool) -> Result<Fetched, WeightsError> {
    fetch_into(entry, &cache_dir()?, progress)
}

/// [`fetch_with`] the options of [`FetchOptions::from_env`].
///
/// # Errors
/// As [`fetch_with`].
pub fn fetch_into(
    entry: &WeightsEntry,
    dir: &Path,
    progress: bool,
) -> Result<Fetched, WeightsError> {
    fetch_with(entry, dir, &FetchOptions::from_env(progress))
}

/// Makes sure `dir` holds `entry`'s file, verified, and its burnpack conversion, with the
/// table of [`known`] weights for the entry's [`fallback`](WeightsEntry::fallback).
///
/// # Errors
/// As [`fetch_in_table`].
pub fn fetch_with(
    entry: &WeightsEntry,
    dir: &Path,
    options: &FetchOptions,
) -> Result<Fetched, WeightsError> {
    fetch_in_table(entry, &known(), dir, options)
}

/// Makes sure `dir` holds `entry`'s file, verified, and its burnpack conversion; `table` holds
/// the entry named by its [`fallback`](WeightsEntry::fallback).
///
/// The sources are tried in order (or only `$ALEXVGG_MIRROR/FILE` when that variable is set);
/// each attempt says which source it uses. A download goes to `FILE.partial`; an interrupted
/// download (dropped connection, killed process, timeout) leaves it there and the next attempt
/// (the next source, or the next call) resumes it with an HTTP range request (or starts over
/// when the server ignores ranges). A download larger than the entry's
/// [`size`](WeightsEntry::size) is stopped and discarded. The finished file must match the
/// published checksum and the [recorded SHA-256](WeightsEntry::recorded_sha256) where the
/// entry has them, and must pass the structure check: every tensor must fit the entry's
/// network, which the conversion to burnpack checks, and the network must be the entry's
/// [`shape`](WeightsEntry::shape) (the full widths and 1000 classes for the published
/// weights, not a reduced network). A mirror's copy of a file with no hash at all is refused
/// ([`WeightsError::Unverifiable`]); the original host (and `$ALEXVGG_MIRROR`) is trusted on
/// the structure check alone, and the file's SHA-256 is printed for recording. Only a
/// verified file is renamed to `FILE`; one that fails verification is deleted and the next
/// source is tried. While it downloads, `FILE.partial.lock` (holding the process id) keeps a
/// second fetch of the same file out; a lock whose process is gone (or, where that cannot be
/// told, untouched for [`STALE_LOCK`]) is taken over.
///
/// When no source serves a verified file and the entry names a fallback, the fallback entry
/// is fetched the same way and its file converted to this entry's network, as `NAME.bpk`.
///
/// # Errors
/// [`WeightsError::Unavailable`] listing every source tried with its failure (the
/// fallback's included) and how to proceed; [`WeightsError::Busy`] while another process
/// fetches the same file; [`WeightsError::Structure`] for a file placed in the cache by hand
/// that holds another network; file-system errors.
pub fn fetch_in_table(
    entry: &WeightsEntry,
    table: &[WeightsEntry],
    dir: &Path,
    options: &FetchOptions,
) -> Result<Fetched, WeightsError> {
    if let Some(cached) = cached(entry, table, dir)? {
        return Ok(cached);
    }
    let mut tried = match fetch_sources(entry, table, dir, options) {
        Err(WeightsError::Unavailable { tried, .. }) => tried,
        other => return other,
    };
    let Some(fallback) = &entry.fallback else {
        return Err(unavailable(entry, tried, dir));
    };
    let Some(other) = table.iter().find(|w| &w.name == fallback) else {
        return Err(unavailable(entry, tried, dir));
    };
    eprintln!(
        "no source served {}; falling back to {} ({}): {}",
        entry.file, other.name, other.file, entry.fallback_note
    );
    match fetch_in_table(other, table, dir, options) {
        Ok(fetched) => {
            let native = native_path(entry, dir);
            convert(entry, &fetched.original, &native)?;
            eprintln!(
                "{}: converted {} to {} for {}",
                entry.name,
                other.file,
                native.display(),
                entry.architecture.describe()
            );
            Ok(Fetched {
                original: fetched.original,
                native: Some(native),
                source: fetched.source,
                via: Some(other.name.clone()),
            })
        }
        Err(WeightsError::Unavailable { tried: more, .. }) => {
            tried.extend(more);
            Err(unavailable(entry, tried, dir))
        }
        Err(e) => Err(e),
    }
}

/// Where `entry`'s burnpack conversion goes in the cache: `NAME.bpk`.
fn native_path(entry: &WeightsEntry, dir: &Path) -> PathBuf {
    dir.join(format!("{}.bpk", entry.name))
}

fn unavailable(entry: &WeightsEntry, tried: Vec<SourceFailure>, dir: &Path) -> WeightsError {
    WeightsError::Unavailable {
        name: entry.name.clone(),
        tried,
        cache: dir.to_path_buf(),
    }
}

/// What the cache already holds for `entry`: its file (converted to burnpack on first use if
/// it was placed by hand), or its fallback's file with this entry's burnpack.
fn cached(
    entry: &WeightsEntry,
    table: &[WeightsEntry],
    dir: &Path,
) -> Result<Option<Fetched>, WeightsError> {
    let target = dir.join(&entry.file);
    let native = native_path(entry, dir);
    if target.exists() {
        if !native.exists() {
            // a file placed in the cache by hand gets converted on first use; one that does
            // not convert is left for the loader to report, but a reduced network is refused
            if let Ok(shape) = convert_unchecked(entry, &target, &native) {
                check_shape(entry, shape, &native)?;
            }
        }
        return Ok(Some(Fetched {
            original: target,
            native: native.exists().then_some(native),
            source: None,
            via: None,
        }));
    }
    let fallback = entry
        .fallback
        .as_ref()
        .and_then(|f| table.iter().find(|w| &w.name == f));
    if let Some(other) = fallback {
        let original = dir.join(&other.file);
        if original.exists() && native.exists() {
            return Ok(Some(Fetched {
                original,
                native: Some(native),
                source: None,
                via: Some(other.name.clone()),
            }));
        }
    }
    Ok(None)
}

/// The URLs to try for `entry`, each with whether it is trusted on the structure check alone.
fn source_urls(entry: &WeightsEntry) -> Vec<(String, bool)> {
    match std::env::var(MIRROR_ENV) {
        Ok(m) if !m.is_empty() => {
            vec![(format!("{}/{}", m.trim_end_matches('/'), entry.file), true)]
        }
        _ => entry
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.url.clone(), i == 0))
            .collect(),
    }
}

/// Tries `entry`'s sources in order under the fetch lock.
fn fetch_sources(
    entry: &WeightsEntry,
    table: &[WeightsEntry],
    dir: &Path,
    options: &FetchOptions,
) -> Result<Fetched, WeightsError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let target = dir.join(&entry.file);
    let native = native_path(entry, dir);
    let partial = dir.join(format!("{}.partial", entry.file));
    let lock = FetchLock::acquire(&partial, &entry.file)?;
    if target.exists() {
        // another process finished it between the check and taking the lock
        drop(lock);
        return fetch_in_table(entry, table, dir, options);
    }
    let mut tried = Vec::new();
    for (url, trusted) in source_urls(entry) {
        let failure = |error: WeightsError| SourceFailure {
            file: entry.file.clone(),
            url: url.clone(),
            error: Box::new(error),
        };
        if !trusted && !entry.has_hash() {
            tried.push(failure(WeightsError::Unverifiable {
                file: entry.file.clone(),
            }));
            continue;
        }
        if let Err(e) = download(&url, &partial, entry, options, &lock) {
            // a partial download is kept: the next source resumes it
            match &e {
                WeightsError::Download { reason, .. } => eprintln!("  failed: {reason}"),
                other => eprintln!("  failed: {other}"),
            }
            tried.push(failure(e));
            continue;
        }
        let verified =
            verify(entry, &partial).and_then(|how| convert(entry, &partial, &native).map(|()| how));
        match verified {
            Ok(how) => {
                std::fs::rename(&partial, &target).map_err(|e| io_err(&target, e))?;
                drop(lock);
                eprintln!("{}: installed {} from {url}; {how}", entry.name, entry.file);
                return Ok(Fetched {
                    original: target,
                    native: Some(native),
                    source: Some(url),
                    via: None,
                });
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                eprintln!("  refused: {e}");
                tried.push(failure(e));
            }
        }
    }
    Err(unavailable(entry, tried, dir))
}

/// `FILE.partial.lock`: created exclusively, holding the process id; removed when dropped.
struct FetchLock {
    path: PathBuf,
    touched: std::cell::Cell<std::time::Instant>,
}

impl FetchLock {
    fn acquire(partial: &Path, file: &str) -> Result<Self, WeightsError> {
        let mut name = partial.as_os_str().to_os_string();
        name.push(".lock");
        let path = PathBuf::from(name);
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(FetchLock {
                        path,
                        touched: std::cell::Cell::new(std::time::Instant::now()),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim().to_string();
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .unwrap_or_default();
                    let alive = holder
                        .parse::<u32>()
                        .ok()
                        .and_then(crate::files::process_alive);
                    let stale = match alive {
                        Some(alive) => !alive,
                        // an unreadable pid (or no way to check it): by age; a lock just
                        // created may not hold its pid yet
                        None => age > STALE_LOCK,
                    };
                    if !stale {
                        return Err(WeightsError::Busy {
                            file: file.to_string(),
                            pid: if holder.is_empty() {
                                "unknown".to_string()
                            } else {
                                holder
                            },
                            lock: path,
                        });
                    }
                    eprintln!(
                        "taking over the stale lock {} ({})",
                        path.display(),
                        if alive.is_some() {
                            format!("pid {holder} is gone")
                        } else {
                            format!("untouched for {} s", age.as_secs())
                        }
                    );
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        Err(io_err(
            &path,
            std::io::Error::other("the lock file keeps reappearing"),
        ))
    }

    /// Refreshes the lock's time (at most every few seconds), showing it is alive.
    #[allow(dead_code)] // without the `download` feature nothing downloads
    fn touch(&self) {
        if self.touched.get().elapsed().as_secs() >= 5 {
            self.touched.set(std::time::Instant::now());
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&self.path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
        }
    }
}

impl Drop for FetchLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn io_err(path: &Path, source: std::io::Error) -> WeightsError {
    WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Converts a downloaded file to burnpack, which also proves that every tensor fits, and
/// checks that the network is the entry's (a reduced network of the same architecture
/// converts too). The burnpack is removed when the check fails.
fn convert(entry: &WeightsEntry, file: &Path, native: &Path) -> Result<(), WeightsError> {
    let shape = convert_unchecked(entry, file, native)?;
    check_shape(entry, shape, native)
}

fn structure_error(entry: &WeightsEntry, reason: String) -> WeightsError {
    WeightsError::Structure {
        file: entry.file.clone(),
        reason,
    }
}

/// Converts `file` to the burnpack `native`, returning the network it holds.
fn convert_unchecked(
    entry: &WeightsEntry,
    file: &Path,
    native: &Path,
) -> Result<NetworkShape, WeightsError> {
    let device = crate::device::make_device(Some("cpu"))
        .map_err(|e| structure_error(entry, e.to_string()))?
        .1;
    alexvgg_import::convert(file, &entry.architecture, native, &device)
        .map(|(_, shape)| shape)
        .map_err(|e| structure_error(entry, e.to_string()))
}

/// Refuses (and removes the burnpack `native` of) a network other than the entry's.
fn check_shape(
    entry: &WeightsEntry,
    shape: NetworkShape,
    native: &Path,
) -> Result<(), WeightsError> {
    if shape == entry.shape {
        return Ok(());
    }
    let _ = std::fs::remove_file(native);
    let want = entry.shape;
    let reduced = shape.num_classes < want.num_classes
        || shape.hidden < want.hidden
        || shape.width_divisor > want.width_divisor;
    Err(structure_error(
        entry,
        format!(
            "it holds a {} network ({} classes, fc6/fc7 width {}, channel divisor {}), not {} with {} classes, fc6/fc7 width {} and channel divisor {}",
            if reduced { "reduced" } else { "different" },
            shape.num_classes,
            shape.hidden,
            shape.width_divisor,
            entry.architecture.describe(),
            want.num_classes,
            want.hidden,
            want.width_divisor
        ),
    ))
}

/// Hashes a finished download and compares it with the published checksum and the recorded
/// SHA-256; returns how it was verified (the structure check follows when converting).
fn verify(entry: &WeightsEntry, file: &Path) -> Result<String, WeightsError> {
    let sha256 = hash_file::<Sha256>(file)?;
    let mismatch = |expected: String, found: &str| WeightsError::Checksum {
        file: entry.file.clone(),
        expected,
        found: found.to_string(),
    };
    let mut how = Vec::new();
    match &entry.checksum {
        Some(Checksum::Sha256Prefix(p)) => {
            if !sha256.starts_with(&p.to_ascii_lowercase()) {
                return Err(mismatch(format!("SHA-256 {p}..."), &sha256));
            }
            how.push(format!("the published SHA-256 prefix {p}"));
        }
        Some(Checksum::Sha256(h)) => {
            if sha256 != h.to_ascii_lowercase() {
                return Err(mismatch(format!("SHA-256 {h}"), &sha256));
            }
            how.push("the published SHA-256".to_string());
        }
        Some(Checksum::Sha1(h)) => {
            let found = hash_file::<sha1::Sha1>(file)?;
            if found != h.to_ascii_lowercase() {
                return Err(mismatch(format!("SHA-1 {h}"), &found));
            }
            how.push(format!("the published SHA-1 {h}"));
        }
        None => {}
    }
    if let Some(h) = &entry.recorded_sha256 {
        if sha256 != h.to_ascii_lowercase() {
            return Err(mismatch(format!("recorded SHA-256 {h}"), &sha256));
        }
        how.push("the recorded SHA-256".to_string());
    }
    Ok(if how.is_empty() {
        format!(
            "verified by structure only (no checksum published or recorded): its SHA-256 is {sha256}; recording it in weights/known.json as recorded_sha256 lets mirrors serve it"
        )
    } else {
        format!("verified by {} and by structure", how.join(" and "))
    })
}

/// The lowercase hex digest of a file.
fn hash_file<D: Digest>(file: &Path) -> Result<String, WeightsError> {
    let mut f = std::fs::File::open(file).map_err(|e| io_err(file, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut hasher = D::new();
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err(file, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Without the `download` feature: says how to place the file by hand.
#[cfg(not(feature = "download"))]
fn download(
    url: &str,
    partial: &Path,
    entry: &WeightsEntry,
    _options: &FetchOptions,
    _lock: &FetchLock,
) -> Result<(), WeightsError> {
    Err(WeightsError::Download {
        url: url.to_string(),
        reason: format!(
            "this build has no downloader (the `download` feature is off); place {} in {} by hand",
            entry.file,
            partial.parent().unwrap_or(partial).display()
        ),
    })
}

/// Downloads `url` into `partial`, resuming from its current length, never beyond the
/// entry's size.
#[cfg(feature = "download")]
fn download(
    url: &str,
    partial: &Path,
    entry: &WeightsEntry,
    options: &FetchOptions,
    lock: &FetchLock,
) -> Result<(), WeightsError> {
    use std::io::Write;
    let fail = |reason: String| WeightsError::Download {
        url: url.to_string(),
        reason,
    };
    let cap = entry.size;
    let too_large = |bytes: u64| {
        let _ = std::fs::remove_file(partial);
        fail(format!(
            "the download grew to {bytes} bytes, more than the {cap} bytes of {} ({}); it was discarded",
            entry.file, entry.size_note
        ))
    };
    let mut have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    if have > cap {
        // a leftover larger than the file can be is garbage
        let _ = std::fs::remove_file(partial);
        have = 0;
    }
    eprintln!(
        "downloading {} from {url}{}",
        entry.name,
        if have > 0 {
            format!(" (resuming after {have} bytes)")
        } else {
            String::new()
        }
    );
    let mut request = ureq::get(url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let timeout = Some(options.timeout);
    let response = request
        .config()
        .http_status_as_error(false)
        .timeout_connect(timeout)
        .timeout_recv_response(timeout)
        .timeout_per_read(timeout)
        .build()
        .call()
        .map_err(|e| fail(format!("{e} (timeout {:?})", options.timeout)))?;
    let status = response.status().as_u16();
    let resumed = match status {
        206 if have > 0 => true,
        200 => false,
        416 if have > 0 => {
            // the range starts at or past the end: the partial file is whole (or wrong, which
            // verification will tell)
            return Ok(());
        }
        other => return Err(fail(format!("HTTP status {other}"))),
    };
    let length: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let total = length.map(|l| l.saturating_add(if resumed { have } else { 0 }));
    if let Some(t) = total
        && t > cap
    {
        let _ = std::fs::remove_file(partial);
        return Err(fail(format!(
            "the server announces {t} bytes, more than the {cap} bytes of {} ({}); nothing was downloaded",
            entry.file, entry.size_note
        )));
    }
    if have > 0 && !resumed {
        eprintln!("the server ignores ranges: starting over");
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(partial)
        .map_err(|e| io_err(partial, e))?;
    let mut done = if resumed { have } else { 0 };
    // one byte more than the cap tells a file that is too large from one that is exactly it
    let mut reader = response.into_body().into_reader().take(cap + 1 - done);
    let mut buf = vec![0u8; 1 << 20];
    let mut last_draw = std::time::Instant::now();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = file.sync_all();
                if options.progress {
                    eprintln!();
                }
                return Err(fail(format!(
                    "{e} after {done} bytes; the partial download is kept in {} and the next attempt resumes it",
                    partial.display()
                )));
            }
        };
        if n == 0 {
            break;
        }
        if done + n as u64 > cap {
            drop(file);
            if options.progress {
                eprintln!();
            }
            return Err(too_large(done + n as u64));
        }
        file.write_all(&buf[..n]).map_err(|e| io_err(partial, e))?;
        done += n as u64;
        lock.touch();
        if options.progress && last_draw.elapsed().as_millis() >= 200 {
            last_draw = std::time::Instant::now();
            match total {
                Some(t) => eprint!(
                    "\r  {:.1} / {:.1} MB ({:.0}%)   ",
                    done as f64 / 1e6,
                    t as f64 / 1e6,
                    100.0 * done as f64 / t.max(1) as f64
                ),
                None => eprint!("\r  {:.1} MB   ", done as f64 / 1e6),
            }
        }
    }
    file.sync_all().map_err(|e| io_err(partial, e))?;
    if options.progress {
        eprintln!();
    }
    if let Some(t) = total
        && done != t
    {
        return Err(fail(format!(
            "the connection closed after {done} of {t} bytes; the partial download is kept in {} and the next attempt resumes it",
            partial.display()
        )));
    }
    Ok(())
}

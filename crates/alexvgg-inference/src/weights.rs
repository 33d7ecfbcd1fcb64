//! Known pretrained weights: where they come from, what they fit, how to preprocess for them,
//! and a download cache that verifies what it stores.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use alexvgg_models::{AlexNetVariant, Architecture};
use sha2::{Digest, Sha256};

use crate::preprocess::Preset;

/// Environment variable overriding the cache directory.
pub const CACHE_ENV: &str = "ALEXVGG_CACHE";
/// Environment variable overriding where known weights are downloaded from (a mirror: the
/// file name is appended), e.g. for an air-gapped machine or tests.
pub const MIRROR_ENV: &str = "ALEXVGG_MIRROR";

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
    /// Where it is published.
    pub url: String,
    /// Published checksum, where there is one; without, downloads are checked by structure.
    pub checksum: Option<Checksum>,
    /// Where the checksum comes from, or why there is none.
    pub checksum_note: String,
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
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
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
}

/// [`fetch_into`] the [`cache_dir`].
///
/// # Errors
/// As [`fetch_into`].
pub fn fetch(entry: &WeightsEntry, progress: bool) -> Result<Fetched, WeightsError> {
    fetch_into(entry, &cache_dir()?, progress)
}

/// Makes sure `dir` holds `entry`'s file, verified, and its burnpack conversion.
///
/// The download goes to `FILE.partial`; an interrupted download (dropped connection, killed
/// process) leaves it there and the next call resumes it with an HTTP range request (or starts
/// over when the server ignores ranges). The finished file is checked against the published
/// checksum, or, where none is published, by structure: every tensor must fit the entry's
/// network, which the conversion to burnpack checks. Only then is it renamed to `FILE`; a file
/// that fails verification is deleted. `progress` draws a progress line on stderr.
///
/// # Errors
/// [`WeightsError`] for network, checksum, structure and file-system failures.
pub fn fetch_into(
    entry: &WeightsEntry,
    dir: &Path,
    progress: bool,
) -> Result<Fetched, WeightsError> {
    let target = dir.join(&entry.file);
    let native = dir.join(format!("{}.bpk", entry.name));
    if target.exists() {
        if !native.exists() {
            // best effort: a file placed in the cache by hand gets converted on first use
            let _ = convert(entry, &target, &native);
        }
        return Ok(Fetched {
            original: target,
            native: native.exists().then_some(native),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let url = match std::env::var(MIRROR_ENV) {
        Ok(m) if !m.is_empty() => format!("{}/{}", m.trim_end_matches('/'), entry.file),
        _ => entry.url.clone(),
    };
    let partial = dir.join(format!("{}.partial", entry.file));
    download(&url, &partial, entry, progress)?;
    let verified = verify(entry, &partial).and_then(|()| convert(entry, &partial, &native));
    if let Err(e) = verified {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &target).map_err(|e| io_err(&target, e))?;
    Ok(Fetched {
        original: target,
        native: Some(native),
    })
}

fn io_err(path: &Path, source: std::io::Error) -> WeightsError {
    WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Converts a downloaded file to burnpack, which also proves that every tensor fits.
fn convert(entry: &WeightsEntry, file: &Path, native: &Path) -> Result<(), WeightsError> {
    let device = crate::device::make_device(Some("cpu"))
        .map_err(|e| WeightsError::Structure {
            file: entry.file.clone(),
            reason: e.to_string(),
        })?
        .1;
    alexvgg_import::convert(file, &entry.architecture, native, &device)
        .map(|_| ())
        .map_err(|e| WeightsError::Structure {
            file: entry.file.clone(),
            reason: e.to_string(),
        })
}

/// Hashes a finished download and compares with the published checksum.
fn verify(entry: &WeightsEntry, file: &Path) -> Result<(), WeightsError> {
    let Some(checksum) = &entry.checksum else {
        return Ok(()); // checked by structure when converting
    };
    let (expected, found, ok) = match checksum {
        Checksum::Sha256Prefix(p) => {
            let found = hash_file::<Sha256>(file)?;
            let ok = found.starts_with(&p.to_ascii_lowercase());
            (format!("SHA-256 {p}..."), found, ok)
        }
        Checksum::Sha256(h) => {
            let found = hash_file::<Sha256>(file)?;
            let ok = found == h.to_ascii_lowercase();
            (format!("SHA-256 {h}"), found, ok)
        }
        Checksum::Sha1(h) => {
            let found = hash_file::<sha1::Sha1>(file)?;
            let ok = found == h.to_ascii_lowercase();
            (format!("SHA-1 {h}"), found, ok)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(WeightsError::Checksum {
            file: entry.file.clone(),
            expected,
            found,
        })
    }
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
    _progress: bool,
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

/// Downloads `url` into `partial`, resuming from its current length.
#[cfg(feature = "download")]
fn download(
    url: &str,
    partial: &Path,
    entry: &WeightsEntry,
    progress: bool,
) -> Result<(), WeightsError> {
    use std::io::Write;
    let fail = |reason: String| WeightsError::Download {
        url: url.to_string(),
        reason,
    };
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
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
    let response = request
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .map_err(|e| fail(e.to_string()))?;
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
    let total = length.map(|l| l + if resumed { have } else { 0 });
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
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = if resumed { have } else { 0 };
    let mut last_draw = std::time::Instant::now();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = file.sync_all();
                if progress {
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
        file.write_all(&buf[..n]).map_err(|e| io_err(partial, e))?;
        done += n as u64;
        if progress && last_draw.elapsed().as_millis() >= 200 {
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
    if progress {
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

//! Known pretrained weights: where they come from, what they fit, how to preprocess for them,
//! and a download cache that verifies what it stores.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use alexvgg_models::{AlexNetVariant, Architecture, VggDepth};
use sha2::{Digest, Sha256};

use crate::preprocess::Preset;

/// Environment variable overriding the cache directory.
pub const CACHE_ENV: &str = "ALEXVGG_CACHE";
/// Environment variable overriding where known weights are downloaded from (a mirror: the
/// file name is appended), e.g. for an air-gapped machine or tests.
pub const MIRROR_ENV: &str = "ALEXVGG_MIRROR";

/// A published weight file.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsEntry {
    /// Name on the command line.
    pub name: &'static str,
    /// File name in the cache.
    pub file: &'static str,
    /// Where it is published.
    pub url: &'static str,
    /// Hex SHA-256 (or its published prefix), where one is published.
    pub sha256: Option<&'static str>,
    /// Network the file fits.
    pub arch: Architecture,
    /// Preprocessing the weights were trained with.
    pub preset: Preset,
    /// Published accuracy (top-1, top-5 %), where known.
    pub accuracy: Option<(f32, f32)>,
    /// Where the weights come from.
    pub source: &'static str,
}

/// The weights the study note and the field use.
pub fn known() -> Vec<WeightsEntry> {
    vec![
        WeightsEntry {
            name: "bvlc_alexnet",
            file: "bvlc_alexnet.npy",
            url: "http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy",
            sha256: None,
            arch: Architecture::AlexNet(AlexNetVariant::Tf),
            preset: Preset::Caffe,
            accuracy: Some((57.1, 80.2)),
            source: "BVLC Caffe AlexNet converted by caffe-tensorflow (Guerzhoy), as the note ran it",
        },
        WeightsEntry {
            name: "vgg16_frossard",
            file: "vgg16_weights.npz",
            url: "https://www.cs.toronto.edu/~frossard/vgg16/vgg16_weights.npz",
            sha256: None,
            arch: Architecture::Vgg {
                depth: VggDepth::Vgg16,
                batch_norm: false,
            },
            preset: Preset::Frossard,
            accuracy: None,
            source: "VGG16 (Simonyan & Zisserman) converted to TensorFlow by Davi Frossard, as the note ran it",
        },
        WeightsEntry {
            name: "alexnet_torchvision",
            file: "alexnet-owt-7be5be79.pth",
            url: "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            sha256: Some("7be5be79"),
            arch: Architecture::AlexNet(AlexNetVariant::Torchvision),
            preset: Preset::Torchvision,
            accuracy: Some((56.522, 79.066)),
            source: "torchvision's AlexNet (one weird trick), IMAGENET1K_V1",
        },
        WeightsEntry {
            name: "vgg16_torchvision",
            file: "vgg16-397923af.pth",
            url: "https://download.pytorch.org/models/vgg16-397923af.pth",
            sha256: Some("397923af"),
            arch: Architecture::Vgg {
                depth: VggDepth::Vgg16,
                batch_norm: false,
            },
            preset: Preset::Torchvision,
            accuracy: Some((71.592, 90.382)),
            source: "torchvision's VGG16, IMAGENET1K_V1",
        },
    ]
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
    known().into_iter().find(|w| w.arch == *arch)
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
    #[error(
        "{file}: SHA-256 {found} does not match the published {expected}; the download was discarded"
    )]
    Checksum {
        /// File name.
        file: String,
        /// Published hash or prefix.
        expected: String,
        /// Computed hash.
        found: String,
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
/// if any), else a known name, fetched into the cache on first use.
///
/// # Errors
/// [`WeightsError`] for unknown names and failed downloads.
pub fn resolve(spec: &str) -> Result<(PathBuf, Option<WeightsEntry>), WeightsError> {
    let path = Path::new(spec);
    if path.exists() {
        let entry = path.file_name().and_then(|f| {
            known()
                .into_iter()
                .find(|w| std::ffi::OsStr::new(w.file) == f)
        });
        return Ok((path.to_path_buf(), entry));
    }
    let entry = known()
        .into_iter()
        .find(|w| w.name == spec)
        .ok_or_else(|| {
            WeightsError::Unknown(
                spec.to_string(),
                known()
                    .iter()
                    .map(|w| w.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
    let path = fetch(&entry)?;
    Ok((path, Some(entry)))
}

/// Returns the cached file of `entry`, downloading it first if needed (to a temporary file,
/// verified, then renamed, so the cache never holds a partial or unverified file).
///
/// # Errors
/// [`WeightsError`] for network, checksum and file-system failures.
pub fn fetch(entry: &WeightsEntry) -> Result<PathBuf, WeightsError> {
    let dir = cache_dir()?;
    let target = dir.join(entry.file);
    if target.exists() {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir).map_err(|e| WeightsError::Io {
        path: dir.clone(),
        source: e,
    })?;
    let url = match std::env::var(MIRROR_ENV) {
        Ok(m) if !m.is_empty() => format!("{}/{}", m.trim_end_matches('/'), entry.file),
        _ => entry.url.to_string(),
    };
    let partial = dir.join(format!("{}.partial-{}", entry.file, std::process::id()));
    let result = download(&url, &partial, entry);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result?;
    std::fs::rename(&partial, &target).map_err(|e| WeightsError::Io {
        path: target.clone(),
        source: e,
    })?;
    Ok(target)
}

fn download(url: &str, partial: &Path, entry: &WeightsEntry) -> Result<(), WeightsError> {
    let fail = |reason: String| WeightsError::Download {
        url: url.to_string(),
        reason,
    };
    eprintln!("downloading {} from {url}", entry.name);
    let response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut reader = response.into_body().into_reader();
    let mut file = std::fs::File::create(partial).map_err(|e| WeightsError::Io {
        path: partial.to_path_buf(),
        source: e,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| WeightsError::Io {
            path: partial.to_path_buf(),
            source: e,
        })?;
    }
    file.sync_all().map_err(|e| WeightsError::Io {
        path: partial.to_path_buf(),
        source: e,
    })?;
    let found: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(expected) = entry.sha256
        && !found.starts_with(expected)
    {
        return Err(WeightsError::Checksum {
            file: entry.file.to_string(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

//! The output directory of a fine-tuning run, and reading it back as a model.
//!
//! ```text
//! OUT/config.json     settings, architecture, shape, preprocessing, class names
//! OUT/labels.txt      class names, one per line (`alexvgg classify --labels` format)
//! OUT/best.bpk        weights of the epoch with the best validation top-1
//! OUT/last.bpk        latest checkpoint; its metadata holds the run's progress
//! OUT/optimizer-N.bpk optimizer state belonging to last.bpk (step N)
//! OUT/metrics.jsonl   one JSON object per epoch
//! OUT/metrics.csv     the same as CSV
//! ```
//! Every file is written to a temporary name and renamed into place.

use std::path::{Path, PathBuf};

use alexvgg_models::{Architecture, NetworkShape};

use super::FinetuneError;
use super::run::RunConfig;
use crate::preprocess::Preset;

/// File names inside an output directory.
pub(crate) const CONFIG: &str = "config.json";
pub(crate) const LABELS: &str = "labels.txt";
pub(crate) const BEST: &str = "best.bpk";
pub(crate) const LAST: &str = "last.bpk";
pub(crate) const METRICS_JSONL: &str = "metrics.jsonl";
pub(crate) const METRICS_CSV: &str = "metrics.csv";

/// What `config.json` holds.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Manifest {
    /// Architecture name (`alexnet-tf`, `vgg16`...).
    pub architecture: String,
    /// Classes, fc6/fc7 width and channel divisor of the trained network.
    pub shape: NetworkShape,
    /// Preprocessing used for evaluation (the starting weights').
    pub preprocess: Preset,
    /// Input side.
    pub input_size: usize,
    /// Class names in index order.
    pub classes: Vec<String>,
    /// The settings of the run.
    pub run: RunConfig,
    /// alexvgg version that wrote it.
    pub version: String,
}

/// A fine-tuned network on disk, as `classify` and `layers` take it.
#[derive(Clone, Debug)]
pub struct FinetunedModel {
    /// Architecture.
    pub arch: Architecture,
    /// Shape of the trained network.
    pub shape: NetworkShape,
    /// Evaluation preprocessing.
    pub preset: Preset,
    /// Class names.
    pub classes: Vec<String>,
    /// The best checkpoint (or the last, if no epoch has finished yet).
    pub weights: PathBuf,
}

/// Reads a fine-tuning output directory; `None` when `dir` is not one (no `config.json`).
///
/// # Errors
/// [`FinetuneError::Checkpoint`] for an unreadable or inconsistent directory.
pub fn open_finetuned(dir: &Path) -> Result<Option<FinetunedModel>, FinetuneError> {
    if !dir.is_dir() || !dir.join(CONFIG).is_file() {
        return Ok(None);
    }
    let m = read_manifest(dir)?;
    let arch = Architecture::parse(&m.architecture).map_err(|e| FinetuneError::Checkpoint {
        path: dir.join(CONFIG),
        reason: e.to_string(),
    })?;
    let weights = [BEST, LAST]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| FinetuneError::Checkpoint {
            path: dir.to_path_buf(),
            reason: "no checkpoint yet (neither best.bpk nor last.bpk)".to_string(),
        })?;
    Ok(Some(FinetunedModel {
        arch,
        shape: m.shape,
        preset: m.preprocess,
        classes: m.classes,
        weights,
    }))
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest, FinetuneError> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| FinetuneError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| FinetuneError::Checkpoint {
        path,
        reason: e.to_string(),
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FinetuneError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).map_err(|e| FinetuneError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        FinetuneError::io(path, e)
    })
}

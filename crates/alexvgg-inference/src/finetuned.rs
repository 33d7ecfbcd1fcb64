//! A fine-tuning output directory read back as a model (`alexvgg-train` writes it).
//!
//! ```text
//! OUT/config.json     the model card (architecture, shape, preprocessing, class names) and,
//!                     beside it, the run's settings
//! OUT/labels.txt      class names, one per line (`alexvgg classify --labels` format)
//! OUT/best.bpk        weights of the epoch with the best validation top-1
//! OUT/last.bpk        latest checkpoint; its metadata holds the run's progress
//! OUT/metrics.jsonl   one JSON object per epoch (and metrics.csv, the same as CSV)
//! OUT/curves.png      loss and top-1 per epoch ([`crate::plot`])
//! ```

use std::path::{Path, PathBuf};

use alexvgg_models::{Architecture, NetworkShape};

use crate::preprocess::Preset;

/// The model card file of an output directory.
pub const CONFIG: &str = "config.json";
/// The class names file of an output directory.
pub const LABELS: &str = "labels.txt";
/// The best checkpoint of an output directory.
pub const BEST: &str = "best.bpk";
/// The latest checkpoint of an output directory.
pub const LAST: &str = "last.bpk";
/// The per-epoch metrics of an output directory, one JSON object a line.
pub const METRICS_JSONL: &str = "metrics.jsonl";
/// The per-epoch metrics of an output directory as CSV.
pub const METRICS_CSV: &str = "metrics.csv";
/// The training curves of an output directory ([`crate::plot`]).
pub const CURVES: &str = "curves.png";

/// What inference needs to know of a fine-tuned network: the part of `config.json` that
/// describes the model (the training crate adds the run's settings beside it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelCard {
    /// Architecture (stored by name: `alexnet-tf`, `vgg16`...).
    #[serde(with = "alexvgg_models::arch::by_name")]
    pub architecture: Architecture,
    /// Classes, fc6/fc7 width and channel divisor of the trained network.
    pub shape: NetworkShape,
    /// Preprocessing used for evaluation (the starting weights').
    pub preprocess: Preset,
    /// Input side.
    pub input_size: usize,
    /// Class names in index order.
    pub classes: Vec<String>,
    /// alexvgg version that wrote it.
    pub version: String,
}

/// A fine-tuned network on disk, as `classify` and `layers` take it.
#[derive(Clone, Debug)]
pub struct FinetunedModel {
    /// The model card.
    pub card: ModelCard,
    /// The best checkpoint (or the last, if no epoch has finished yet).
    pub weights: PathBuf,
}

/// `config.json` as far as inference reads it: the model card, and whether the run stores a
/// checksum in every checkpoint (runs of older versions do not).
#[derive(serde::Deserialize)]
struct CardFile {
    #[serde(flatten)]
    card: ModelCard,
    #[serde(default)]
    checksums: bool,
}

/// Errors reading a fine-tuning output directory.
#[derive(Debug, thiserror::Error)]
pub enum FinetunedError {
    /// An unreadable file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A directory that cannot be used.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An unreadable checkpoint.
    #[error(transparent)]
    Import(#[from] alexvgg_import::ImportError),
}

/// Whether `dir` is a fine-tuning output directory (it has a `config.json`).
pub fn is_finetuned(dir: &Path) -> bool {
    dir.is_dir() && dir.join(CONFIG).is_file()
}

/// Reads the model card of the output directory `dir`.
///
/// # Errors
/// [`FinetunedError`] for a missing or unreadable `config.json`.
pub fn read_card(dir: &Path) -> Result<ModelCard, FinetunedError> {
    read_card_file(dir).map(|f| f.card)
}

fn read_card_file(dir: &Path) -> Result<CardFile, FinetunedError> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|source| FinetunedError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| FinetunedError::Invalid {
        path,
        reason: e.to_string(),
    })
}

/// Reads a fine-tuning output directory; `None` when `dir` is not one (no `config.json`).
///
/// The checkpoint's content is verified against its checksum when it is read
/// ([`alexvgg_import::read_burnpack`]); here, a checkpoint of a run that stores checksums
/// must hold one (a file without it was replaced or damaged).
///
/// # Errors
/// [`FinetunedError`] for an unreadable or inconsistent directory.
pub fn open_finetuned(dir: &Path) -> Result<Option<FinetunedModel>, FinetunedError> {
    if !is_finetuned(dir) {
        return Ok(None);
    }
    let CardFile { card, checksums } = read_card_file(dir)?;
    let weights = [BEST, LAST]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| FinetunedError::Invalid {
            path: dir.to_path_buf(),
            reason: "no checkpoint yet (neither best.bpk nor last.bpk)".to_string(),
        })?;
    if checksums
        && !alexvgg_import::read_burnpack_metadata(&weights)?
            .contains_key(alexvgg_import::native::META_CHECKSUM)
    {
        return Err(FinetunedError::Invalid {
            path: weights,
            reason: format!(
                "corrupt: no checksum in its metadata, though its run ({CONFIG}) stores one with \
                 every checkpoint; the file was replaced or damaged"
            ),
        });
    }
    Ok(Some(FinetunedModel { card, weights }))
}

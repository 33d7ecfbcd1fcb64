//! The output directory of a fine-tuning run (see [`alexvgg_inference::finetuned`] for the
//! files that inference reads back):
//!
//! ```text
//! OUT/config.json     model card (architecture, shape, preprocessing, classes) + settings
//! OUT/labels.txt      class names, one per line (`alexvgg classify --labels` format)
//! OUT/best.bpk        weights of the epoch with the best validation top-1
//! OUT/last.bpk        latest checkpoint; its metadata holds the run's progress
//! OUT/optimizer-N.bpk optimizer state belonging to last.bpk (step N)
//! OUT/metrics.jsonl   one JSON object per epoch
//! OUT/metrics.csv     the same as CSV
//! ```
//! Every file is written to a temporary name and renamed into place.

use std::path::Path;

pub(crate) use alexvgg_inference::finetuned::{BEST, CONFIG, LABELS, LAST};
use alexvgg_inference::finetuned::{CONFIG as CONFIG_FILE, ModelCard};

use crate::config::RunConfig;
use crate::error::FinetuneError;

pub(crate) const METRICS_JSONL: &str = "metrics.jsonl";
pub(crate) const METRICS_CSV: &str = "metrics.csv";

/// What `config.json` holds: the model card inference reads, and the run's settings.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Manifest {
    /// The trained network, as `alexvgg classify` reads it back.
    #[serde(flatten)]
    pub card: ModelCard,
    /// The settings of the run.
    pub run: RunConfig,
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest, FinetuneError> {
    let path = dir.join(CONFIG_FILE);
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

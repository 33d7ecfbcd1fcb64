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
//! OUT/curves.png      loss and top-1 per epoch, redrawn after every epoch
//! ```
//! Every file is written to a temporary name and renamed into place. Each checkpoint
//! (`best.bpk`, `last.bpk`) carries a SHA-256 of its tensors and of its fine-tuning metadata
//! ([`checkpoint_checksum`]), which every reader verifies (`--resume`, `classify`), and
//! `last.bpk` the SHA-256 of its optimizer file, which `--resume` verifies.

use std::path::Path;

use alexvgg_import::TensorMap;
use sha2::{Digest, Sha256};

pub(crate) use alexvgg_inference::finetuned::{
    BEST, CONFIG, CURVES, LABELS, LAST, METRICS_CSV, METRICS_JSONL,
};
use alexvgg_inference::finetuned::{CONFIG as CONFIG_FILE, ModelCard};

use crate::config::RunConfig;
use crate::error::FinetuneError;

/// The checksum of a checkpoint: one implementation, in the import crate (burnpack is its
/// format, and every reader of a checkpoint verifies it there).
pub use alexvgg_import::checkpoint_checksum;
/// Metadata key of a checkpoint's SHA-256 ([`checkpoint_checksum`]).
pub(crate) use alexvgg_import::native::META_CHECKSUM as META_SHA256;

/// What `config.json` holds: the model card inference reads, and the run's settings.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Manifest {
    /// The trained network, as `alexvgg classify` reads it back.
    #[serde(flatten)]
    pub card: ModelCard,
    /// The settings of the run.
    pub run: RunConfig,
    /// Images found when the run started (absent in runs of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImageCounts>,
    /// Whether every checkpoint of the run carries a checksum (false in runs of older
    /// versions, whose checkpoints are resumed unchecked).
    #[serde(default)]
    pub checksums: bool,
}

/// Training and validation images of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ImageCounts {
    pub train: usize,
    pub val: usize,
}

/// Reads `dir/config.json`: `Ok(None)` when there is none, an error naming the file when it
/// cannot be read or is not a run's manifest.
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<Manifest>, FinetuneError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FinetuneError::io(&path, e)),
    };
    let corrupt = |e: String| FinetuneError::Checkpoint {
        path: path.clone(),
        reason: format!("corrupt: not a fine-tuning run's config.json ({e})"),
    };
    let text = String::from_utf8(text).map_err(|e| corrupt(e.to_string()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// Whether `name` is a file that a run writes in its output directory (final or temporary).
pub(crate) fn is_run_file(name: &str) -> bool {
    let temporary = |n: &str| {
        n.strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
            .is_some_and(|n| [CONFIG_FILE, LABELS, METRICS_JSONL, METRICS_CSV, CURVES].contains(&n))
    };
    [
        CONFIG_FILE,
        LABELS,
        BEST,
        LAST,
        METRICS_JSONL,
        METRICS_CSV,
        CURVES,
    ]
    .contains(&name)
        || ["best.partial", "last.partial"].contains(&name)
        || temporary(name)
        || (name.starts_with("optimizer-")
            && [".bpk", ".partial", ".partial.bpk"]
                .iter()
                .any(|ext| name.ends_with(ext)))
}

/// Whether `name` is a temporary file a run leaves behind when it is killed.
pub(crate) fn is_run_temporary(name: &str) -> bool {
    is_run_file(name) && name.contains(".partial")
}

/// The SHA-256 (lowercase hex) of a file's bytes.
pub(crate) fn file_sha256(path: &Path) -> Result<String, FinetuneError> {
    let mut file = std::fs::File::open(path).map_err(|e| FinetuneError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).map_err(|e| FinetuneError::io(path, e))?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first tensor of `tensors` holding a NaN or an infinity, with its count of such values.
pub(crate) fn first_non_finite(tensors: &TensorMap) -> Option<(&str, usize)> {
    tensors.iter().find_map(|(name, t)| {
        let bad = t.data.iter().filter(|v| !v.is_finite()).count();
        (bad > 0).then_some((name.as_str(), bad))
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FinetuneError> {
    Ok(alexvgg_import::write_bytes_atomic(path, bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_files_are_recognised_and_others_are_not() {
        for ours in [
            "config.json",
            "labels.txt",
            "best.bpk",
            "last.bpk",
            "metrics.csv",
            "curves.png",
            ".curves.png.partial",
            "optimizer-00000012.bpk",
            ".config.json.partial",
            "last.partial",
            "optimizer-00000012.partial",
        ] {
            assert!(is_run_file(ours), "{ours}");
        }
        for theirs in [
            "notes.txt",
            "best.bpk.bak",
            "config.json~",
            ".labels.txt.swp",
        ] {
            assert!(!is_run_file(theirs), "{theirs}");
        }
        assert!(is_run_temporary("last.partial") && !is_run_temporary("last.bpk"));
    }

    #[test]
    fn manifests_of_older_runs_still_read() {
        let dir = std::env::temp_dir().join(format!("alexvgg-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read_manifest(&dir).unwrap().is_none());
        // as written before image counts and checksums were recorded
        let old = r#"{"architecture":"alexnet-tf","shape":{"num_classes":2,"hidden":32,"width_divisor":8},
            "preprocess":"caffe","input_size":227,"classes":["a","b"],"version":"0.1.0",
            "run":{"architecture":"alexnet-tf","weights":null,"data":"dsk","val":{"split":0.25},
            "epochs":1,"batch_size":4,"lr":0.01,"optimizer":{"kind":"sgd","momentum":0.9,"weight_decay":0.0},
            "schedule":"constant","freeze":"none","seed":5,"augment":null,"dropout":null,
            "preprocess":null,"hidden":32,"width_divisor":8,"checkpoint_every":0}}"#;
        std::fs::write(dir.join(CONFIG_FILE), old).unwrap();
        let m = read_manifest(&dir).unwrap().unwrap();
        assert!(!m.checksums && m.images.is_none());
        std::fs::write(dir.join(CONFIG_FILE), &old[..40]).unwrap();
        let err = read_manifest(&dir).unwrap_err().to_string();
        assert!(err.contains("config.json: corrupt"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

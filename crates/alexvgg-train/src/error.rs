//! The errors of fine-tuning.

use std::path::{Path, PathBuf};

/// Errors of fine-tuning.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// A data folder that cannot be used.
    #[error("{path}: {reason}")]
    Data {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A bad setting: `setting` names the [`RunConfig`](crate::RunConfig) field (`epochs`, `batch_size`,
    /// `freeze`...), which the command line shows as its flag.
    #[error("{setting}: {reason}")]
    Setting {
        /// The [`RunConfig`](crate::RunConfig) field.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// A file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A checkpoint or output directory that cannot be used.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading or writing weights.
    #[error(transparent)]
    Import(#[from] alexvgg_import::ImportError),
    /// Building the network.
    #[error(transparent)]
    Model(#[from] alexvgg_models::ModelError),
    /// Loading the starting weights.
    #[error(transparent)]
    Pretrained(#[from] alexvgg_inference::pretrained::PretrainedError),
    /// Reading a fine-tuning output directory.
    #[error(transparent)]
    Finetuned(#[from] alexvgg_inference::finetuned::FinetunedError),
    /// Drawing the training curves.
    #[error(transparent)]
    Plot(#[from] alexvgg_inference::plot::PlotError),
    /// Writing run records as JSON.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The frozen layers' forward pass (run without autodiff, see
    /// [`Trainer::with_engine`](crate::Trainer::with_engine)) failed.
    #[error("the frozen layers' forward pass failed: {0}")]
    FrozenPrefix(String),
    /// Reading the model's outputs back to the host.
    #[error(transparent)]
    HostValues(alexvgg_models::ModelError),
    /// Training produced a non-finite loss or non-finite weights. The step that produced them
    /// was not applied or not saved; the last checkpoint written before it is kept.
    #[error("training diverged{at}: {what}{kept}; try a lower learning rate")]
    Diverged {
        /// Where (` at epoch E, step S`), or empty where the caller does not know.
        at: String,
        /// What was not finite (`the loss is NaN`...).
        what: String,
        /// What was kept (`; stopped there, keeping the last good checkpoint DIR/last.bpk`), or
        /// empty.
        kept: String,
    },
    /// Settings whose estimated memory exceeds the limit: `setting` names the
    /// [`RunConfig`](crate::RunConfig) field most responsible (`hidden`, `batch_size`).
    #[error("{setting}: {reason}")]
    TooLarge {
        /// The [`RunConfig`](crate::RunConfig) field.
        setting: &'static str,
        /// What it would need and the limit.
        reason: String,
    },
}

impl FinetuneError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

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
    /// Writing run records as JSON.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading the model's outputs back to the host.
    #[error(transparent)]
    HostValues(alexvgg_models::ModelError),
}

impl FinetuneError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

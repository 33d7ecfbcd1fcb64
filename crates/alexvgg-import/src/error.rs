//! Typed errors of the importer.

use std::path::PathBuf;

/// Everything that can go wrong reading or applying a weight file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The content is malformed or truncated.
    #[error("{what} is corrupt: {reason}")]
    Corrupt {
        /// File or tensor concerned.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A format this importer cannot read.
    #[error("{what}: unsupported {reason}")]
    Unsupported {
        /// File or tensor concerned.
        what: String,
        /// What is not supported.
        reason: String,
    },
    /// A pickle asked for a global outside the allow-list (nothing is ever executed).
    #[error(
        "{file}: pickle refers to forbidden global '{global}'; only numpy array reconstruction is allowed"
    )]
    ForbiddenGlobal {
        /// The file.
        file: String,
        /// `module.name` of the global.
        global: String,
    },
    /// The file holds weights of another network than the one asked for.
    #[error("{file}: this looks like {found} weights; you asked for {wanted}")]
    WrongNetwork {
        /// The file.
        file: String,
        /// What the file seems to hold.
        found: String,
        /// What the caller asked for.
        wanted: String,
    },
    /// A module parameter's values could not be read back to the host.
    #[error("cannot read the values of parameter {key}: {reason}")]
    Values {
        /// The parameter's module path.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// Keys or shapes do not fit the model.
    #[error("{file}: weights do not fit {model}:{details}")]
    Mismatch {
        /// The file.
        file: String,
        /// The model description.
        model: String,
        /// One line per missing key, unexpected key and shape mismatch.
        details: String,
    },
}

impl ImportError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A corruption error.
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

//! Typed errors of the importer.
//!
//! Names in messages come from files (layer names, member names, pickle globals, paths): every
//! message escapes their control characters with [`escape`], so a hostile name cannot move the
//! cursor, recolour or rewrite the user's terminal.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// `text` with control characters (C0, DEL, C1) and Unicode direction overrides escaped as
/// Rust writes them (`\n`, `\u{1b}`, `\u{202e}`); anything else, quotes included, unchanged.
pub fn escape(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn path_text(path: &Path) -> String {
    escape(&path.display().to_string()).into_owned()
}

/// Everything that can go wrong reading or applying a weight file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path_text(.path))]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The content is malformed or truncated.
    #[error("{} is corrupt: {}", escape(.what), escape(.reason))]
    Corrupt {
        /// File or tensor concerned.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A format this importer cannot read.
    #[error("{}: unsupported {}", escape(.what), escape(.reason))]
    Unsupported {
        /// File or tensor concerned.
        what: String,
        /// What is not supported.
        reason: String,
    },
    /// A pickle asked for a global outside the allow-list (nothing is ever executed).
    #[error(
        "{}: pickle refers to forbidden global '{}'; only numpy array reconstruction is allowed",
        escape(.file),
        escape(.global)
    )]
    ForbiddenGlobal {
        /// The file.
        file: String,
        /// `module.name` of the global.
        global: String,
    },
    /// The file holds weights of another network than the one asked for.
    #[error("{}: this looks like {found} weights; you asked for {wanted}", escape(.file))]
    WrongNetwork {
        /// The file.
        file: String,
        /// What the file seems to hold.
        found: String,
        /// What the caller asked for.
        wanted: String,
    },
    /// A module parameter's values could not be read back to the host.
    #[error("cannot read the values of parameter {key}: {}", escape(.reason))]
    Values {
        /// The parameter's module path.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// A tensor of a weight file is not floating point.
    #[error("{}: tensor '{}' has dtype {dtype}, expected float", escape(.file), escape(.tensor))]
    NotFloat {
        /// The file.
        file: String,
        /// The tensor's name in the file.
        tensor: String,
        /// Its element type (`int32`, `int64`...).
        dtype: String,
    },
    /// A weight is NaN or infinite: refused at load rather than producing NaN (or, through
    /// ReLU and max-pooling, plausible-looking) outputs.
    #[error(
        "{}: tensor '{}' holds {count} non-finite value(s) (NaN or infinity), the first {first} at index {index}; weights must be finite",
        escape(.file),
        escape(.tensor)
    )]
    NonFinite {
        /// The file.
        file: String,
        /// The tensor's name in the file.
        tensor: String,
        /// How many of its values are NaN or infinite.
        count: usize,
        /// The first such value.
        first: f32,
        /// Its index in row-major order.
        index: usize,
    },
    /// Keys or shapes do not fit the model.
    #[error("{}: weights do not fit {model}:{details}", escape(.file))]
    Mismatch {
        /// The file.
        file: String,
        /// The model description.
        model: String,
        /// One line per missing key, unexpected key and shape mismatch (names from the file
        /// already [`escape`]d).
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

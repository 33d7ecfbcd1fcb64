//! One call from "these weights" to a ready model with its preprocessing and class list, as
//! torchvision's weights enums give: a known name (fetched on first use), a weight file, or a
//! fine-tuning output directory.

use std::path::{Path, PathBuf};

use alexvgg_import::{Format, ImportError, load_model};
use alexvgg_models::{AlexNetVariant, Architecture, Model, NetworkShape};
use burn::tensor::Device;

use crate::finetuned::{FinetunedError, open_finetuned};
use crate::labels::{Class, LabelsError, imagenet, read_labels};
use crate::preprocess::Preset;
use crate::weights::{self, WeightsEntry, WeightsError};

/// Errors of [`Pretrained::load`] and [`Pretrained::labels`].
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// No weights were named and the network has no known default.
    #[error("no default weights for {0}")]
    NoDefault(String),
    /// Resolving or fetching a known name.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Reading a fine-tuning output directory.
    #[error(transparent)]
    Finetuned(#[from] FinetunedError),
    /// Reading the weights into the network.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// An unreadable or malformed labels file.
    #[error("reading labels {path}: {source}")]
    Labels {
        /// The file.
        path: PathBuf,
        /// The error.
        source: LabelsError,
    },
    /// A class list whose length is not the network's number of classes.
    #[error("{origin} names {found} classes, but the network has {expected}")]
    LabelsCount {
        /// Where the names come from (a labels file, or the weights).
        origin: String,
        /// Names listed.
        found: usize,
        /// The network's classes.
        expected: usize,
    },
    /// Weights whose classes are not ImageNet's and not named anywhere.
    #[error("{path} has {classes} classes, not ImageNet's 1000, and names none")]
    UnknownClasses {
        /// The weight file.
        path: PathBuf,
        /// Its number of classes.
        classes: usize,
    },
}

/// A network loaded with its weights, and what belongs to those weights.
#[derive(Debug)]
pub struct Pretrained {
    /// The network.
    pub arch: Architecture,
    /// The model, on the device it was loaded to.
    pub model: Model,
    /// Its classes, fc6/fc7 width and channel divisor.
    pub shape: NetworkShape,
    /// The format of the file read.
    pub format: Format,
    /// The file read (for a known name, its converted burnpack in the cache when there is one).
    pub path: PathBuf,
    /// The known weights it came from, if any.
    pub entry: Option<WeightsEntry>,
    /// The preprocessing the weights expect.
    pub preset: Preset,
    /// The weights' own class names: a fine-tuning run's, or ImageNet's for 1000 outputs.
    pub classes: Option<Vec<Class>>,
}

impl Pretrained {
    /// Loads `weights` onto `device`:
    /// - `None`: `arch`'s default known weights ([`weights::default_for`]);
    /// - a fine-tuning output directory: its best checkpoint, its network, preprocessing and
    ///   classes (`arch` is ignored: the directory names its own);
    /// - an existing file: read into `arch` (with the known entry of the same file name, if any,
    ///   for its preprocessing); unknown files get [`weights::default_preset`];
    /// - a known name: fetched into the cache on first use, read into the entry's own network.
    ///
    /// # Errors
    /// [`PretrainedError`] for unknown names, failed downloads, unreadable directories and
    /// weights that do not fit the network.
    pub fn load(
        weights: Option<&str>,
        arch: Architecture,
        device: &Device,
    ) -> Result<Self, PretrainedError> {
        if let Some(dir) = weights.map(Path::new)
            && let Some(f) = open_finetuned(dir)?
        {
            let arch = f.card.architecture;
            let (model, shape, format) = load_model(&f.weights, &arch, device)?;
            let classes = f
                .card
                .classes
                .iter()
                .map(|label| Class {
                    synset: None,
                    label: label.clone(),
                })
                .collect();
            return Ok(Pretrained {
                arch,
                model,
                shape,
                format,
                path: f.weights,
                entry: None,
                preset: f.card.preprocess,
                classes: Some(classes),
            });
        }
        let name = match weights {
            Some(w) => w.to_string(),
            None => weights::default_for(&arch)
                .map(|e| e.name)
                .ok_or_else(|| PretrainedError::NoDefault(arch.describe()))?,
        };
        let (path, entry) = weights::resolve(&name)?;
        // a known name carries its network; a file is read into the network asked for
        let arch = match &entry {
            Some(e) if !Path::new(&name).exists() => e.architecture,
            _ => arch,
        };
        let (model, shape, format) = load_model(&path, &arch, device)?;
        let preset = entry
            .as_ref()
            .map_or_else(|| weights::default_preset(&arch, format), |e| e.preset);
        let classes = (shape.num_classes == 1000).then(imagenet);
        Ok(Pretrained {
            arch,
            model,
            shape,
            format,
            path,
            entry,
            preset,
            classes,
        })
    }

    /// The class names to report: `file` when given, else the weights' own. Either must name
    /// exactly the network's classes.
    ///
    /// # Errors
    /// [`PretrainedError::Labels`] for an unreadable or malformed file,
    /// [`PretrainedError::LabelsCount`] for a list of the wrong length,
    /// [`PretrainedError::UnknownClasses`] when neither names the classes.
    pub fn labels(&self, file: Option<&Path>) -> Result<Vec<Class>, PretrainedError> {
        let (classes, origin) = match (file, &self.classes) {
            (Some(path), _) => (
                read_labels(path).map_err(|source| PretrainedError::Labels {
                    path: path.to_path_buf(),
                    source,
                })?,
                format!("the labels file {}", path.display()),
            ),
            (None, Some(classes)) => (
                classes.clone(),
                format!("the class list of {}", self.path.display()),
            ),
            (None, None) => {
                return Err(PretrainedError::UnknownClasses {
                    path: self.path.clone(),
                    classes: self.shape.num_classes,
                });
            }
        };
        if classes.len() != self.shape.num_classes {
            return Err(PretrainedError::LabelsCount {
                origin,
                found: classes.len(),
                expected: self.shape.num_classes,
            });
        }
        Ok(classes)
    }

    /// A caution when the file's format belongs to another AlexNet than the one it runs as: a
    /// `.caffemodel` holds the Caffe network's weights (conv1 55x55, ceil pools), an `.npy` the
    /// note's TensorFlow graph's (SAME padding, conv1 57x57). The parameters have the same
    /// shapes, so either loads into the other network, but the activations differ.
    pub fn variant_note(&self) -> Option<String> {
        let (own, asked) = match (self.format, self.arch) {
            (Format::Caffemodel, Architecture::AlexNet(AlexNetVariant::Tf)) => ("caffe", "tf"),
            (Format::Npy, Architecture::AlexNet(AlexNetVariant::Caffe)) => ("tf", "caffe"),
            _ => return None,
        };
        Some(format!(
            "{} ({}) holds the weights of AlexNet's {own} variant; they run here in the {asked}              variant's network, whose padding and pooling differ (use --variant {own} for the              original network)",
            self.path.display(),
            self.format.name()
        ))
    }

    /// A name for reports: the known weights' name, else the file.
    pub fn name(&self) -> String {
        self.entry
            .as_ref()
            .map_or_else(|| self.path.display().to_string(), |e| e.name.clone())
    }
}

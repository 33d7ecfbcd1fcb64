//! The settings of a fine-tuning run: what `config.json` records and `--resume` reuses.

use std::path::PathBuf;

use alexvgg_inference::preprocess::{Augment, Preset};
use alexvgg_models::Architecture;

use crate::data::ValSource;
use crate::error::FinetuneError;

/// Every setting of a fine-tuning run (saved in `config.json`; `--resume` reuses it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    /// Architecture (stored by name: `alexnet-tf`, `vgg16`...).
    #[serde(with = "alexvgg_models::arch::by_name")]
    pub architecture: Architecture,
    /// Starting weights (a known name, a file, or a fine-tuning output directory); `None`
    /// trains from random initialisation.
    pub weights: Option<String>,
    /// Training folder, one sub-folder per class.
    pub data: PathBuf,
    /// Validation images.
    pub val: ValSource,
    /// Epochs.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Optimizer.
    pub optimizer: OptimizerSettings,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Frozen layers.
    pub freeze: Freeze,
    /// Seed of every random choice (head initialisation, order, augmentation, dropout).
    pub seed: u64,
    /// Training augmentation; `None` trains on the evaluation preprocessing.
    pub augment: Option<Augment>,
    /// Dropout probability of the classifier (`None`: the network's 0.5).
    pub dropout: Option<f64>,
    /// Preprocessing (`None`: the starting weights').
    pub preprocess: Option<Preset>,
    /// fc6/fc7 width when training from scratch (`None`: 4096).
    pub hidden: Option<usize>,
    /// Channel divisor when training from scratch (`None`: 1).
    pub width_divisor: Option<usize>,
    /// Also checkpoint every this many steps (0: at the end of each epoch only).
    pub checkpoint_every: usize,
}

/// Which layers keep their pretrained weights (no gradients, never updated).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freeze {
    /// Train everything.
    None,
    /// Freeze every convolution (and its BatchNorm): train the fully connected layers.
    Features,
    /// Freeze every layer up to and including the named one (`conv3`, `conv4_2`, `fc6`...).
    UpTo(String),
}

impl Freeze {
    /// Parses `none`, `features` or `up-to:LAYER`.
    ///
    /// # Errors
    /// [`FinetuneError::Setting`] naming `freeze`.
    pub fn parse(s: &str) -> Result<Self, FinetuneError> {
        match s {
            "none" => Ok(Freeze::None),
            "features" => Ok(Freeze::Features),
            _ => match s.strip_prefix("up-to:") {
                Some(layer) if !layer.is_empty() => Ok(Freeze::UpTo(layer.to_string())),
                _ => Err(FinetuneError::Setting {
                    setting: "freeze",
                    reason: format!("expected none, features or up-to:LAYER, got '{s}'"),
                }),
            },
        }
    }

    /// The module path prefixes (`convs.0.conv`, `features.3`, `fc6`...) this setting freezes
    /// in `arch`.
    ///
    /// # Errors
    /// [`FinetuneError::Setting`] for an unknown layer (listing the known ones) or for freezing
    /// the new head.
    pub fn prefixes(&self, arch: &Architecture) -> Result<Vec<String>, FinetuneError> {
        let layers = alexvgg_import::param_layers(arch);
        let names = || {
            layers
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let upto = match self {
            Freeze::None => return Ok(Vec::new()),
            Freeze::Features => layers
                .iter()
                .take_while(|(n, _)| n.starts_with("conv"))
                .count(),
            Freeze::UpTo(layer) => {
                let Some(i) = layers.iter().position(|(n, _)| n == layer) else {
                    return Err(FinetuneError::Setting {
                        setting: "freeze",
                        reason: format!(
                            "{} has no layer '{layer}' (layers: {})",
                            arch.describe(),
                            names()
                        ),
                    });
                };
                i + 1
            }
        };
        if upto >= layers.len() {
            return Err(FinetuneError::Setting {
                setting: "freeze",
                reason:
                    "freezing every layer leaves nothing to train (the new head is the last layer)"
                        .to_string(),
            });
        }
        Ok(layers.into_iter().take(upto).map(|(_, p)| p).collect())
    }
}

/// Optimizer algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// SGD with optional (heavy-ball, undampened) momentum, as PyTorch's `torch.optim.SGD`.
    Sgd,
    /// Adam with L2 weight decay added to the gradient, as PyTorch's `torch.optim.Adam`.
    Adam,
}

impl OptimizerKind {
    /// Every algorithm, in the order help lists them.
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Sgd, OptimizerKind::Adam];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        }
    }
}

/// Optimizer settings.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimizerSettings {
    /// Algorithm.
    pub kind: OptimizerKind,
    /// Momentum for SGD (0 for none); ignored by Adam.
    pub momentum: f64,
    /// L2 weight decay (0 for none).
    pub weight_decay: f64,
}

/// Learning rate over the run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Factor per decay.
        gamma: f64,
    },
    /// Cosine decay from the base rate to `min_lr` over all steps of the run.
    Cosine {
        /// Final rate.
        min_lr: f64,
    },
}

impl LrSchedule {
    /// The rate at `step` (0-based) of epoch `epoch`, for `steps_per_epoch` and `epochs`.
    pub fn rate(
        &self,
        base: f64,
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        epochs: usize,
    ) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { every, gamma } => base * gamma.powi((epoch / every.max(1)) as i32),
            LrSchedule::Cosine { min_lr } => {
                let total = (steps_per_epoch * epochs).max(1) as f64;
                let t = (epoch * steps_per_epoch + step) as f64 / total;
                min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alexvgg_models::{AlexNetVariant, VggDepth};

    #[test]
    fn freeze_settings_name_layers_of_the_architecture() {
        let alex = Architecture::AlexNet(AlexNetVariant::Tf);
        let vgg = Architecture::Vgg {
            depth: VggDepth::Vgg16,
            batch_norm: false,
        };
        assert!(Freeze::None.prefixes(&alex).unwrap().is_empty());
        assert_eq!(
            Freeze::Features.prefixes(&alex).unwrap(),
            (0..5)
                .map(|i| format!("convs.{i}.conv"))
                .collect::<Vec<_>>()
        );
        assert_eq!(Freeze::Features.prefixes(&vgg).unwrap().len(), 13);
        let upto = Freeze::parse("up-to:conv3_1")
            .unwrap()
            .prefixes(&vgg)
            .unwrap();
        assert_eq!(upto.last().unwrap(), "features.4");
        let fc6 = Freeze::parse("up-to:fc6").unwrap().prefixes(&alex).unwrap();
        assert_eq!(fc6.len(), 6);
        let err = Freeze::parse("up-to:conv9")
            .unwrap()
            .prefixes(&alex)
            .unwrap_err();
        assert!(err.to_string().contains("conv9") && err.to_string().contains("fc7"));
        assert!(Freeze::parse("up-to:fc8").unwrap().prefixes(&alex).is_err());
        assert!(Freeze::parse("some").is_err());
    }

    #[test]
    fn schedules() {
        let step = LrSchedule::Step {
            every: 2,
            gamma: 0.1,
        };
        assert_eq!(step.rate(1.0, 1, 5, 10, 6), 1.0);
        assert!((step.rate(1.0, 4, 0, 10, 6) - 0.01).abs() < 1e-12);
        let cos = LrSchedule::Cosine { min_lr: 0.0 };
        assert_eq!(cos.rate(2.0, 0, 0, 10, 4), 2.0);
        assert!((cos.rate(2.0, 2, 0, 10, 4) - 1.0).abs() < 1e-12);
        assert!(cos.rate(2.0, 3, 9, 10, 4) < 0.01);
    }
}

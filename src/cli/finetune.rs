//! `alexvgg finetune`: a new head for an image folder's classes, trained with the settings of
//! [`RunConfig`]; progress on stderr, one line (or JSON object) per epoch on stdout.

use std::io::IsTerminal;
use std::path::PathBuf;

use alexvgg_inference::device::{describe, make_device};
use alexvgg_inference::preprocess::{Augment, Preset};
use alexvgg_inference::runner::EngineKind;
use alexvgg_inference::weights::default_for;
use alexvgg_train::data::ValSource;
use alexvgg_train::memory::default_max_memory;
use alexvgg_train::{
    EpochMetrics, Event, FinetuneError, Freeze, LrSchedule, OptimizerKind, OptimizerSettings,
    RunConfig, RunOptions, run_with as run_finetune,
};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};

use super::{DeviceArgs, ModelArgs, choice};

/// The learning-rate schedules by name (their parameters are flags of their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Schedule {
    /// The base rate throughout.
    Constant,
    /// x --lr-gamma every --lr-step epochs.
    Step,
    /// Cosine decay to --min-lr.
    Cosine,
}

/// Fine-tune on an image folder (one sub-folder per class): new head, frozen layers,
/// augmentation, checkpoints, metrics; `--resume` continues an interrupted run.
#[derive(Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Starting weights: a known name, a file, a fine-tuning output directory, or `none`
    /// (random initialisation). Default: the architecture's known weights.
    #[arg(long)]
    weights: Option<String>,
    /// Training folder with one sub-folder per class (required unless --resume).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Validation folder with the same class sub-folders.
    #[arg(long, conflicts_with = "val_split")]
    val: Option<PathBuf>,
    /// Fraction of each class held out for validation when no --val is given.
    #[arg(long, default_value_t = 0.1)]
    val_split: f64,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Optimizer.
    #[arg(long, default_value = "sgd", value_parser = choice::<OptimizerKind>())]
    optimizer: OptimizerKind,
    /// SGD momentum (0 for none).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// L2 weight decay.
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "constant")]
    lr_schedule: Schedule,
    /// Epochs between decays of the step schedule (default: a third of the epochs).
    #[arg(long)]
    lr_step: Option<usize>,
    /// Decay factor of the step schedule.
    #[arg(long, default_value_t = 0.1)]
    lr_gamma: f64,
    /// Final rate of the cosine schedule.
    #[arg(long, default_value_t = 0.0)]
    min_lr: f64,
    /// none, features (every convolution), or up-to:LAYER (e.g. up-to:conv3, up-to:fc6).
    #[arg(long, default_value = "none", value_parser = parse_freeze)]
    freeze: Freeze,
    /// Seed of every random choice (head, order, augmentation, dropout).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on the evaluation preprocessing (no random crops, no flips).
    #[arg(long)]
    no_augment: bool,
    /// Smallest random crop, as a fraction of the image area.
    #[arg(long, default_value_t = 0.08)]
    crop_scale: f64,
    /// No horizontal flips.
    #[arg(long)]
    no_flip: bool,
    /// Dropout probability of the classifier (default: the network's 0.5).
    #[arg(long)]
    dropout: Option<f64>,
    /// Preprocessing preset (default: the starting weights').
    #[arg(long, value_parser = choice::<Preset>())]
    preprocess: Option<Preset>,
    /// fc6/fc7 width for --weights none.
    #[arg(long)]
    hidden: Option<usize>,
    /// Channel divisor for --weights none (reduced-width networks for experiments).
    #[arg(long)]
    width_divisor: Option<usize>,
    /// Also checkpoint every N steps (default: at the end of each epoch only).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    /// Output directory (checkpoints, config, labels, metrics).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out with its saved settings.
    #[arg(long)]
    resume: bool,
    /// Start even though --out is not empty: a run's files there (config.json, labels.txt,
    /// best.bpk, last.bpk, optimizer-*.bpk, metrics.*) are removed first, others are left.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Refuse settings whose estimated training memory (parameters, gradients, optimizer
    /// state and a batch's activations) exceeds this many GiB [default: the machine's
    /// memory, or 64 where it cannot be read].
    #[arg(long)]
    max_memory_gib: Option<u64>,
    #[command(flatten)]
    device: DeviceArgs,
    /// What computes a step: auto (on CPU backends the trained layers run the alexvgg-cpu
    /// kernels with hand-written backward passes under autodiff, and the frozen front of the
    /// network runs forward only on the CPU engine; on wgpu burn's layers, the frozen front in
    /// burn's inference form) or burn (burn's layers, every layer under autodiff; for A/B).
    /// Frozen BatchNorm and freezes reaching into the classifier keep the frozen front under
    /// autodiff.
    #[arg(long, default_value = "auto", value_parser = choice::<EngineKind>())]
    engine: EngineKind,
    /// Print each epoch's metrics as a JSON line on stdout.
    #[arg(long)]
    json: bool,
}

pub(super) fn parse_freeze(s: &str) -> Result<Freeze, String> {
    Freeze::parse(s).map_err(|e| match e {
        FinetuneError::Setting { reason, .. } => reason,
        e => e.to_string(),
    })
}

impl FinetuneArgs {
    fn run_config(&self) -> Result<RunConfig> {
        let arch = self.model.arch()?;
        let data = self
            .data
            .clone()
            .context("--data DIR is required (unless --resume)")?;
        let schedule = match self.lr_schedule {
            Schedule::Constant => LrSchedule::Constant,
            Schedule::Step => LrSchedule::Step {
                every: self.lr_step.unwrap_or((self.epochs / 3).max(1)),
                gamma: self.lr_gamma,
            },
            Schedule::Cosine => LrSchedule::Cosine {
                min_lr: self.min_lr,
            },
        };
        let weights = match self.weights.as_deref() {
            Some("none") => None,
            Some(w) => Some(w.to_string()),
            None => Some(default_for(&arch).map(|w| w.name).with_context(|| {
                let arch = arch.describe();
                format!("no default weights for {arch}; pass --weights NAME|FILE|none")
            })?),
        };
        if weights.is_some() && (self.hidden.is_some() || self.width_divisor.is_some()) {
            bail!(
                "--hidden and --width-divisor apply to --weights none only (the weights fix the shape)"
            );
        }
        Ok(RunConfig {
            architecture: arch,
            weights,
            data,
            val: match &self.val {
                Some(dir) => ValSource::Dir(dir.clone()),
                None => ValSource::Split(self.val_split),
            },
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            optimizer: OptimizerSettings {
                kind: self.optimizer,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
            },
            schedule,
            freeze: self.freeze.clone(),
            seed: self.seed,
            augment: (!self.no_augment).then(|| Augment {
                scale: (self.crop_scale, 1.0),
                flip: !self.no_flip,
                ..Augment::default()
            }),
            dropout: self.dropout,
            preprocess: self.preprocess,
            hidden: self.hidden,
            width_divisor: self.width_divisor,
            checkpoint_every: self.checkpoint_every,
        })
    }
}

/// Runs `alexvgg finetune`.
pub fn run(a: FinetuneArgs) -> Result<()> {
    let config = if a.resume {
        eprintln!(
            "resuming the run in {} with its saved settings ({}); other training flags are ignored",
            a.out.display(),
            a.out.join("config.json").display()
        );
        None
    } else {
        Some(a.run_config()?)
    };
    let (backend, dev) = make_device(a.device.device.as_deref())?;
    let terminal = std::io::stderr().is_terminal();
    let mut epochs_total = 0;
    // the first failure to write an epoch's line (a closed pipe ends the output quietly)
    let mut failed_output: Option<anyhow::Error> = None;
    let mut events = |e: Event<'_>| match e {
        Event::Started {
            epochs,
            train,
            val,
            classes,
            trainable,
            frozen,
            frozen_prefix,
            layer_kernels,
            resumed,
        } => {
            epochs_total = epochs;
            eprintln!(
                "{} classes, {train} training and {val} validation images; {trainable} parameter tensors trained, {frozen} frozen; on {}",
                classes.len(),
                describe(backend, &dev)
            );
            eprintln!(
                "trained layers: {layer_kernels}{}",
                if layer_kernels == "burn" {
                    ""
                } else {
                    " (--engine burn: burn's layers)"
                }
            );
            if let Some((layer, runner)) = frozen_prefix {
                eprintln!(
                    "the frozen layers up to {layer} run forward only ({runner}, no autodiff); --engine burn keeps them under autodiff"
                );
            }
            if let Some((epoch, step)) = resumed {
                eprintln!("resuming at epoch {epoch}, step {step}");
            }
        }
        Event::Step {
            epoch,
            step,
            steps,
            loss,
            images_per_s,
        } if terminal => eprint!(
            "\repoch {epoch}/{epochs_total} step {step}/{steps}  loss {loss:.4}  {images_per_s:.1} images/s   "
        ),
        Event::Step { .. } => {}
        Event::Skipped { path, reason } => {
            if terminal {
                eprintln!();
            }
            eprintln!("warning: skipped {}: {reason}", path.display());
        }
        Event::Epoch(m) => {
            if terminal {
                eprint!("\r");
            }
            let written = if a.json {
                serde_json::to_string(m)
                    .map_err(anyhow::Error::from)
                    .and_then(|line| super::write_stdout(format_args!("{line}\n")))
            } else {
                print_epoch(m)
            };
            if let Err(e) = written {
                failed_output.get_or_insert(e);
            }
        }
    };
    let options = RunOptions {
        overwrite: a.overwrite,
        max_memory: a
            .max_memory_gib
            .map_or_else(default_max_memory, |g| g.saturating_mul(1 << 30)),
        engine: a.engine,
    };
    let summary = run_finetune(config.as_ref(), &a.out, &dev, &options, &mut events)
        .map_err(|e| match e {
            FinetuneError::Setting { setting, reason } => {
                anyhow!("--{}: {reason}", setting.replace('_', "-"))
            }
            FinetuneError::TooLarge { setting, reason } => anyhow!(
                "--{}: {reason} (--max-memory-gib raises the limit)",
                setting.replace('_', "-")
            ),
            e => e.into(),
        })
        .with_context(|| format!("fine-tuning into {}", a.out.display()))?;
    if let Some(e) = failed_output {
        return Err(e);
    }
    let best = summary
        .history
        .iter()
        .filter(|m| m.best)
        .max_by_key(|m| m.epoch);
    if let Some(best) = best {
        eprintln!(
            "best: epoch {} with validation top-1 {:.1}%; model in {}",
            best.epoch,
            100.0 * best.val_top1,
            a.out.join("best.bpk").display()
        );
    }
    Ok(())
}

fn print_epoch(m: &EpochMetrics) -> Result<()> {
    super::write_stdout(format_args!(
        "epoch {:>3}  train loss {:.4} top-1 {:5.1}%  val loss {:.4} top-1 {:5.1}% top-5 {:5.1}%  {:7.1} images/s  lr {:.2e}  {:6.1} s{}\n",
        m.epoch,
        m.train_loss,
        100.0 * m.train_top1,
        m.val_loss,
        100.0 * m.val_top1,
        100.0 * m.val_top5,
        m.images_per_s,
        m.lr,
        m.seconds,
        if m.best { "  best" } else { "" }
    ))
}

//! The epoch loop of `alexvgg finetune`: training with prefetched batches, validation, metrics,
//! best/last checkpoints, and exact resumption.

use std::path::{Path, PathBuf};
use std::time::Instant;

use alexvgg_import::{
    Checksum, Metadata, TensorMap, load_module, module_tensors, read_burnpack_with_metadata,
    verify_checksum, write_tensors_with,
};
use alexvgg_models::{Architecture, Model, NetworkShape};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use alexvgg_inference::finetuned::ModelCard;
use alexvgg_inference::plot::{self, EpochPoint, curves_title};
use alexvgg_inference::preprocess::Preset;
use alexvgg_inference::pretrained::Pretrained;
use alexvgg_inference::rng::{derive, permutation};
use alexvgg_inference::runner::EngineKind;
use alexvgg_inference::weights::default_preset;

use crate::config::RunConfig;
use crate::data::{self, Dataset, Mode, Sample, ValSource};
use crate::error::FinetuneError;
use crate::memory::{default_max_memory, estimate, gib};
use crate::output::{
    BEST, CONFIG, CURVES, ImageCounts, LABELS, LAST, META_SHA256, METRICS_CSV, METRICS_JSONL,
    Manifest, checkpoint_checksum, file_sha256, first_non_finite, is_run_file, is_run_temporary,
    read_manifest, write_atomic,
};
use crate::trainer::Trainer;

/// Metadata key of the progress record in `last.bpk`.
const META_PROGRESS: &str = "alexvgg.finetune.progress";
/// Metadata key naming the optimizer file that belongs to `last.bpk`.
const META_OPTIMIZER: &str = "alexvgg.finetune.optimizer";
/// Metadata key of the SHA-256 of that optimizer file.
const META_OPTIMIZER_SHA256: &str = "alexvgg.finetune.optimizer_sha256";

// Streams of randomness, each derived from the seed and a position.
const RNG_INIT: u64 = 1;
const RNG_HEAD: u64 = 2;
const RNG_ORDER: u64 = 3;
const RNG_AUGMENT: u64 = 4;
const RNG_DROPOUT: u64 = 5;

/// One epoch's results, as logged in `metrics.jsonl` / `metrics.csv`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's images.
    pub train_loss: f64,
    /// Training top-1 accuracy (on augmented images, before each step's update).
    pub train_top1: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation top-1 accuracy.
    pub val_top1: f64,
    /// Validation top-5 accuracy (top-k with k = min(5, classes)).
    pub val_top5: f64,
    /// Training throughput (forward + backward + update, data loading overlapped).
    pub images_per_s: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall-clock seconds of the epoch including validation.
    pub seconds: f64,
    /// Whether this epoch produced `best.bpk`.
    pub best: bool,
}

/// Where a run is, recorded in `last.bpk`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Progress {
    /// 0-based epoch in progress.
    epoch: usize,
    /// Steps of that epoch already done.
    step: usize,
    /// Steps done in the whole run.
    global_step: usize,
    /// Running sums of the epoch in progress.
    loss_sum: f64,
    correct: usize,
    seen: usize,
    train_seconds: f64,
    epoch_seconds: f64,
    /// Finished epochs.
    history: Vec<EpochMetrics>,
}

/// What the run reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// Training starts (or resumes).
    Started {
        /// Epochs of the run.
        epochs: usize,
        /// Training images.
        train: usize,
        /// Validation images.
        val: usize,
        /// Class names.
        classes: &'a [String],
        /// Trainable parameter tensors.
        trainable: usize,
        /// Frozen parameter tensors.
        frozen: usize,
        /// Where the frozen layers run forward only, outside autodiff: the activation the
        /// trained layers start from, and what computes it (see
        /// [`Trainer::with_engine`]); `None` when every layer runs under autodiff.
        frozen_prefix: Option<(&'a str, &'static str)>,
        /// What computes the trained layers' convolutions, LRN, pools, fully connected and
        /// batch-norm layers ([`Trainer::layer_kernels`]).
        layer_kernels: &'static str,
        /// `(epoch, step)` resumed from (1-based epoch).
        resumed: Option<(usize, usize)>,
    },
    /// A training step finished.
    Step {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step in the epoch.
        step: usize,
        /// Steps per epoch.
        steps: usize,
        /// Running mean training loss of the epoch.
        loss: f64,
        /// Running training images per second of the epoch.
        images_per_s: f64,
    },
    /// An image could not be read and was skipped.
    Skipped {
        /// The file.
        path: &'a Path,
        /// Why.
        reason: &'a str,
    },
    /// An epoch finished.
    Epoch(&'a EpochMetrics),
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Every epoch's metrics.
    pub history: Vec<EpochMetrics>,
    /// The output directory.
    pub out: PathBuf,
    /// Class names.
    pub classes: Vec<String>,
}

/// How a run treats its output directory, and how much memory its settings may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Start even where `out` is not empty: in a directory holding another run, or files that
    /// are not a run's. The files a run writes (`config.json`, `labels.txt`, `best.bpk`,
    /// `last.bpk`, `optimizer-*.bpk`, `metrics.*`, `curves.png` and their temporary files) are removed
    /// first; other files are left alone. Without it, such a directory is refused.
    pub overwrite: bool,
    /// The most memory in bytes that the settings may need by [`crate::memory::estimate`]
    /// (default: the machine's memory, or 64 GiB where it cannot be read, see
    /// [`default_max_memory`]); larger settings are refused before anything is allocated.
    pub max_memory: u64,
    /// What computes a step ([`Trainer::with_engine`]): `auto` (default) runs the trained
    /// layers on the CPU training kernels and the frozen front forward only, outside autodiff,
    /// on the CPU engine (CPU backends); `burn` runs burn's layers, everything under autodiff.
    pub engine: EngineKind,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            overwrite: false,
            max_memory: default_max_memory(),
            engine: EngineKind::Auto,
        }
    }
}

/// Runs `config` into `out` on `device`; with `config` `None`, continues the run already in
/// `out` with its saved settings from its last checkpoint. [`run_with`] with the default
/// [`RunOptions`]: a non-empty `out` is refused when starting.
///
/// # Errors
/// See [`run_with`].
pub fn run(
    config: Option<&RunConfig>,
    out: &Path,
    device: &Device,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<RunSummary, FinetuneError> {
    run_with(config, out, device, &RunOptions::default(), events)
}

/// [`run`] with options.
///
/// Starting, the data and validation folders are recorded in `config.json` as absolute paths
/// with the number of images found; resuming checks that the folders still hold the run's
/// classes and image counts, and refuses a `last.bpk` or optimizer file whose checksum does
/// not match, or a `last.bpk` with NaN or infinite weights. Training stops with
/// [`FinetuneError::Diverged`] at the first non-finite loss (or non-finite weights at a
/// checkpoint), without saving that step: the last good checkpoint is kept.
///
/// # Errors
/// [`FinetuneError`] for bad data folders or settings, settings that would need more than
/// `options.max_memory`, unusable weights, an output directory that is not empty (when
/// starting, without `options.overwrite`), nothing to resume or a corrupt checkpoint, a
/// diverged run, and failed writes.
pub fn run_with(
    config: Option<&RunConfig>,
    out: &Path,
    device: &Device,
    options: &RunOptions,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<RunSummary, FinetuneError> {
    let ad = device.clone().autodiff();
    let (cfg, manifest, model, progress, dataset) = if let Some(config) = config {
        check_out(out, options.overwrite)?;
        check_settings(config)?;
        let arch = config.architecture;
        config.freeze.prefixes(&arch)?;
        let config = absolute(config)?;
        let dataset = data::open(&config.data, &config.val, config.seed)?;
        let planned = planned_shape(&config, dataset.classes.len());
        check_memory(&config, &planned, &dataset, options.max_memory)?;
        let (model, preset, shape) = start_model(&config, &arch, dataset.classes.len(), &ad)?;
        std::fs::create_dir_all(out).map_err(|e| FinetuneError::io(out, e))?;
        remove_run_files(out, options.overwrite)?;
        let manifest = Manifest {
            card: ModelCard {
                architecture: arch,
                shape,
                preprocess: preset,
                input_size: arch.input_size(),
                classes: dataset.classes.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
            run: config.clone(),
            images: Some(ImageCounts {
                train: dataset.train.len(),
                val: dataset.val.len(),
            }),
            checksums: true,
        };
        // config.json first: from then on the directory is a run that --resume continues
        write_atomic(&out.join(CONFIG), to_json(&manifest, true)?.as_bytes())?;
        write_labels(out, &dataset.classes)?;
        (config, manifest, model, None, dataset)
    } else {
        let Some(manifest) = read_manifest(out)? else {
            return Err(FinetuneError::Checkpoint {
                path: out.to_path_buf(),
                reason: "nothing to resume: no config.json from an earlier run".to_string(),
            });
        };
        let cfg = manifest.run.clone();
        // config.json may have been edited: the same checks as when starting
        check_settings(&cfg)?;
        let arch = cfg.architecture;
        let dataset = data::open(&cfg.data, &cfg.val, cfg.seed)?;
        check_same_data(&cfg, &manifest, &dataset)?;
        // the network as the model card has it, and as the settings would build it afresh
        check_memory(&cfg, &manifest.card.shape, &dataset, options.max_memory)?;
        let planned = planned_shape(&cfg, dataset.classes.len());
        check_memory(&cfg, &planned, &dataset, options.max_memory)?;
        if !out.join(LABELS).is_file() {
            write_labels(out, &manifest.card.classes)?;
        }
        let (model, progress) = match read_checkpoint(out, &manifest, &ad)? {
            Some((model, resumed)) => (model, Some(resumed)),
            None => (
                start_model(&cfg, &arch, manifest.card.classes.len(), &ad)?.0,
                None,
            ),
        };
        (cfg, manifest, model, progress, dataset)
    };
    let arch = cfg.architecture;
    let model = match cfg.dropout {
        Some(p) => model.with_dropout(p),
        None => model,
    };
    let mut trainer = Trainer::new(model, &arch, &cfg.optimizer, &cfg.freeze, &ad)?
        .with_engine(options.engine)?;
    let resumed = progress.is_some();
    let mut progress = match progress {
        Some((p, optimizer_file)) => {
            trainer.load_optimizer(&out.join(optimizer_file))?;
            p
        }
        None => Progress::default(),
    };
    events(Event::Started {
        epochs: cfg.epochs,
        train: dataset.train.len(),
        val: dataset.val.len(),
        classes: &dataset.classes,
        trainable: trainer.trainable().len(),
        frozen: trainer.frozen().len(),
        frozen_prefix: trainer.frozen_prefix(),
        layer_kernels: trainer.layer_kernels(),
        resumed: resumed.then_some((progress.epoch + 1, progress.step)),
    });
    let ctx = Context {
        cfg: &cfg,
        arch: &arch,
        shape: manifest.card.shape,
        preset: manifest.card.preprocess,
        out,
        dataset: &dataset,
    };
    while progress.epoch < cfg.epochs {
        train_epoch(&ctx, &mut trainer, &mut progress, &ad, events)?;
    }
    Ok(RunSummary {
        history: progress.history,
        out: out.to_path_buf(),
        classes: dataset.classes,
    })
}

struct Context<'a> {
    cfg: &'a RunConfig,
    arch: &'a Architecture,
    shape: NetworkShape,
    preset: Preset,
    out: &'a Path,
    dataset: &'a Dataset,
}

/// `value` as JSON (pretty for files people read).
fn to_json<T: serde::Serialize>(value: &T, pretty: bool) -> Result<String, FinetuneError> {
    let json = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    Ok(json?)
}

/// Refuses to start in a directory that is not empty, unless `overwrite`: one that holds a
/// run (resume it instead), a corrupt `config.json` (named), or somebody else's files.
fn check_out(out: &Path, overwrite: bool) -> Result<(), FinetuneError> {
    let entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) if out.exists() && !out.is_dir() => {
            return Err(FinetuneError::Checkpoint {
                path: out.to_path_buf(),
                reason: "exists and is not a directory".to_string(),
            });
        }
        Err(e) => return Err(FinetuneError::io(out, e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if overwrite {
        return Ok(());
    }
    let holds_run = "already holds a fine-tuning run: pass --resume to continue it, --overwrite to start a new one in its place, or choose another --out";
    match read_manifest(out) {
        Ok(Some(_)) => {
            return Err(FinetuneError::Checkpoint {
                path: out.to_path_buf(),
                reason: holds_run.to_string(),
            });
        }
        Err(FinetuneError::Checkpoint { path, reason }) => {
            return Err(FinetuneError::Checkpoint {
                path,
                reason: format!(
                    "{reason}; pass --overwrite to start a new run in its place, or choose another --out"
                ),
            });
        }
        Err(e) => return Err(e),
        Ok(None) => {}
    }
    if out.join(LAST).exists() {
        return Err(FinetuneError::Checkpoint {
            path: out.to_path_buf(),
            reason: holds_run.to_string(),
        });
    }
    let foreign: Vec<&String> = names.iter().filter(|n| !is_run_temporary(n)).collect();
    if !foreign.is_empty() {
        let mut list = foreign
            .iter()
            .take(3)
            .map(|n| format!("'{}'", n.escape_debug()))
            .collect::<Vec<_>>()
            .join(", ");
        if foreign.len() > 3 {
            list.push_str(&format!(" and {} more", foreign.len() - 3));
        }
        return Err(FinetuneError::Checkpoint {
            path: out.to_path_buf(),
            reason: format!(
                "is not empty ({list}) and holds no fine-tuning run: refusing to overwrite its files; choose a new or empty --out, or pass --overwrite"
            ),
        });
    }
    Ok(())
}

/// Removes the files a run writes from `out` (all of them with `overwrite`, else only the
/// temporary files a killed run left), so that nothing of an earlier run is resumed.
fn remove_run_files(out: &Path, overwrite: bool) -> Result<(), FinetuneError> {
    let entries = std::fs::read_dir(out).map_err(|e| FinetuneError::io(out, e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = if overwrite {
            is_run_file(&name)
        } else {
            is_run_temporary(&name)
        };
        if ours && e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(e.path()).map_err(|err| FinetuneError::io(&e.path(), err))?;
        }
    }
    Ok(())
}

fn write_labels(out: &Path, classes: &[String]) -> Result<(), FinetuneError> {
    write_atomic(&out.join(LABELS), (classes.join("\n") + "\n").as_bytes())
}

/// `config` with its data and validation folders as absolute paths (symbolic links resolved),
/// so that `--resume` from another directory reads the same folders.
fn absolute(config: &RunConfig) -> Result<RunConfig, FinetuneError> {
    let canonical = |p: &Path| {
        std::fs::canonicalize(p).map_err(|e| FinetuneError::Data {
            path: p.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let mut c = config.clone();
    c.data = canonical(&config.data)?;
    if let ValSource::Dir(dir) = &config.val {
        c.val = ValSource::Dir(canonical(dir)?);
    }
    Ok(c)
}

/// Resuming: the folders must still hold the run's classes and number of images.
fn check_same_data(
    cfg: &RunConfig,
    manifest: &Manifest,
    dataset: &Dataset,
) -> Result<(), FinetuneError> {
    if dataset.classes != manifest.card.classes {
        return Err(FinetuneError::Data {
            path: cfg.data.clone(),
            reason: format!(
                "classes {:?} differ from the run's {:?}",
                dataset.classes, manifest.card.classes
            ),
        });
    }
    if let Some(run) = manifest.images {
        let now = ImageCounts {
            train: dataset.train.len(),
            val: dataset.val.len(),
        };
        if now != run {
            return Err(FinetuneError::Data {
                path: cfg.data.clone(),
                reason: format!(
                    "now gives {} training and {} validation images, the run started with {} and {}: the folder changed, and resuming would train on other images (restore it, or start a new run)",
                    now.train, now.val, run.train, run.val
                ),
            });
        }
    }
    Ok(())
}

/// The shape of the network the settings build (for starting weights: the full-width shape
/// that most weights have; they fix the real one).
fn planned_shape(cfg: &RunConfig, classes: usize) -> NetworkShape {
    NetworkShape {
        num_classes: classes,
        hidden: cfg.hidden.unwrap_or(4096),
        width_divisor: cfg.width_divisor.unwrap_or(1),
    }
}

/// Refuses settings whose estimated training memory exceeds `limit` bytes, naming what it
/// would need; the batch is the larger of the training and validation sets at most.
fn check_memory(
    cfg: &RunConfig,
    shape: &NetworkShape,
    dataset: &Dataset,
    limit: u64,
) -> Result<(), FinetuneError> {
    let batch = cfg
        .batch_size
        .min(dataset.train.len().max(dataset.val.len()));
    let e = estimate(&cfg.architecture, shape, batch, &cfg.optimizer);
    if e.bytes() <= u128::from(limit) {
        return Ok(());
    }
    let setting = if e.parameter_bytes > u128::from(limit) {
        if cfg.weights.is_none() {
            "hidden"
        } else {
            "weights"
        }
    } else {
        "batch_size"
    };
    Err(FinetuneError::TooLarge {
        setting,
        reason: format!(
            "training would need about {} of memory ({} parameters with their gradients and optimizer state: {}; a batch of {batch} images: {}), more than the limit of {}",
            gib(e.bytes()),
            e.parameters,
            gib(e.parameter_bytes),
            gib(e.batch_bytes),
            gib(u128::from(limit))
        ),
    })
}

fn check_settings(c: &RunConfig) -> Result<(), FinetuneError> {
    let bad =
        |setting: &'static str, reason: String| Err(FinetuneError::Setting { setting, reason });
    if c.epochs == 0 {
        return bad("epochs", "must be at least 1".into());
    }
    if c.batch_size == 0 {
        return bad("batch_size", "must be at least 1".into());
    }
    if !(c.lr > 0.0 && c.lr.is_finite()) {
        return bad("lr", format!("must be positive, got {}", c.lr));
    }
    if !(0.0..1.0).contains(&c.optimizer.momentum) {
        return bad(
            "momentum",
            format!("must be in [0, 1), got {}", c.optimizer.momentum),
        );
    }
    if !(c.optimizer.weight_decay >= 0.0 && c.optimizer.weight_decay.is_finite()) {
        return bad("weight_decay", "must not be negative".into());
    }
    match c.schedule {
        crate::LrSchedule::Step { gamma, .. } if !(gamma > 0.0 && gamma.is_finite()) => {
            return bad("lr_gamma", format!("must be positive, got {gamma}"));
        }
        crate::LrSchedule::Cosine { min_lr } if !(min_lr >= 0.0 && min_lr.is_finite()) => {
            return bad("min_lr", format!("must not be negative, got {min_lr}"));
        }
        _ => {}
    }
    if c.weights.is_some() && (c.hidden.is_some() || c.width_divisor.is_some()) {
        return bad(
            if c.hidden.is_some() {
                "hidden"
            } else {
                "width_divisor"
            },
            "applies to random initialisation (no starting weights) only: the weights fix the shape"
                .into(),
        );
    }
    if c.hidden == Some(0) {
        return bad("hidden", "must be at least 1".into());
    }
    if let Some(d) = c.width_divisor {
        let full = c.architecture.conv1_channels();
        if d == 0 {
            return bad(
                "width_divisor",
                "must be at least 1 (1 is the full width)".into(),
            );
        }
        if d > full {
            return bad(
                "width_divisor",
                format!(
                    "{d} leaves no channels: {}'s first convolution has {full}",
                    c.architecture.describe()
                ),
            );
        }
    }
    if let Some(p) = c.dropout
        && !(0.0..1.0).contains(&p)
    {
        return bad("dropout", format!("must be in [0, 1), got {p}"));
    }
    if let Some(a) = &c.augment
        && !(a.scale.0 > 0.0 && a.scale.0 <= a.scale.1 && a.scale.1 <= 1.0)
    {
        return bad(
            "crop_scale",
            format!("must be in (0, 1], got {}", a.scale.0),
        );
    }
    Ok(())
}

/// Makes every lazily initialised parameter take its value now, so that initialisation draws
/// from the random state seeded just before (and not whenever a parameter is first read).
struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// The starting network with a new head for `classes`, its evaluation preprocessing, and its
/// shape.
fn start_model(
    cfg: &RunConfig,
    arch: &Architecture,
    classes: usize,
    ad: &Device,
) -> Result<(Model, Preset, NetworkShape), FinetuneError> {
    let (model, preset, shape) = match &cfg.weights {
        None => {
            let shape = NetworkShape {
                num_classes: classes,
                hidden: cfg.hidden.unwrap_or(4096),
                width_divisor: cfg.width_divisor.unwrap_or(1),
            };
            ad.seed(derive(cfg.seed, &[RNG_INIT]));
            let model = arch.init(&shape, ad)?;
            model.visit(&mut Materialize);
            let preset = default_preset(arch, alexvgg_import::Format::Burnpack);
            (model, preset, shape)
        }
        Some(spec) => {
            let p = Pretrained::load(Some(spec), *arch, ad)?;
            if p.arch != *arch {
                return Err(FinetuneError::Setting {
                    setting: "weights",
                    reason: format!(
                        "{spec} holds {}, not {}",
                        p.arch.describe(),
                        arch.describe()
                    ),
                });
            }
            (p.model, p.preset, p.shape)
        }
    };
    ad.seed(derive(cfg.seed, &[RNG_HEAD]));
    let model = model.with_classes(classes, ad);
    model.visit(&mut Materialize);
    let shape = NetworkShape {
        num_classes: classes,
        ..shape
    };
    Ok((model, cfg.preprocess.unwrap_or(preset), shape))
}

/// A checkpoint's progress and the optimizer file that belongs to it.
type Resumed = (Progress, String);

/// Reads `last.bpk` and its progress, if a checkpoint exists: its checksum (and its optimizer
/// file's) must match, its weights must be finite, and its shape the run's.
fn read_checkpoint(
    out: &Path,
    manifest: &Manifest,
    ad: &Device,
) -> Result<Option<(Model, Resumed)>, FinetuneError> {
    let path = out.join(LAST);
    if !path.is_file() {
        return Ok(None);
    }
    let arch = &manifest.card.architecture;
    let (meta, map) = read_burnpack_with_metadata(&path)?;
    let bad = |reason: String| FinetuneError::Checkpoint {
        path: path.clone(),
        reason,
    };
    match verify_checksum(&meta, &map) {
        Checksum::Mismatch => {
            return Err(bad(
                "checksum mismatch: the file is corrupt (it changed after the run wrote it); refusing to resume from it"
                    .into(),
            ));
        }
        Checksum::Absent if manifest.checksums => {
            return Err(bad(
                "no checksum in its metadata, though this run writes one with every checkpoint: the file was replaced or damaged; refusing to resume from it"
                    .into(),
            ));
        }
        _ => {}
    }
    if let Some((name, count)) = first_non_finite(&map) {
        return Err(bad(format!(
            "holds non-finite weights ({count} NaN or infinite values in '{name}'); refusing to resume from it (best.bpk is left as it is)"
        )));
    }
    let (_, shape) = alexvgg_import::native::describe_metadata(&meta);
    let shape = shape.ok_or_else(|| bad("no network shape in the metadata".into()))?;
    if shape != manifest.card.shape {
        return Err(bad(format!(
            "network shape {shape:?} differs from the run's {:?} in config.json",
            manifest.card.shape
        )));
    }
    let progress: Progress = meta
        .get(META_PROGRESS)
        .and_then(|p| serde_json::from_str(p).ok())
        .ok_or_else(|| bad("no fine-tuning progress in the metadata".into()))?;
    let optimizer = meta
        .get(META_OPTIMIZER)
        .cloned()
        .ok_or_else(|| bad("no optimizer file named in the metadata".into()))?;
    if !(optimizer.starts_with("optimizer-")
        && optimizer.ends_with(".bpk")
        && !optimizer.contains(['/', '\\']))
    {
        return Err(bad(format!(
            "names '{}' as its optimizer file, not an optimizer-N.bpk of the run",
            optimizer.escape_debug()
        )));
    }
    let optimizer_path = out.join(&optimizer);
    match meta.get(META_OPTIMIZER_SHA256) {
        Some(sum) if *sum != file_sha256(&optimizer_path)? => {
            return Err(FinetuneError::Checkpoint {
                path: optimizer_path,
                reason: "checksum mismatch: the file is corrupt (it is not the one last.bpk was written with); refusing to resume from it".into(),
            });
        }
        None if manifest.checksums => {
            return Err(bad(
                "no checksum of its optimizer file in its metadata: the file was replaced or damaged; refusing to resume from it"
                    .into(),
            ));
        }
        _ => {}
    }
    let model = arch.init(&shape, ad)?;
    let model = load_module(model, map, &path.display().to_string(), &arch.describe())?;
    Ok(Some((model, (progress, optimizer))))
}

/// The error of a run that diverged at `step` (1-based) of `epoch` (0-based): nothing of that
/// step is saved, and the message says which checkpoint remains.
fn diverged(ctx: &Context<'_>, epoch: usize, step: usize, what: String) -> FinetuneError {
    let last = ctx.out.join(LAST);
    FinetuneError::Diverged {
        at: format!(" at epoch {}, step {step}", epoch + 1),
        what,
        kept: if last.is_file() {
            format!(
                "; stopped there, keeping the last good checkpoint {}",
                last.display()
            )
        } else {
            "; stopped there, before any checkpoint was written".to_string()
        },
    }
}

/// The network's values, which must all be finite: a diverged network is never evaluated or
/// saved.
fn finite_tensors(
    ctx: &Context<'_>,
    trainer: &Trainer,
    epoch: usize,
    step: usize,
) -> Result<TensorMap, FinetuneError> {
    let tensors = module_tensors(trainer.model())?;
    if let Some((name, count)) = first_non_finite(&tensors) {
        return Err(diverged(
            ctx,
            epoch,
            step,
            format!("{count} values of '{name}' are NaN or infinite after the update"),
        ));
    }
    Ok(tensors)
}

/// Writes `tensors` as `file` in the output directory, with `meta` and its checksum beside
/// the network's shape.
fn write_model(
    ctx: &Context<'_>,
    tensors: TensorMap,
    mut meta: Metadata,
    file: &str,
) -> Result<(), FinetuneError> {
    let sum = checkpoint_checksum(&meta, &tensors);
    meta.insert(META_SHA256.to_string(), sum);
    Ok(write_tensors_with(
        tensors,
        ctx.arch,
        &ctx.shape,
        &meta,
        &ctx.out.join(file),
    )?)
}

/// Writes the optimizer state, then `last.bpk` (the commit point: its metadata holds the
/// progress and names the optimizer file with its checksum), then removes older optimizer
/// files.
fn checkpoint(
    ctx: &Context<'_>,
    trainer: &Trainer,
    tensors: TensorMap,
    progress: &Progress,
) -> Result<(), FinetuneError> {
    let optimizer_file = format!("optimizer-{:08}.bpk", progress.global_step);
    let optimizer_path = ctx.out.join(&optimizer_file);
    trainer.save_optimizer(&optimizer_path)?;
    let mut meta = Metadata::new();
    meta.insert(META_PROGRESS.to_string(), to_json(progress, false)?);
    meta.insert(META_OPTIMIZER.to_string(), optimizer_file.clone());
    meta.insert(
        META_OPTIMIZER_SHA256.to_string(),
        file_sha256(&optimizer_path)?,
    );
    write_model(ctx, tensors, meta, LAST)?;
    if let Ok(entries) = std::fs::read_dir(ctx.out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("optimizer-") && name.ends_with(".bpk") && name != optimizer_file {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

fn train_epoch(
    ctx: &Context<'_>,
    trainer: &mut Trainer,
    progress: &mut Progress,
    ad: &Device,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<(), FinetuneError> {
    let cfg = ctx.cfg;
    let epoch = progress.epoch;
    let train = &ctx.dataset.train;
    let steps = train.len().div_ceil(cfg.batch_size);
    let order = permutation(train.len(), derive(cfg.seed, &[RNG_ORDER, epoch as u64]));
    let size = ctx.arch.input_size();
    let started = Instant::now();
    let batch_of = |step: usize| -> Vec<&Sample> {
        order[step * cfg.batch_size..((step + 1) * cfg.batch_size).min(train.len())]
            .iter()
            .map(|&i| &train[i])
            .collect()
    };
    let mut lr = cfg.lr;
    std::thread::scope(|scope| -> Result<(), FinetuneError> {
        // decode and augment the next batch while this one trains
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let first = progress.step;
        let batch_of = &batch_of;
        scope.spawn(move || {
            for step in first..steps {
                let mode = match &cfg.augment {
                    Some(augment) => Mode::Train {
                        augment,
                        seed: derive(cfg.seed, &[RNG_AUGMENT, epoch as u64, step as u64]),
                    },
                    None => Mode::Eval,
                };
                let batch = data::load_batch(&batch_of(step), mode, ctx.preset, size);
                if tx.send((step, batch)).is_err() {
                    break;
                }
            }
        });
        let mut last = Instant::now();
        for (step, batch) in rx {
            for (path, reason) in &batch.failed {
                events(Event::Skipped { path, reason });
            }
            if !batch.labels.is_empty() {
                lr = cfg.schedule.rate(cfg.lr, epoch, step, steps, cfg.epochs);
                ad.seed(derive(
                    cfg.seed,
                    &[RNG_DROPOUT, progress.global_step as u64],
                ));
                let stats = trainer
                    .step(batch.inputs, &batch.labels, lr)
                    .map_err(|e| match e {
                        FinetuneError::Diverged { what, .. } => {
                            diverged(ctx, epoch, step + 1, what)
                        }
                        e => e,
                    })?;
                progress.loss_sum += stats.loss * stats.images as f64;
                progress.correct += stats.correct;
                progress.seen += stats.images;
            }
            // wall time per step, waiting for data included
            progress.train_seconds += last.elapsed().as_secs_f64();
            progress.step = step + 1;
            progress.global_step += 1;
            events(Event::Step {
                epoch: epoch + 1,
                step: step + 1,
                steps,
                loss: progress.loss_sum / progress.seen.max(1) as f64,
                images_per_s: progress.seen as f64 / progress.train_seconds.max(1e-9),
            });
            if cfg.checkpoint_every > 0
                && progress.step.is_multiple_of(cfg.checkpoint_every)
                && progress.step < steps
            {
                let mut snapshot = progress.clone();
                snapshot.epoch_seconds += started.elapsed().as_secs_f64();
                let tensors = finite_tensors(ctx, trainer, epoch, progress.step)?;
                checkpoint(ctx, trainer, tensors, &snapshot)?;
            }
            last = Instant::now();
        }
        Ok(())
    })?;
    let tensors = finite_tensors(ctx, trainer, epoch, progress.step)?;
    // validation
    let eval_model = trainer.eval_model();
    let mut stats = crate::trainer::EvalStats::default();
    for chunk in ctx.dataset.val.chunks(cfg.batch_size) {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let batch = data::load_batch(&refs, Mode::Eval, ctx.preset, size);
        for (path, reason) in &batch.failed {
            events(Event::Skipped { path, reason });
        }
        if !batch.labels.is_empty() {
            stats.add(trainer.evaluate(&eval_model, batch.inputs, &batch.labels)?);
        }
    }
    drop(eval_model);
    let n = stats.images.max(1) as f64;
    // only finite losses compete: a NaN validation loss is never the best
    let prev_best = progress
        .history
        .iter()
        .filter(|m| m.val_loss.is_finite())
        .map(|m| (m.val_top1, -m.val_loss))
        .fold(None, |acc: Option<(f64, f64)>, x| match acc {
            Some(a) if a >= x => Some(a),
            _ => Some(x),
        });
    let mut metrics = EpochMetrics {
        epoch: epoch + 1,
        train_loss: progress.loss_sum / progress.seen.max(1) as f64,
        train_top1: progress.correct as f64 / progress.seen.max(1) as f64,
        val_loss: stats.loss_sum / n,
        val_top1: stats.top1 as f64 / n,
        val_top5: stats.top5 as f64 / n,
        images_per_s: progress.seen as f64 / progress.train_seconds.max(1e-9),
        lr,
        seconds: progress.epoch_seconds + started.elapsed().as_secs_f64(),
        best: false,
    };
    metrics.best = metrics.val_loss.is_finite()
        && prev_best.is_none_or(|b| (metrics.val_top1, -metrics.val_loss) > b);
    if metrics.best {
        let mut meta = Metadata::new();
        meta.insert(
            "alexvgg.finetune.epoch".to_string(),
            metrics.epoch.to_string(),
        );
        meta.insert(
            "alexvgg.finetune.val_top1".to_string(),
            metrics.val_top1.to_string(),
        );
        write_model(ctx, tensors.clone(), meta, BEST)?;
    }
    events(Event::Epoch(&metrics));
    progress.history.push(metrics);
    write_metrics(ctx.out, &progress.history)?;
    write_curves(ctx, &progress.history)?;
    progress.epoch += 1;
    progress.step = 0;
    progress.loss_sum = 0.0;
    progress.correct = 0;
    progress.seen = 0;
    progress.train_seconds = 0.0;
    progress.epoch_seconds = 0.0;
    checkpoint(ctx, trainer, tensors, progress)
}

/// Redraws `curves.png` (loss and top-1 per epoch) from the history.
fn write_curves(ctx: &Context<'_>, history: &[EpochMetrics]) -> Result<(), FinetuneError> {
    let points: Vec<EpochPoint> = history
        .iter()
        .map(|m| EpochPoint {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_top1: m.train_top1,
            val_loss: m.val_loss,
            val_top1: m.val_top1,
        })
        .collect();
    let title = curves_title(ctx.arch, ctx.shape.num_classes);
    Ok(plot::write_curves(&ctx.out.join(CURVES), &title, &points)?)
}

/// Rewrites `metrics.jsonl` and `metrics.csv` from the history.
fn write_metrics(out: &Path, history: &[EpochMetrics]) -> Result<(), FinetuneError> {
    let mut jsonl = String::new();
    let mut csv = String::from(
        "epoch,train_loss,train_top1,val_loss,val_top1,val_top5,images_per_s,lr,seconds,best\n",
    );
    for m in history {
        jsonl.push_str(&to_json(m, false)?);
        jsonl.push('\n');
        csv.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.3},{:e},{:.3},{}\n",
            m.epoch,
            m.train_loss,
            m.train_top1,
            m.val_loss,
            m.val_top1,
            m.val_top5,
            m.images_per_s,
            m.lr,
            m.seconds,
            m.best
        ));
    }
    write_atomic(&out.join(METRICS_JSONL), jsonl.as_bytes())?;
    write_atomic(&out.join(METRICS_CSV), csv.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Freeze, LrSchedule, OptimizerKind, OptimizerSettings};
    use crate::data::Sample;
    use alexvgg_models::AlexNetVariant;

    fn config() -> RunConfig {
        RunConfig {
            architecture: Architecture::AlexNet(AlexNetVariant::Tf),
            weights: None,
            data: PathBuf::from("data"),
            val: ValSource::Split(0.25),
            epochs: 1,
            batch_size: 32,
            lr: 1e-3,
            optimizer: OptimizerSettings {
                kind: OptimizerKind::Adam,
                momentum: 0.0,
                weight_decay: 0.0,
            },
            schedule: LrSchedule::Constant,
            freeze: Freeze::None,
            seed: 0,
            augment: None,
            dropout: None,
            preprocess: None,
            hidden: None,
            width_divisor: None,
            checkpoint_every: 0,
        }
    }

    fn setting_of(c: &RunConfig) -> Option<&'static str> {
        match check_settings(c) {
            Ok(()) => None,
            Err(FinetuneError::Setting { setting, .. }) => Some(setting),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn zero_and_out_of_range_sizes_are_refused() {
        assert_eq!(setting_of(&config()), None);
        let with = |f: &dyn Fn(&mut RunConfig)| {
            let mut c = config();
            f(&mut c);
            setting_of(&c)
        };
        assert_eq!(with(&|c| c.hidden = Some(0)), Some("hidden"));
        assert_eq!(with(&|c| c.width_divisor = Some(0)), Some("width_divisor"));
        assert_eq!(with(&|c| c.width_divisor = Some(97)), Some("width_divisor"));
        assert_eq!(with(&|c| c.width_divisor = Some(96)), None);
        assert_eq!(
            with(&|c| c.optimizer.weight_decay = f64::NAN),
            Some("weight_decay")
        );
        assert_eq!(
            with(&|c| c.schedule = LrSchedule::Cosine { min_lr: f64::NAN }),
            Some("min_lr")
        );
        assert_eq!(
            with(&|c| {
                c.weights = Some("w.npy".into());
                c.hidden = Some(64);
            }),
            Some("hidden")
        );
    }

    #[test]
    fn memory_is_checked_against_the_limit() {
        let sample = |class| Sample {
            path: PathBuf::from("x.png"),
            class,
        };
        let dataset = Dataset {
            classes: vec!["a".into(), "b".into()],
            train: (0..100).map(|i| sample(i % 2)).collect(),
            val: vec![sample(0), sample(1)],
        };
        let mut c = config();
        let shape = |hidden| NetworkShape {
            num_classes: 2,
            hidden,
            width_divisor: 1,
        };
        check_memory(
            &c,
            &shape(4096),
            &dataset,
            crate::memory::FALLBACK_MAX_MEMORY,
        )
        .unwrap();
        match check_memory(
            &c,
            &shape(10_000_000),
            &dataset,
            crate::memory::FALLBACK_MAX_MEMORY,
        ) {
            Err(FinetuneError::TooLarge { setting, reason }) => {
                assert_eq!(setting, "hidden");
                assert!(
                    reason.contains("GiB") && reason.contains("64.0 GiB"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // the batch counts at most the images there are
        c.batch_size = 100_000;
        check_memory(
            &c,
            &shape(4096),
            &dataset,
            crate::memory::FALLBACK_MAX_MEMORY,
        )
        .unwrap();
        match check_memory(&c, &shape(4096), &dataset, 1 << 30) {
            Err(FinetuneError::TooLarge { setting, reason }) => {
                assert_eq!(setting, "batch_size");
                assert!(reason.contains("a batch of 100 images"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

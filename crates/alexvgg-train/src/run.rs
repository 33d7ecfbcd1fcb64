//! The epoch loop of `alexvgg finetune`: training with prefetched batches, validation, metrics,
//! best/last checkpoints, and exact resumption.

use std::path::{Path, PathBuf};
use std::time::Instant;

use alexvgg_import::{
    Metadata, load_module, module_tensors, read_burnpack_with_metadata, write_tensors_with,
};
use alexvgg_models::{Architecture, Model, NetworkShape};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use alexvgg_inference::finetuned::ModelCard;
use alexvgg_inference::preprocess::Preset;
use alexvgg_inference::pretrained::Pretrained;
use alexvgg_inference::rng::{derive, permutation};
use alexvgg_inference::weights::default_preset;

use crate::config::RunConfig;
use crate::data::{self, Dataset, Mode, Sample};
use crate::error::FinetuneError;
use crate::output::{
    BEST, CONFIG, LABELS, LAST, METRICS_CSV, METRICS_JSONL, Manifest, read_manifest, write_atomic,
};
use crate::trainer::Trainer;

/// Metadata key of the progress record in `last.bpk`.
const META_PROGRESS: &str = "alexvgg.finetune.progress";
/// Metadata key naming the optimizer file that belongs to `last.bpk`.
const META_OPTIMIZER: &str = "alexvgg.finetune.optimizer";

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

/// Runs `config` into `out` on `device`; with `config` `None`, continues the run already in
/// `out` with its saved settings from its last checkpoint.
///
/// # Errors
/// [`FinetuneError`] for bad data folders or settings, unusable weights, an output directory
/// that already holds another run (when starting), nothing to resume, and failed writes.
pub fn run(
    config: Option<&RunConfig>,
    out: &Path,
    device: &Device,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<RunSummary, FinetuneError> {
    let ad = device.clone().autodiff();
    let (cfg, manifest, model, progress, dataset) = if let Some(config) = config {
        if out.join(CONFIG).exists() || out.join(LAST).exists() {
            return Err(FinetuneError::Checkpoint {
                path: out.to_path_buf(),
                reason: "already holds a fine-tuning run: pass --resume to continue it, or choose another --out".to_string(),
            });
        }
        check_settings(config)?;
        let arch = config.architecture;
        config.freeze.prefixes(&arch)?;
        let dataset = data::open(&config.data, &config.val, config.seed)?;
        let (model, preset, shape) = start_model(config, &arch, dataset.classes.len(), &ad)?;
        std::fs::create_dir_all(out).map_err(|e| FinetuneError::io(out, e))?;
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
        };
        write_atomic(
            &out.join(LABELS),
            (dataset.classes.join("\n") + "\n").as_bytes(),
        )?;
        write_atomic(&out.join(CONFIG), to_json(&manifest, true)?.as_bytes())?;
        (config.clone(), manifest, model, None, Some(dataset))
    } else {
        let manifest = read_manifest(out).map_err(|_| FinetuneError::Checkpoint {
            path: out.to_path_buf(),
            reason: "nothing to resume: no config.json from an earlier run".to_string(),
        })?;
        let cfg = manifest.run.clone();
        let arch = cfg.architecture;
        let (model, progress) = match read_checkpoint(out, &arch, &ad)? {
            Some(found) => found,
            None => (
                start_model(&cfg, &arch, manifest.card.classes.len(), &ad)?.0,
                None,
            ),
        };
        (cfg, manifest, model, progress, None)
    };
    let arch = cfg.architecture;
    let dataset = match dataset {
        Some(d) => d,
        None => data::open(&cfg.data, &cfg.val, cfg.seed)?,
    };
    if dataset.classes != manifest.card.classes {
        return Err(FinetuneError::Data {
            path: cfg.data.clone(),
            reason: format!(
                "classes {:?} differ from the run's {:?}",
                dataset.classes, manifest.card.classes
            ),
        });
    }
    let model = match cfg.dropout {
        Some(p) => model.with_dropout(p),
        None => model,
    };
    let mut trainer = Trainer::new(model, &arch, &cfg.optimizer, &cfg.freeze, &ad)?;
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
    if c.optimizer.weight_decay < 0.0 {
        return bad("weight_decay", "must not be negative".into());
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

/// Reads `last.bpk` and its progress, if a checkpoint exists.
fn read_checkpoint(
    out: &Path,
    arch: &Architecture,
    ad: &Device,
) -> Result<Option<(Model, Option<Resumed>)>, FinetuneError> {
    let path = out.join(LAST);
    if !path.is_file() {
        return Ok(None);
    }
    let (meta, map) = read_burnpack_with_metadata(&path)?;
    let bad = |reason: String| FinetuneError::Checkpoint {
        path: path.clone(),
        reason,
    };
    let (_, shape) = alexvgg_import::native::describe_metadata(&meta);
    let shape = shape.ok_or_else(|| bad("no network shape in the metadata".into()))?;
    let progress: Progress = meta
        .get(META_PROGRESS)
        .and_then(|p| serde_json::from_str(p).ok())
        .ok_or_else(|| bad("no fine-tuning progress in the metadata".into()))?;
    let optimizer = meta
        .get(META_OPTIMIZER)
        .cloned()
        .ok_or_else(|| bad("no optimizer file named in the metadata".into()))?;
    let model = arch.init(&shape, ad)?;
    let model = load_module(model, map, &path.display().to_string(), &arch.describe())?;
    Ok(Some((model, Some((progress, optimizer)))))
}

/// Writes the network as `file` in the output directory, with `meta` beside its shape.
fn write_model(
    ctx: &Context<'_>,
    trainer: &Trainer,
    meta: &Metadata,
    file: &str,
) -> Result<(), FinetuneError> {
    Ok(write_tensors_with(
        module_tensors(trainer.model())?,
        ctx.arch,
        &ctx.shape,
        meta,
        &ctx.out.join(file),
    )?)
}

/// Writes the optimizer state, then `last.bpk` (the commit point: its metadata holds the
/// progress and names the optimizer file), then removes older optimizer files.
fn checkpoint(
    ctx: &Context<'_>,
    trainer: &Trainer,
    progress: &Progress,
) -> Result<(), FinetuneError> {
    let optimizer_file = format!("optimizer-{:08}.bpk", progress.global_step);
    trainer.save_optimizer(&ctx.out.join(&optimizer_file))?;
    let mut meta = Metadata::new();
    meta.insert(META_PROGRESS.to_string(), to_json(progress, false)?);
    meta.insert(META_OPTIMIZER.to_string(), optimizer_file.clone());
    write_model(ctx, trainer, &meta, LAST)?;
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
                let stats = trainer.step(batch.inputs, &batch.labels, lr)?;
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
                checkpoint(ctx, trainer, &snapshot)?;
            }
            last = Instant::now();
        }
        Ok(())
    })?;
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
    let prev_best = progress
        .history
        .iter()
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
    metrics.best = prev_best.is_none_or(|b| (metrics.val_top1, -metrics.val_loss) > b);
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
        write_model(ctx, trainer, &meta, BEST)?;
    }
    events(Event::Epoch(&metrics));
    progress.history.push(metrics);
    write_metrics(ctx.out, &progress.history)?;
    progress.epoch += 1;
    progress.step = 0;
    progress.loss_sum = 0.0;
    progress.correct = 0;
    progress.seen = 0;
    progress.train_seconds = 0.0;
    progress.epoch_seconds = 0.0;
    checkpoint(ctx, trainer, progress)
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

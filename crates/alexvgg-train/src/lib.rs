//! alexvgg-train: fine-tuning AlexNet and VGG on an image folder: a new head for the
//! folder's classes, frozen layers, augmentation, SGD or Adam with a learning-rate schedule, per-epoch metrics, and
//! checkpoints from which an interrupted run resumes to the same weights.
//!
//! The pieces:
//! - [`data`]: class folders, stratified validation split, parallel decoding and augmentation;
//! - [`Trainer`]: one model with its optimizer; [`Trainer::step`] is one optimisation step;
//! - [`run`]: the epoch loop, metrics log and checkpoints of `alexvgg finetune`;
//! - [`memory`]: training-memory estimates, checked before anything is allocated;
//! - [`synth`]: `alexvgg make-dataset`'s synthetic classes;
//! - [`bench`]: timed training steps (`alexvgg bench --train`).
//!
//! This is the only crate of the workspace that enables burn's optimizers (burn's autodiff also
//! serves `alexvgg-inference`'s Grad-CAM and saliency); it takes devices, preprocessing, known
//! weights and the fine-tuned model card from `alexvgg-inference`.

#![warn(missing_docs)]

pub mod bench;
pub mod config;
pub mod data;
mod error;
pub mod memory;
mod output;
mod run;
pub mod sgd;
pub mod synth;
mod trainer;

pub use config::{Freeze, LrSchedule, OptimizerKind, OptimizerSettings, RunConfig};
pub use error::FinetuneError;
pub use output::checkpoint_checksum;
pub use run::{EpochMetrics, Event, RunOptions, RunSummary, run, run_with};
pub use trainer::{EvalStats, StepStats, Trainer};

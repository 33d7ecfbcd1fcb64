//! alexvgg: AlexNet and VGG on burn, with the original weights.
//!
//! This package is the `alexvgg` command line and a facade over the workspace's library crates,
//! for `examples/` and `tests/`:
//! - [`models`] (`alexvgg-models`): pure burn modules, shape arithmetic, layer names;
//! - [`import`] (`alexvgg-import`): weight files, key remapping, conversion;
//! - [`cpu`] (`alexvgg-cpu`): the CPU inference engine;
//! - [`inference`] (`alexvgg-inference`): devices, presets, labels, known weights, the runner,
//!   classify, tables, benchmarks (its modules are re-exported here by name);
//! - [`finetune`] (`alexvgg-train`): fine-tuning.
//!
//! A program of your own needs only the library crates: see `examples/classify.rs`.

#![warn(missing_docs)]

pub use alexvgg_cpu as cpu;
pub use alexvgg_import as import;
pub use alexvgg_inference as inference;
pub use alexvgg_inference::{
    bench, classify, device, finetuned, labels, preprocess, pretrained, rng, runner, tables,
    weights,
};
pub use alexvgg_models as models;
pub use alexvgg_train as finetune;

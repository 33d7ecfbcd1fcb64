//! Training-step benchmarks (`alexvgg bench --train`), on the clocks of
//! [`alexvgg_inference::bench`].

use alexvgg_inference::bench::{BenchResult, BenchSpec, timed_ms};
use alexvgg_inference::rng::SplitMix64;
use alexvgg_inference::runner::EngineKind;
use alexvgg_models::{Architecture, NetworkShape};
use burn::tensor::Device;

use crate::config::{Freeze, OptimizerKind, OptimizerSettings};
use crate::error::FinetuneError;
use crate::trainer::Trainer;

/// Times training steps (forward, cross-entropy, backward, SGD-with-momentum update) of `arch`
/// with 1000 classes on random `[batch, 3, side, side]` inputs, with the layers `freeze` names
/// frozen and the frozen prefix run by `engine` (see [`Trainer::with_engine`]: `auto`
/// runs it forward only on the CPU engine, `burn` keeps everything under autodiff). GFLOP/s
/// counts every step as a full one, three forward passes (forward, and backward's two products
/// per layer), whatever is frozen: with frozen layers it is a nominal rate; compare times. The
/// result's `device` names the frozen prefix when there is one.
///
/// # Errors
/// [`FinetuneError`] when the network cannot be built, `freeze` names no layer of it, or a
/// step fails.
pub fn bench_train(
    arch: &Architecture,
    device: &Device,
    spec: &BenchSpec,
    batch: usize,
    freeze: &Freeze,
    engine: EngineKind,
) -> Result<BenchResult, FinetuneError> {
    let ad = device.clone().autodiff();
    let model = arch.init(&NetworkShape::default(), &ad)?;
    let settings = OptimizerSettings {
        kind: OptimizerKind::Sgd,
        momentum: 0.9,
        weight_decay: 5e-4,
    };
    let mut trainer = Trainer::new(model, arch, &settings, freeze, &ad)?.with_engine(engine)?;
    let mut g = SplitMix64::new(7);
    let side = spec.side;
    let inputs: Vec<f32> = (0..batch * 3 * side * side)
        .map(|_| (g.uniform() as f32 - 0.5) * 200.0)
        .collect();
    let labels: Vec<usize> = (0..batch).map(|_| g.below(1000)).collect();
    let mut failed = None;
    let times = timed_ms(spec.warmup, spec.iters, || {
        // the step reads the loss back to the host, so the clock stops after the update ran
        if let Err(e) = trainer.step(inputs.clone(), &labels, 1e-4) {
            failed.get_or_insert(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let mut result = BenchResult::from_times(spec, batch, &times, 3.0 * spec.gflop_per_image);
    // what ran: the report says what computed the trained layers, and where the frozen layers
    // ran forward only
    result.device = format!(
        "{}; trained layers: {}",
        result.device,
        trainer.layer_kernels()
    );
    if let Some((layer, runner)) = trainer.frozen_prefix() {
        result.device = format!(
            "{}; frozen layers up to {layer} forward only ({runner})",
            result.device
        );
    }
    Ok(result)
}

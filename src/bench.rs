//! Forward-pass benchmarks with honest clocks: warm-up runs, results read back to the host
//! before the clock stops, best and median reported.

use std::time::Instant;

use alexvgg_models::Model;
use burn::tensor::{Device, Distribution, Tensor};

/// One benchmark measurement.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    /// Model name.
    pub model: String,
    /// Backend and device.
    pub device: String,
    /// Images per forward pass.
    pub batch: usize,
    /// Timed passes.
    pub iters: usize,
    /// Fastest pass, milliseconds.
    pub best_ms: f64,
    /// Median pass, milliseconds.
    pub median_ms: f64,
    /// Median milliseconds per image.
    pub ms_per_image: f64,
    /// Images per second at the median.
    pub images_per_s: f64,
    /// Achieved GFLOP/s at the median.
    pub gflops_per_s: f64,
}

/// What to measure, apart from the batch size.
#[derive(Clone, Debug)]
pub struct BenchSpec {
    /// Model name for the report.
    pub model: String,
    /// Backend and device for the report.
    pub device_name: String,
    /// Input side.
    pub side: usize,
    /// Untimed passes.
    pub warmup: usize,
    /// Timed passes.
    pub iters: usize,
    /// Work per image, for GFLOP/s.
    pub gflop_per_image: f64,
}

/// Times `model` on random `[batch, 3, side, side]` inputs: `warmup` untimed passes, then
/// `iters` timed ones, each ending with the logits copied back to the host.
pub fn bench_forward(
    model: &Model,
    device: &Device,
    spec: &BenchSpec,
    batch: usize,
) -> BenchResult {
    let BenchSpec {
        side,
        warmup,
        iters,
        gflop_per_image,
        ..
    } = *spec;
    let input = Tensor::<4>::random(
        [batch, 3, side, side],
        Distribution::Uniform(-100.0, 100.0),
        device,
    );
    let run = || {
        let logits = model.forward(input.clone());
        // Forces the computation (and any GPU queue) to finish before the clock stops.
        let _ = logits.into_data();
    };
    for _ in 0..warmup {
        run();
    }
    let mut times: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let best_ms = times[0];
    let median_ms = times[times.len() / 2];
    BenchResult {
        model: spec.model.clone(),
        device: spec.device_name.clone(),
        batch,
        iters: times.len(),
        best_ms,
        median_ms,
        ms_per_image: median_ms / batch as f64,
        images_per_s: batch as f64 * 1e3 / median_ms,
        gflops_per_s: gflop_per_image * batch as f64 / (median_ms * 1e-3),
    }
}

//! Forward-pass benchmarks with honest clocks: warm-up runs, results read back to the host
//! before the clock stops, best and median reported.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor, TensorData};

use crate::runner::{Runner, RunnerError};

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

/// Times `runner` on random `[batch, 3, side, side]` inputs in `-100..100`: `warmup` untimed
/// passes, then `iters` timed ones, each ending with the logits on the host.
///
/// # Errors
/// [`RunnerError`] when the network cannot take the input.
pub fn bench_forward(
    runner: &Runner,
    spec: &BenchSpec,
    batch: usize,
) -> Result<BenchResult, RunnerError> {
    let dims = [batch, 3, spec.side, spec.side];
    let input = random_input(dims);
    runner.logits(input.clone(), dims)?;
    let times = timed_ms(spec.warmup, spec.iters, || {
        // The burn path uploads, runs and reads the logits back (a GPU queue finishes first);
        // the engine reads and writes host memory.
        let _ = runner.logits(input.clone(), dims);
    });
    Ok(BenchResult::from_times(
        spec,
        batch,
        &times,
        spec.gflop_per_image,
    ))
}

/// Deterministic pseudo-random values in `-100..100` for `dims`.
fn random_input(dims: [usize; 4]) -> Vec<f32> {
    let mut g = crate::rng::SplitMix64::new(42);
    (0..dims.iter().product::<usize>())
        .map(|_| (g.uniform() as f32 - 0.5) * 200.0)
        .collect()
}

impl BenchResult {
    /// A result from sorted pass times (as [`timed_ms`] returns them), `gflop_per_pass_image`
    /// of work per image and pass.
    pub fn from_times(
        spec: &BenchSpec,
        batch: usize,
        times: &[f64],
        gflop_per_pass_image: f64,
    ) -> Self {
        let median_ms = times[times.len() / 2];
        BenchResult {
            model: spec.model.clone(),
            device: spec.device_name.clone(),
            batch,
            iters: times.len(),
            best_ms: times[0],
            median_ms,
            ms_per_image: median_ms / batch as f64,
            images_per_s: batch as f64 * 1e3 / median_ms,
            gflops_per_s: gflop_per_pass_image * batch as f64 / (median_ms * 1e-3),
        }
    }
}

/// One row of the LRN benchmark: milliseconds per call of three implementations.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LrnBenchRow {
    /// Channel window half-width `r` (window `2r + 1`).
    pub depth_radius: usize,
    /// Our LRN (one prefix sum over channels).
    pub ours_ms: f64,
    /// The same formula with the window sum as a `(2r+1) x 1` average pool over channels.
    pub pool_ms: f64,
    /// `burn::nn::LocalResponseNorm` (transposes, then a 1-D average pool).
    pub burn_ms: f64,
    /// The textbook way: `2r + 1` shifted channel slices summed.
    pub slices_ms: f64,
}

/// Runs `f` `warmup` times untimed, then `iters` (at least one) timed; milliseconds, sorted.
pub fn timed_ms(warmup: usize, iters: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// Median of `iters` timed calls after one warm-up call.
fn median_ms(iters: usize, f: impl FnMut()) -> f64 {
    let times = timed_ms(1, iters, f);
    times[times.len() / 2]
}

/// The windowed sum of squares by `2r + 1` channel slices: the cost the one-pass LRN avoids.
pub fn lrn_by_slices(x: Tensor<4>, r: usize, bias: f64, alpha: f64, beta: f64) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let sq = x.clone().square();
    let zeros = Tensor::<4>::zeros([n, r, h, w], &x.device());
    let padded = Tensor::cat(vec![zeros.clone(), sq, zeros], 1);
    let mut sum = padded.clone().narrow(1, 0, c);
    for d in 1..=2 * r {
        sum = sum + padded.clone().narrow(1, d, c);
    }
    x / sum.mul_scalar(alpha).add_scalar(bias).powf_scalar(beta)
}

/// The windowed sum of squares as one `(2r+1) x 1` average pool over the channel axis of the
/// squares viewed as `[N, 1, C, H*W]` (zero padding counted, rescaled by the window).
pub fn lrn_by_pool(x: Tensor<4>, r: usize, bias: f64, alpha: f64, beta: f64) -> Tensor<4> {
    use burn::tensor::module::avg_pool2d;
    use burn::tensor::ops::AvgPoolOptions;
    let [n, c, h, w] = x.dims();
    let size = 2 * r + 1;
    let mut options = AvgPoolOptions::new([size, 1])
        .with_stride([1, 1])
        .with_padding([r, 0]);
    options.count_include_pad = true;
    let mean =
        avg_pool2d(x.clone().square().reshape([n, 1, c, h * w]), options).reshape([n, c, h, w]);
    x / mean
        .mul_scalar(alpha * size as f64)
        .add_scalar(bias)
        .powf_scalar(beta)
}

/// Times the four LRN implementations on `shape` for each radius (AlexNet's conv1 output,
/// `[1, 96, 57, 57]`, is the natural shape).
pub fn bench_lrn(
    device: &Device,
    shape: [usize; 4],
    radii: &[usize],
    iters: usize,
) -> Vec<LrnBenchRow> {
    use alexvgg_models::LrnConfig;
    use burn::nn::LocalResponseNormConfig;
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 10.0), device);
    radii
        .iter()
        .map(|&r| {
            let size = 2 * r + 1;
            let ours = LrnConfig::new(r).with_alpha(2e-5).with_beta(0.75).init();
            let theirs = LocalResponseNormConfig::new(size)
                .with_alpha(2e-5 * size as f64)
                .with_beta(0.75)
                .init();
            LrnBenchRow {
                depth_radius: r,
                ours_ms: median_ms(iters, || {
                    let _ = ours.forward(x.clone()).into_data();
                }),
                pool_ms: median_ms(iters, || {
                    let _ = lrn_by_pool(x.clone(), r, 1.0, 2e-5, 0.75).into_data();
                }),
                burn_ms: median_ms(iters, || {
                    let _ = theirs.forward(x.clone()).into_data();
                }),
                slices_ms: median_ms(iters, || {
                    let _ = lrn_by_slices(x.clone(), r, 1.0, 2e-5, 0.75).into_data();
                }),
            }
        })
        .collect()
}

/// Records the time since the previous mark (or the start) under each stage name.
struct StageClock<'a> {
    stages: &'a mut Vec<(String, f64)>,
    last: Instant,
}

impl<'a> StageClock<'a> {
    fn start(stages: &'a mut Vec<(String, f64)>) -> Self {
        Self {
            stages,
            last: Instant::now(),
        }
    }

    fn mark(&mut self, name: &str) {
        let ms = self.last.elapsed().as_secs_f64() * 1e3;
        self.stages.push((name.to_string(), ms));
        self.last = Instant::now();
    }
}

/// Median time of each named stage of one forward pass (`conv1`, `lrn1`, `pool1`, ... `fc8`),
/// measured between the activations reported by the model's or the engine's `forward_observed`
/// (a burn device is synchronised at each boundary; `warmup` untimed passes, then `iters`).
///
/// # Errors
/// [`RunnerError`] when the network cannot take the input.
pub fn per_layer_ms(
    runner: &Runner,
    side: usize,
    batch: usize,
    warmup: usize,
    iters: usize,
) -> Result<Vec<(String, f64)>, RunnerError> {
    let dims = [batch, 3, side, side];
    let values = random_input(dims);
    let mut runs: Vec<Vec<(String, f64)>> = Vec::new();
    for i in 0..warmup + iters.max(1) {
        let mut stages = Vec::new();
        match runner {
            Runner::Burn { model, device } => {
                let input = Tensor::<4>::from_data(TensorData::new(values.clone(), dims), device);
                let _ = device.sync();
                let mut clock = StageClock::start(&mut stages);
                let logits = model.forward_observed(input, &mut |name, _| {
                    let _ = device.sync();
                    clock.mark(name);
                });
                let _ = logits.into_data();
            }
            Runner::Kernels(engine) => {
                let mut clock = StageClock::start(&mut stages);
                engine.forward_observed(&values, dims, &mut |name, _| clock.mark(name))?;
            }
        }
        if i >= warmup {
            runs.push(stages);
        }
    }
    Ok((0..runs[0].len())
        .map(|k| {
            let mut times: Vec<f64> = runs.iter().map(|r| r[k].1).collect();
            times.sort_by(f64::total_cmp);
            (runs[0][k].0.clone(), times[times.len() / 2])
        })
        .collect())
}

/// The machine's memory read bandwidth in GB/s, as the fully connected layers at batch 1 meet it:
/// every thread of the rayon pool sums its share of a 256 MiB buffer (far larger than the
/// caches), best of three timed passes after one untimed pass.
pub fn read_bandwidth_gbps() -> f64 {
    use rayon::prelude::*;
    const LEN: usize = 64 << 20; // f32 values: 256 MiB
    let data = vec![1.0f32; LEN];
    let pass = || {
        let sum: f32 = data
            .par_chunks(1 << 16)
            .map(|c| {
                // eight independent sums, so the loop is bound by loads, not by one add chain
                let mut acc = [0.0f32; 8];
                for v in c.chunks_exact(8) {
                    for (a, x) in acc.iter_mut().zip(v) {
                        *a += x;
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        std::hint::black_box(sum);
    };
    let best_ms = timed_ms(1, 3, pass)[0];
    (LEN * 4) as f64 / best_ms / 1e6
}

/// The rate (GB/s of weights) at which the CPU engine's fully connected kernel streams a dense
/// `[d_in, d_out]` layer at batch 1: every input non-zero, so no row is skipped and every weight
/// is read once; best of five passes after one untimed pass.
pub fn dense_linear_gbps(d_in: usize, d_out: usize) -> f64 {
    use alexvgg_cpu::linear::{LinearWeights, linear};
    let weight: Vec<f32> = (0..d_in * d_out).map(|i| (i % 7) as f32 * 1e-3).collect();
    let w = LinearWeights::from_in_out(weight, d_in, d_out, vec![0.0; d_out])
        .with_simd(alexvgg_cpu::Simd::current());
    let x = vec![1.0f32; d_in];
    let pool = alexvgg_cpu::pool::Pool::new();
    let pass = || {
        let y = linear(&x, 1, &w, false, &pool);
        std::hint::black_box(&y);
        pool.give(y);
    };
    let best_ms = timed_ms(1, 5, pass)[0];
    (d_in * d_out * 4) as f64 / best_ms / 1e6
}

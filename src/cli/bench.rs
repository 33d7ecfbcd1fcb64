//! `alexvgg bench` (forward passes or training steps) and `alexvgg bench-lrn`.

use std::path::PathBuf;
use std::time::Instant;

use alexvgg_import::load_model;
use alexvgg_inference::bench::{self, BenchResult, BenchSpec};
use alexvgg_inference::device::{describe, make_device};
use alexvgg_inference::memory::{bytes_per_image, check_batch};
use alexvgg_inference::runner::{ConvChoice, EngineKind, Runner};
use alexvgg_models::{LayerKind, NetworkShape, gflops};
use alexvgg_train::Freeze;
use anyhow::{Context, Result, bail};
use clap::Args;

use super::finetune::parse_freeze;
use super::{DeviceArgs, ModelArgs, choice};

/// Time forward passes (or training steps) on a device.
#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Comma-separated batch sizes.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    batch_size: Vec<usize>,
    /// Timed passes per batch size.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Untimed warm-up passes per batch size.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Weights to load (random weights otherwise; speed does not depend on them).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Time training steps (forward, loss, backward, SGD update) instead of inference.
    #[arg(long)]
    train: bool,
    /// With --train: frozen layers, as `finetune --freeze` (none, features, up-to:LAYER).
    /// With `--engine auto` on CPU backends the trained layers run the alexvgg-cpu kernels
    /// with hand-written backward passes and the frozen front of the network runs forward
    /// only on the CPU engine; `--engine burn` runs burn's layers, all under autodiff.
    #[arg(long, default_value = "none", value_parser = parse_freeze)]
    freeze: Freeze,
    /// Inference engine: auto (the alexvgg-cpu kernels on CPU backends, burn on wgpu), burn, kernels.
    #[arg(long, default_value = "auto", value_parser = choice::<EngineKind>())]
    engine: EngineKind,
    /// Convolutions of the CPU engine: auto, im2col (everywhere), winograd (4x4 tiles for
    /// stride-1 3x3), winograd-small (2x2 tiles), direct (everywhere).
    #[arg(long, default_value = "auto", value_parser = choice::<ConvChoice>())]
    conv: ConvChoice,
    /// Also print the median time of each layer (first batch size only), with the kernel that
    /// computes it on the CPU engine (family and SIMD variant).
    #[arg(long)]
    per_layer: bool,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

/// Runs `alexvgg bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    let arch = a.model.arch()?;
    if a.train && a.weights.is_some() {
        bail!("--train times random weights; leave out --weights");
    }
    if a.train && a.engine == EngineKind::Kernels {
        bail!(
            "--train runs burn's autodiff (the frozen layers on the CPU engine with --engine auto); --engine kernels is inference only"
        );
    }
    if !a.train && a.freeze != Freeze::None {
        bail!("--freeze is for --train");
    }
    if a.train {
        a.freeze
            .prefixes(&arch)
            .map_err(|e| anyhow::anyhow!("--freeze: {e}"))?;
    }
    if a.batch_size.contains(&0) {
        bail!("--batch-size values must be at least 1");
    }
    let (backend, dev) = make_device(a.device.device.as_deref())?;
    let net = match &a.weights {
        Some(path) => {
            let started = Instant::now();
            let (net, _, format) = load_model(path, &arch, &dev)?;
            eprintln!(
                "loaded {} ({}) in {:.3} s",
                path.display(),
                format.name(),
                started.elapsed().as_secs_f64()
            );
            net
        }
        None => arch.init(&NetworkShape::default(), &dev)?,
    };
    let side = arch.input_size();
    let net_rows = net.layers([3, side, side])?;
    // every batch size is checked before the first one runs (training needs more still)
    let per_image = bytes_per_image(&net_rows);
    for &batch in &a.batch_size {
        check_batch(batch, per_image).with_context(|| format!("--batch-size {batch}"))?;
    }
    let gflop = gflops(&net_rows);
    let started = Instant::now();
    let engine = if a.train { EngineKind::Burn } else { a.engine };
    let runner = Runner::new(net, &dev, backend, engine, a.conv)?;
    if matches!(runner, Runner::Kernels(_)) {
        let secs = started.elapsed().as_secs_f64();
        eprintln!("compiled for the CPU engine in {secs:.3} s");
    }
    // training: what computed the layers is reported with each result (kernels or burn)
    let device_name = if a.train {
        describe(backend, &dev)
    } else {
        format!("{}, {}", describe(backend, &dev), runner.describe())
    };
    // The CPU and the engine's SIMD level (`ALEXVGG_SIMD` overrides it); on standard error with
    // --json, whose standard output is one JSON result per line.
    let cpu = alexvgg_cpu::CpuInfo::detect();
    if a.json {
        eprintln!("{cpu}");
    } else {
        outln!("{cpu}");
    }
    let (what, unit) = if a.train {
        ("training", "steps")
    } else {
        ("inference", "passes")
    };
    if !a.json {
        outln!(
            "{} {what} on {device_name}, {side}x{side}, {gflop:.2} GFLOP/image{}, {} warm-up + {} timed {unit}",
            arch.describe(),
            if a.train {
                " forward (x3 per step)"
            } else {
                ""
            },
            a.warmup,
            a.iters,
        );
        outln!(
            "{:>6} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "batch",
            "best ms",
            "median ms",
            "ms/image",
            "images/s",
            "GFLOP/s"
        );
    }
    let spec = BenchSpec {
        model: arch.name(),
        device_name,
        side,
        warmup: a.warmup,
        iters: a.iters,
        gflop_per_image: gflop,
    };
    for (i, &batch) in a.batch_size.iter().enumerate() {
        let r = if a.train {
            alexvgg_train::bench::bench_train(&arch, &dev, &spec, batch, &a.freeze, a.engine)?
        } else {
            bench::bench_forward(&runner, &spec, batch)?
        };
        if let Some(prefix) = r
            .device
            .strip_prefix(&spec.device_name)
            .filter(|p| i == 0 && !p.is_empty())
        {
            // the frozen layers' route (training): on standard error, like the cpu line
            eprintln!("{}", prefix.trim_start_matches("; "));
        }
        print_result(&r, a.json)?;
    }
    if a.per_layer {
        let batch = a.batch_size.first().copied().unwrap_or(1);
        let rows = bench::per_layer_ms(&runner, side, batch, a.warmup, a.iters)?;
        let kernels = runner.layer_kernels().unwrap_or_default();
        // fully connected weights against the machine's read bandwidth (they are streamed)
        // and, on the CPU engine, the same kernel on a dense input (no row skipped) at batch 1
        let engine = matches!(runner, Runner::Kernels(_));
        let weights: Vec<FcRate> = net_rows
            .iter()
            .filter(|r| r.kind == LayerKind::Linear)
            .map(|r| {
                let [d_out, _, _] = r.output;
                let d_in = (r.params - d_out) / d_out.max(1);
                FcRate {
                    layer: r.name.clone(),
                    bytes: d_in * d_out * 4,
                    dense_gbps: engine.then(|| bench::dense_linear_gbps(d_in, d_out)),
                }
            })
            .collect();
        let bandwidth = (!weights.is_empty()).then(bench::read_bandwidth_gbps);
        print_layers(&rows, &kernels, batch, a.json, &weights, bandwidth)?;
    }
    Ok(())
}

fn print_result(r: &BenchResult, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string(r)?);
    } else {
        outln!(
            "{:>6} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>9.1}",
            r.batch,
            r.best_ms,
            r.median_ms,
            r.ms_per_image,
            r.images_per_s,
            r.gflops_per_s
        );
    }
    Ok(())
}

/// A fully connected layer's weight bytes and the engine's dense streaming rate for it.
struct FcRate {
    layer: String,
    bytes: usize,
    /// GB/s of weights at batch 1 with every input non-zero (CPU engine only).
    dense_gbps: Option<f64>,
}

/// Prints each layer's median time, with its CPU engine kernel where `kernels` names one (an
/// empty list for burn, whose backend chooses), and for the fully connected layers (`weights`)
/// the rate their weights were read at, nominal and dense, against the machine's read
/// `bandwidth` (GB/s).
fn print_layers(
    rows: &[(String, f64)],
    kernels: &[alexvgg_cpu::LayerKernel],
    batch: usize,
    json: bool,
    weights: &[FcRate],
    bandwidth: Option<f64>,
) -> Result<()> {
    let total: f64 = rows.iter().map(|(_, ms)| ms).sum();
    let kernel = |layer: &str| kernels.iter().find(|k| k.layer == layer);
    // GB/s of weights: bytes / ms / 1e6
    let rate = |layer: &str, ms: f64| {
        weights
            .iter()
            .find(|w| w.layer == layer)
            .map(|w| (w, w.bytes as f64 / ms.max(1e-9) / 1e6))
    };
    if json {
        for (layer, ms) in rows {
            let mut row = serde_json::json!({"layer": layer, "batch": batch, "median_ms": ms});
            if let Some(k) = kernel(layer) {
                row["family"] = k.family.into();
                row["kernel"] = k.description.clone().into();
            }
            if let (Some((w, gbps)), Some(bw)) = (rate(layer, *ms), bandwidth) {
                row["weight_bytes"] = w.bytes.into();
                row["weight_gb_per_s"] = gbps.into();
                row["read_bandwidth_gb_per_s"] = bw.into();
                if let Some(dense) = w.dense_gbps {
                    row["dense_batch1_gb_per_s"] = dense.into();
                }
            }
            outln!("{row}");
        }
        return Ok(());
    }
    outln!("per layer, batch {batch} (median ms, share of {total:.1} ms):");
    for (layer, ms) in rows {
        let share = 100.0 * ms / total.max(1e-9);
        let mut line = format!("  {layer:<8} {ms:>9.2} {share:>6.1}%");
        if let Some(k) = kernel(layer) {
            line += &format!("  {}", k.description);
        }
        if let (Some((w, gbps)), Some(bw)) = (rate(layer, *ms), bandwidth) {
            line += &format!(
                "; weights {:.1} MB at {gbps:.1} GB/s ({:.0}% of read bandwidth)",
                w.bytes as f64 / 1e6,
                100.0 * gbps / bw
            );
            if let Some(dense) = w.dense_gbps {
                line += &format!(
                    ", dense at batch 1 {dense:.1} GB/s ({:.0}%)",
                    100.0 * dense / bw
                );
            }
        }
        outln!("{line}");
    }
    if let Some(bw) = bandwidth {
        outln!(
            "read bandwidth {bw:.1} GB/s (all threads summing 256 MiB). The CPU engine skips \
             the weight rows of zero inputs, so a layer's nominal rate can exceed it; \
             'dense' streams every row"
        );
    }
    Ok(())
}

/// The largest `bench-lrn --radius` (AlexNet's is 2; its conv1 has 96 channels).
const MAX_LRN_RADIUS: usize = 1000;

/// Time local response normalization: ours (one pass), burn's, and 2r+1 slices, by radius.
#[derive(Args)]
pub struct BenchLrnArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Comma-separated depth radii (at most 1000).
    #[arg(long, default_value = "1,2,5,10,20", value_delimiter = ',')]
    radius: Vec<usize>,
    /// Timed calls per implementation and radius.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

/// Runs `alexvgg bench-lrn`.
pub fn run_lrn(a: BenchLrnArgs) -> Result<()> {
    // the slices version pads the input with `r` planes each side: keep it within reason
    if let Some(r) = a.radius.iter().find(|&&r| r > MAX_LRN_RADIUS) {
        bail!("--radius {r} is out of range: at most {MAX_LRN_RADIUS}");
    }
    let (backend, dev) = make_device(a.device.device.as_deref())?;
    let shape = [1, 96, 57, 57];
    if !a.json {
        outln!(
            "LRN on {:?} ({}), median of {} calls, ms",
            shape,
            describe(backend, &dev),
            a.iters
        );
        outln!(
            "{:>6} {:>7} {:>13} {:>10} {:>10} {:>12}",
            "radius",
            "window",
            "ours (cumsum)",
            "pool",
            "burn",
            "2r+1 slices"
        );
    }
    for row in bench::bench_lrn(&dev, shape, &a.radius, a.iters) {
        if a.json {
            outln!("{}", serde_json::to_string(&row)?);
        } else {
            outln!(
                "{:>6} {:>7} {:>13.2} {:>10.2} {:>10.2} {:>12.2}",
                row.depth_radius,
                2 * row.depth_radius + 1,
                row.ours_ms,
                row.pool_ms,
                row.burn_ms,
                row.slices_ms
            );
        }
    }
    Ok(())
}

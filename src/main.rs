//! The `alexvgg` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use alexvgg::{architecture, bench, device, table};
use alexvgg_import::{Format, load_model, read_tensors};
use alexvgg_models::{Architecture, NetworkShape, gflops};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

/// AlexNet (LRN, grouped convolutions) and VGG on burn, with the original weights.
#[derive(Parser)]
#[command(name = "alexvgg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which network.
#[derive(Args, Clone)]
struct ModelArgs {
    /// alexnet, vgg11, vgg13, vgg16, vgg19, or a full name (alexnet-caffe, vgg16_bn).
    #[arg(long, short, default_value = "alexnet")]
    model: String,
    /// AlexNet variant: tf (the note's TensorFlow graph), caffe (BVLC deploy), torchvision.
    #[arg(long)]
    variant: Option<String>,
    /// VGG with BatchNorm (torchvision's vggNN_bn).
    #[arg(long)]
    batch_norm: bool,
}

impl ModelArgs {
    fn arch(&self) -> Result<Architecture> {
        Ok(architecture(
            &self.model,
            self.variant.as_deref(),
            self.batch_norm,
        )?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print the per-layer table (output size, window, groups, parameters, multiply-adds).
    Layers {
        #[command(flatten)]
        model: ModelArgs,
        /// Input side (default: the original's, 227 or 224).
        #[arg(long)]
        input: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every parameter tensor with its burn shape and the note's TensorFlow name/shape.
    Params {
        #[command(flatten)]
        model: ModelArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Classify images (files or folders) with pretrained weights; prints the top-k classes.
    Classify(ClassifyArgs),
    /// Time forward passes on a device.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Device: cpu, flex, ndarray, wgpu, wgpu:N, wgpu:cpu (or ALEXVGG_DEVICE).
        #[arg(long)]
        device: Option<String>,
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
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Time local response normalization: ours (one pass), burn's, and 2r+1 slices, by radius.
    BenchLrn {
        /// Device: cpu, flex, ndarray, wgpu, wgpu:N, wgpu:cpu (or ALEXVGG_DEVICE).
        #[arg(long)]
        device: Option<String>,
        /// Comma-separated depth radii.
        #[arg(long, default_value = "1,2,5,10,20", value_delimiter = ',')]
        radius: Vec<usize>,
        /// Timed calls per implementation and radius.
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Convert a weight file once into burn's native format (fast to load).
    Convert {
        /// Input weights (.npy, .npz, safetensors, burnpack).
        input: PathBuf,
        /// Output burnpack file.
        output: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// List the tensors of a weight file (name, dtype, shape) without building a model.
    Inspect {
        /// Weight file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Layers { model, input, json } => {
            let arch = model.arch()?;
            let device = device::make_device(Some("cpu"))?.1;
            let net = arch.init(&NetworkShape::default(), &device)?;
            let side = input.unwrap_or(arch.input_size());
            let rows = net.layers([3, side, side])?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&table::layers_json(&arch, &rows))?
                );
            } else {
                print!("{}", table::layers_text(&arch, &rows));
            }
        }
        Command::Params { model, json } => {
            let arch = model.arch()?;
            let device = device::make_device(Some("cpu"))?.1;
            let net = arch.init(&NetworkShape::default(), &device)?;
            let rows = table::param_rows(&arch, &net);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", table::params_text(&arch, &rows));
            }
        }
        Command::Classify(args) => return classify(args),
        Command::Bench {
            model,
            device,
            batch_size,
            iters,
            warmup,
            weights,
            json,
        } => {
            let arch = model.arch()?;
            let (backend, dev) = device::make_device(device.as_deref())?;
            let net = match &weights {
                Some(path) => {
                    let started = std::time::Instant::now();
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
            let gflop = gflops(&net.layers([3, side, side])?);
            let device_name = device::describe(backend, &dev);
            if !json {
                println!(
                    "{} on {device_name}, {side}x{side}, {gflop:.2} GFLOP/image, {warmup} warm-up + {iters} timed passes",
                    arch.describe()
                );
                println!(
                    "{:>6} {:>10} {:>10} {:>10} {:>10} {:>9}",
                    "batch", "best ms", "median ms", "ms/image", "images/s", "GFLOP/s"
                );
            }
            let spec = bench::BenchSpec {
                model: arch.name(),
                device_name: device_name.clone(),
                side,
                warmup,
                iters,
                gflop_per_image: gflop,
            };
            for &batch in &batch_size {
                if batch == 0 {
                    bail!("--batch-size values must be at least 1");
                }
                let r = bench::bench_forward(&net, &dev, &spec, batch);
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{:>6} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>9.1}",
                        r.batch,
                        r.best_ms,
                        r.median_ms,
                        r.ms_per_image,
                        r.images_per_s,
                        r.gflops_per_s
                    );
                }
            }
        }
        Command::BenchLrn {
            device,
            radius,
            iters,
            json,
        } => {
            let (backend, dev) = device::make_device(device.as_deref())?;
            let shape = [1, 96, 57, 57];
            if !json {
                println!(
                    "LRN on {:?} ({}), median of {iters} calls, ms",
                    shape,
                    device::describe(backend, &dev)
                );
                println!(
                    "{:>6} {:>7} {:>13} {:>10} {:>10} {:>12}",
                    "radius", "window", "ours (cumsum)", "pool", "burn", "2r+1 slices"
                );
            }
            for row in bench::bench_lrn(&dev, shape, &radius, iters) {
                if json {
                    println!("{}", serde_json::to_string(&row)?);
                } else {
                    println!(
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
        }
        Command::Convert {
            input,
            output,
            model,
        } => {
            let arch = model.arch()?;
            let device = device::make_device(Some("cpu"))?.1;
            let (format, shape) = alexvgg_import::convert(&input, &arch, &output, &device)
                .with_context(|| {
                    format!("converting {} to {}", input.display(), output.display())
                })?;
            println!(
                "converted {} ({}) to {} for {} ({} classes)",
                input.display(),
                format.name(),
                output.display(),
                arch.describe(),
                shape.num_classes
            );
        }
        Command::Inspect { file, json } => {
            let (format, map) = read_tensors(&file)?;
            if json {
                let tensors: Vec<_> = map
                    .iter()
                    .map(|(k, t)| serde_json::json!({"name": k, "dtype": "float32", "shape": t.shape}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"file": file, "format": format.name(), "tensors": tensors})
                    )?
                );
            } else {
                println!(
                    "{} ({}), {} tensors",
                    file.display(),
                    format.name(),
                    map.len()
                );
                for (k, t) in &map {
                    println!("  {k:<32} float32 {:?}", t.shape);
                }
                if let Some(g) =
                    alexvgg_import::guess_network(&map).filter(|_| format != Format::Burnpack)
                {
                    println!("looks like: {g}");
                }
            }
        }
    }
    Ok(())
}

/// Arguments of `alexvgg classify`.
#[derive(Args)]
struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Weights: a known name (bvlc_alexnet, vgg16_frossard, alexnet_torchvision,
    /// vgg16_torchvision; fetched on first use) or a file.
    #[arg(long)]
    weights: Option<String>,
    /// Labels file (one per line, or index<TAB>synset<TAB>label); default: ImageNet's 1000.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Preprocessing preset: caffe, frossard, torchvision, note (default: the weights').
    #[arg(long)]
    preprocess: Option<String>,
    /// Device: cpu, flex, ndarray, wgpu, wgpu:N, wgpu:cpu (or ALEXVGG_DEVICE).
    #[arg(long)]
    device: Option<String>,
    /// Classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// One JSON object per image.
    #[arg(long)]
    json: bool,
    /// Stop at the first unreadable image.
    #[arg(long)]
    fail_fast: bool,
    /// Image files and folders.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

fn classify(a: ClassifyArgs) -> Result<()> {
    use alexvgg::classify::{collect_images, prepare, probabilities, top_k};
    use alexvgg::preprocess::Preset;
    use alexvgg::weights;
    use std::io::IsTerminal;

    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let arch = a.model.arch()?;
    let spec = match &a.weights {
        Some(w) => w.clone(),
        None => weights::default_for(&arch)
            .map(|w| w.name.to_string())
            .with_context(|| {
                format!(
                    "no default weights for {}; pass --weights FILE",
                    arch.describe()
                )
            })?,
    };
    let preset_override = a
        .preprocess
        .as_deref()
        .map(|p| {
            Preset::parse(p).with_context(|| {
                format!("unknown --preprocess '{p}' (caffe, frossard, torchvision, note)")
            })
        })
        .transpose()?;
    let (path, entry) = weights::resolve(&spec)?;
    let (backend, dev) = device::make_device(a.device.as_deref())?;
    let (net, shape, format) = load_model(&path, &arch, &dev)?;
    let preset = preset_override
        .or(entry.as_ref().map(|e| e.preset))
        .unwrap_or_else(|| weights::default_preset(&arch, format));
    let classes = match &a.labels {
        Some(p) => alexvgg::labels::read_labels(p)
            .with_context(|| format!("reading labels {}", p.display()))?,
        None if shape.num_classes == 1000 => alexvgg::labels::imagenet(),
        None => bail!(
            "{} has {} classes, not ImageNet's 1000: pass --labels FILE",
            path.display(),
            shape.num_classes
        ),
    };
    let side = arch.input_size();
    let images = collect_images(&a.inputs);
    let started = std::time::Instant::now();
    let progress = !a.json && images.len() > a.batch_size && std::io::stderr().is_terminal();
    let (mut done, mut failed) = (0usize, 0usize);
    let weights_name = entry
        .as_ref()
        .map_or_else(|| path.display().to_string(), |e| e.name.to_string());
    for chunk in images.chunks(a.batch_size) {
        let prepared = prepare(chunk, preset, side);
        let mut ok_paths = Vec::new();
        let mut ok_images = Vec::new();
        for (p, r) in chunk.iter().zip(prepared) {
            match r {
                Ok(img) => {
                    ok_paths.push(p);
                    ok_images.push(img);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {e}");
                    if a.fail_fast {
                        bail!("stopped at the first unreadable image (--fail-fast)");
                    }
                }
            }
        }
        for (p, probs) in ok_paths
            .iter()
            .zip(probabilities(&net, &ok_images, side, &dev))
        {
            let top = top_k(&probs, a.top_k, &classes);
            if a.json {
                let obj = serde_json::json!({
                    "file": p, "model": arch.name(), "weights": weights_name, "preprocess": preset.name(), "top_k": top,
                });
                println!("{}", serde_json::to_string(&obj)?);
            } else {
                println!("{}", p.display());
                let width = top
                    .iter()
                    .map(|t| t.label.chars().count())
                    .max()
                    .unwrap_or(0);
                for t in &top {
                    println!("  {:<width$}  {:.4}", t.label, t.probability);
                }
            }
        }
        done += chunk.len();
        if progress {
            eprint!("\r[{done}/{}] images", images.len());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if progress {
        eprintln!();
    }
    if !a.json {
        eprintln!(
            "{} images in {secs:.2} s ({:.2} images/s) with {} on {}, preprocessing '{}'{}",
            done - failed,
            (done - failed) as f64 / secs.max(1e-9),
            arch.describe(),
            device::describe(backend, &dev),
            preset.name(),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        );
    }
    if failed > 0 {
        bail!("{failed} of {done} images could not be read");
    }
    Ok(())
}

//! The `alexvgg` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use alexvgg::runner::{ConvChoice, EngineKind, Runner};
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
        /// Describe the network of a weight file or fine-tuning output directory (its classes,
        /// width and architecture) instead of the original.
        #[arg(long)]
        weights: Option<PathBuf>,
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
        /// Time training steps (forward, loss, backward, SGD update) instead of inference.
        #[arg(long)]
        train: bool,
        /// Inference engine: auto (the alexvgg-cpu kernels on CPU backends, burn on wgpu), burn, kernels.
        #[arg(long, value_enum, default_value = "auto")]
        engine: EngineKind,
        /// Convolutions of the CPU engine: auto, im2col (everywhere), winograd (4x4 tiles for
        /// stride-1 3x3), winograd-small (2x2 tiles), direct (everywhere).
        #[arg(long, value_enum, default_value = "auto")]
        conv: ConvChoice,
        /// Also print the median time of each layer (first batch size only).
        #[arg(long)]
        per_layer: bool,
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
    /// Fine-tune on an image folder (one sub-folder per class): new head, frozen layers,
    /// augmentation, checkpoints, metrics; `--resume` continues an interrupted run.
    Finetune(Box<FinetuneArgs>),
    /// Write a synthetic image folder (classes of distinct shapes, textures and colours).
    MakeDataset {
        /// Output folder (one sub-folder per class is created).
        dir: PathBuf,
        /// Number of classes (2 to 8).
        #[arg(long, default_value_t = 6)]
        classes: usize,
        /// Images per class.
        #[arg(long, default_value_t = 50)]
        per_class: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = 96)]
        size: u32,
        /// Seed (the same seed writes the same images).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Download known weights into the cache (resuming an interrupted download), verify them
    /// and convert them to burnpack; `--list` prints the table of known weights.
    Fetch {
        /// Known weight names (see --list).
        names: Vec<String>,
        /// Print the known weights (name, network, checksum, licence, accuracy, preprocessing).
        #[arg(long)]
        list: bool,
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
        Command::Layers {
            model,
            input,
            weights,
            json,
        } => {
            let device = device::make_device(Some("cpu"))?.1;
            let (arch, net) = match &weights {
                Some(w) => match alexvgg::finetune::open_finetuned(w)? {
                    Some(f) => (f.arch, load_model(&f.weights, &f.arch, &device)?.0),
                    None => {
                        let arch = model.arch()?;
                        (arch, load_model(w, &arch, &device)?.0)
                    }
                },
                None => {
                    let arch = model.arch()?;
                    (arch, arch.init(&NetworkShape::default(), &device)?)
                }
            };
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
        Command::Finetune(args) => return finetune(*args),
        Command::Fetch { names, list } => {
            use alexvgg::weights;
            use std::io::IsTerminal;
            if list || names.is_empty() {
                for w in weights::known() {
                    let acc = w
                        .accuracy
                        .map_or("-".to_string(), |(t1, t5)| format!("{t1}/{t5}"));
                    let sum = match &w.checksum {
                        Some(weights::Checksum::Sha256Prefix(h)) => format!("sha256 {h}..."),
                        Some(weights::Checksum::Sha256(h)) => format!("sha256 {h}"),
                        Some(weights::Checksum::Sha1(h)) => format!("sha1 {h}"),
                        None => "none published (checked by structure)".to_string(),
                    };
                    println!(
                        "{:<20} {:<20} top-1/5 {:<14} {:<12} {}\n{:<20} {}\n{:<20} checksum: {sum}; licence: {}",
                        w.name,
                        w.architecture.name(),
                        acc,
                        w.preset.name(),
                        w.url,
                        "",
                        w.source,
                        "",
                        w.licence
                    );
                }
                if names.is_empty() {
                    return Ok(());
                }
            }
            for name in &names {
                let entry = weights::find(name)?;
                let f = weights::fetch(&entry, std::io::stderr().is_terminal())
                    .with_context(|| format!("fetching {name}"))?;
                println!(
                    "{name}: {}{}",
                    f.original.display(),
                    f.native
                        .map(|n| format!(", converted to {}", n.display()))
                        .unwrap_or_default()
                );
            }
        }
        Command::MakeDataset {
            dir,
            classes,
            per_class,
            size,
            seed,
        } => {
            alexvgg::finetune::synth::make_dataset(&dir, classes, per_class, size, seed)?;
            println!(
                "wrote {} images ({classes} classes x {per_class}, {size}x{size}) to {}",
                classes * per_class,
                dir.display()
            );
        }
        Command::Bench {
            model,
            device,
            batch_size,
            iters,
            warmup,
            weights,
            train,
            engine,
            conv,
            per_layer,
            json,
        } => {
            let arch = model.arch()?;
            let (backend, dev) = device::make_device(device.as_deref())?;
            if train && weights.is_some() {
                bail!("--train times random weights; leave out --weights");
            }
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
            if train && engine == EngineKind::Kernels {
                bail!("--train runs burn's autodiff; --engine kernels is inference only");
            }
            let started = std::time::Instant::now();
            let runner = Runner::new(
                net,
                &dev,
                backend,
                if train { EngineKind::Burn } else { engine },
                conv,
            )?;
            if matches!(runner, Runner::Kernels(_)) {
                eprintln!(
                    "compiled for the CPU engine in {:.3} s",
                    started.elapsed().as_secs_f64()
                );
            }
            let device_name = format!("{}, {}", device::describe(backend, &dev), runner.describe());
            if !json {
                println!(
                    "{} {} on {device_name}, {side}x{side}, {gflop:.2} GFLOP/image{}, {warmup} warm-up + {iters} timed {}",
                    arch.describe(),
                    if train { "training" } else { "inference" },
                    if train { " forward (x3 per step)" } else { "" },
                    if train { "steps" } else { "passes" },
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
                let r = if train {
                    bench::bench_train(&arch, &dev, &spec, batch)?
                } else {
                    bench::bench_forward(&runner, &spec, batch)?
                };
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
            if per_layer {
                let batch = batch_size.first().copied().unwrap_or(1);
                let rows = bench::per_layer_ms(&runner, side, batch, warmup, iters)?;
                let total: f64 = rows.iter().map(|(_, ms)| ms).sum();
                if json {
                    for (layer, ms) in &rows {
                        println!(
                            "{}",
                            serde_json::json!({"layer": layer, "batch": batch, "median_ms": ms})
                        );
                    }
                } else {
                    println!("per layer, batch {batch} (median ms, share of {total:.1} ms):");
                    for (layer, ms) in &rows {
                        println!(
                            "  {layer:<8} {ms:>9.2} {:>6.1}%",
                            100.0 * ms / total.max(1e-9)
                        );
                    }
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
                    .map(|(k, t)| serde_json::json!({"name": k, "dtype": t.source_dtype, "shape": t.shape}))
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
                    println!("  {k:<32} {:<8} {:?}", t.source_dtype, t.shape);
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
    /// Inference engine: auto (the alexvgg-cpu kernels on CPU backends, burn on wgpu), burn, kernels.
    #[arg(long, value_enum, default_value = "auto")]
    engine: EngineKind,
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
    let finetuned = a
        .weights
        .as_deref()
        .map(|w| alexvgg::finetune::open_finetuned(std::path::Path::new(w)))
        .transpose()?
        .flatten();
    // a fine-tuning output directory names its own architecture
    let arch = match &finetuned {
        Some(f) => f.arch,
        None => a.model.arch()?,
    };
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
    let (path, entry) = match &finetuned {
        Some(f) => (f.weights.clone(), None),
        None => weights::resolve(&spec)?,
    };
    let (backend, dev) = device::make_device(a.device.as_deref())?;
    let (net, shape, format) = load_model(&path, &arch, &dev)?;
    let runner = Runner::new(net, &dev, backend, a.engine, ConvChoice::Auto)?;
    let preset = preset_override
        .or(finetuned.as_ref().map(|f| f.preset))
        .or(entry.as_ref().map(|e| e.preset))
        .unwrap_or_else(|| weights::default_preset(&arch, format));
    let classes = match &a.labels {
        Some(p) => alexvgg::labels::read_labels(p)
            .with_context(|| format!("reading labels {}", p.display()))?,
        None if finetuned.is_some() => finetuned
            .iter()
            .flat_map(|f| &f.classes)
            .map(|label| alexvgg::labels::Class {
                synset: None,
                label: label.clone(),
            })
            .collect(),
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
            .zip(probabilities(&runner, &ok_images, side)?)
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
            "{} images in {secs:.2} s ({:.2} images/s) with {} on {} ({}), preprocessing '{}'{}",
            done - failed,
            (done - failed) as f64 / secs.max(1e-9),
            arch.describe(),
            device::describe(backend, &dev),
            runner.describe(),
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

/// Arguments of `alexvgg finetune`.
#[derive(Args)]
struct FinetuneArgs {
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
    /// sgd or adam.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// SGD momentum (0 for none).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// L2 weight decay.
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// constant, step (x --lr-gamma every --lr-step epochs) or cosine (to --min-lr).
    #[arg(long, default_value = "constant")]
    lr_schedule: String,
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
    #[arg(long, default_value = "none")]
    freeze: String,
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
    #[arg(long)]
    preprocess: Option<String>,
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
    /// Device: cpu, flex, ndarray, wgpu, wgpu:N, wgpu:cpu (or ALEXVGG_DEVICE).
    #[arg(long)]
    device: Option<String>,
    /// Print each epoch's metrics as a JSON line on stdout.
    #[arg(long)]
    json: bool,
}

impl FinetuneArgs {
    fn run_config(&self) -> Result<alexvgg::finetune::RunConfig> {
        use alexvgg::finetune::data::ValSource;
        use alexvgg::finetune::{Freeze, LrSchedule, OptimizerKind, OptimizerSettings, RunConfig};
        use alexvgg::preprocess::{Augment, Preset};
        let arch = self.model.arch()?;
        let data = self
            .data
            .clone()
            .context("--data DIR is required (unless --resume)")?;
        let kind = match self.optimizer.as_str() {
            "sgd" => OptimizerKind::Sgd,
            "adam" => OptimizerKind::Adam,
            o => bail!("--optimizer: expected sgd or adam, got '{o}'"),
        };
        let schedule = match self.lr_schedule.as_str() {
            "constant" => LrSchedule::Constant,
            "step" => LrSchedule::Step {
                every: self.lr_step.unwrap_or((self.epochs / 3).max(1)),
                gamma: self.lr_gamma,
            },
            "cosine" => LrSchedule::Cosine {
                min_lr: self.min_lr,
            },
            o => bail!("--lr-schedule: expected constant, step or cosine, got '{o}'"),
        };
        let weights = match self.weights.as_deref() {
            Some("none") => None,
            Some(w) => Some(w.to_string()),
            None => Some(
                alexvgg::weights::default_for(&arch)
                    .map(|w| w.name.to_string())
                    .with_context(|| {
                        format!(
                            "no default weights for {}; pass --weights NAME|FILE|none",
                            arch.describe()
                        )
                    })?,
            ),
        };
        if weights.is_some() && (self.hidden.is_some() || self.width_divisor.is_some()) {
            bail!(
                "--hidden and --width-divisor apply to --weights none only (the weights fix the shape)"
            );
        }
        let preprocess = self
            .preprocess
            .as_deref()
            .map(|p| {
                Preset::parse(p).with_context(|| {
                    format!(
                        "--preprocess: unknown preset '{p}' (caffe, frossard, torchvision, note)"
                    )
                })
            })
            .transpose()?;
        Ok(RunConfig {
            architecture: arch.name(),
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
                kind,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
            },
            schedule,
            freeze: Freeze::parse(&self.freeze)?,
            seed: self.seed,
            augment: (!self.no_augment).then(|| Augment {
                scale: (self.crop_scale, 1.0),
                flip: !self.no_flip,
                ..Augment::default()
            }),
            dropout: self.dropout,
            preprocess,
            hidden: self.hidden,
            width_divisor: self.width_divisor,
            checkpoint_every: self.checkpoint_every,
        })
    }
}

fn finetune(a: FinetuneArgs) -> Result<()> {
    use alexvgg::finetune::{Event, run};
    use std::io::IsTerminal;

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
    let (backend, dev) = device::make_device(a.device.as_deref())?;
    let terminal = std::io::stderr().is_terminal();
    let json = a.json;
    let mut epochs_total = 0;
    let mut events = |e: Event<'_>| match e {
        Event::Started {
            epochs,
            train,
            val,
            classes,
            trainable,
            frozen,
            resumed,
        } => {
            epochs_total = epochs;
            eprintln!(
                "{} classes, {train} training and {val} validation images; {trainable} parameter tensors trained, {frozen} frozen; on {}",
                classes.len(),
                device::describe(backend, &dev)
            );
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
        } => {
            if terminal {
                eprint!(
                    "\repoch {epoch}/{epochs_total} step {step}/{steps}  loss {loss:.4}  {images_per_s:.1} images/s   "
                );
            }
        }
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
            if json {
                println!("{}", serde_json::to_string(m).unwrap_or_default());
            } else {
                println!(
                    "epoch {:>3}  train loss {:.4} top-1 {:5.1}%  val loss {:.4} top-1 {:5.1}% top-5 {:5.1}%  {:7.1} images/s  lr {:.2e}  {:6.1} s{}",
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
                );
            }
        }
    };
    let summary = run(config.as_ref(), &a.out, &dev, &mut events)
        .with_context(|| format!("fine-tuning into {}", a.out.display()))?;
    if let Some(best) = summary
        .history
        .iter()
        .filter(|m| m.best)
        .max_by(|x, y| x.epoch.cmp(&y.epoch))
    {
        eprintln!(
            "best: epoch {} with validation top-1 {:.1}%; model in {}",
            best.epoch,
            100.0 * best.val_top1,
            a.out.join("best.bpk").display()
        );
    }
    Ok(())
}

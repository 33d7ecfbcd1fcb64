//! `alexvgg classify`: image files and folders in, top-k classes out.

use std::io::IsTerminal;
use std::path::PathBuf;

use alexvgg_inference::classify::{collect_images, prepare_checked, probabilities, top_k};
use alexvgg_inference::device::{describe, make_device};
use alexvgg_inference::labels::read_labels;
use alexvgg_inference::memory::{bytes_per_image, check_batch};
use alexvgg_inference::preprocess::{ImageLimits, MAX_PIXELS_ENV, Preset};
use alexvgg_inference::pretrained::{Pretrained, PretrainedError};
use alexvgg_inference::runner::{ConvChoice, EngineKind, Runner};
use anyhow::{Context, Result, bail};
use clap::Args;

use super::{
    DeviceArgs, ModelArgs, choice, printable, printable_path, report_unreadable, report_warnings,
};

/// Classify images (files or folders) with pretrained weights; prints the top-k classes.
#[derive(Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Weights: a known name (bvlc_alexnet, vgg16_frossard, alexnet_torchvision,
    /// vgg16_torchvision; fetched on first use), a file, or a fine-tuning output directory.
    #[arg(long)]
    weights: Option<String>,
    /// Labels file (one per line, or index<TAB>synset<TAB>label); default: the weights' own.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Preprocessing preset (default: the weights').
    #[arg(long, value_parser = choice::<Preset>())]
    preprocess: Option<Preset>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Inference engine: auto (the alexvgg-cpu kernels on CPU backends, burn on wgpu), burn, kernels.
    #[arg(long, default_value = "auto", value_parser = choice::<EngineKind>())]
    engine: EngineKind,
    /// Classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Largest image accepted, in pixels (width x height), both as decoded and once its
    /// shorter side is scaled to 256; larger images are reported and skipped, unread.
    #[arg(long, env = MAX_PIXELS_ENV, default_value_t = ImageLimits::DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
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

/// Runs `alexvgg classify`.
pub fn run(a: ClassifyArgs) -> Result<()> {
    // every flag and input is checked before weights are downloaded or loaded
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    if a.max_image_pixels == 0 {
        bail!("--max-image-pixels must be at least 1");
    }
    let limits = ImageLimits::new(a.max_image_pixels);
    let model_arch = a.model.arch()?;
    let (backend, dev) = make_device(a.device.device.as_deref())?;
    if let Some(path) = &a.labels {
        read_labels(path).with_context(|| format!("reading labels {}", path.display()))?;
    }
    let images = collect_images(&a.inputs);
    if images.is_empty() {
        bail!(
            "no images found in {} (looked for the extensions {})",
            a.inputs
                .iter()
                .map(|p| printable_path(p))
                .collect::<Vec<_>>()
                .join(", "),
            alexvgg_inference::classify::IMAGE_EXTENSIONS.join(", ")
        );
    }
    let p = Pretrained::load(a.weights.as_deref(), model_arch, &dev).map_err(|e| match e {
        PretrainedError::NoDefault(_) => anyhow::anyhow!("{e}: pass --weights FILE"),
        e => e.into(),
    })?;
    if let Some(note) = p.variant_note() {
        eprintln!("warning: {}", printable(&note));
    }
    let classes = p.labels(a.labels.as_deref()).map_err(|e| match e {
        PretrainedError::UnknownClasses { .. } => anyhow::anyhow!("{e}: pass --labels FILE"),
        e => e.into(),
    })?;
    let (arch, preset, weights_name) = (p.arch, a.preprocess.unwrap_or(p.preset), p.name());
    let side = arch.input_size();
    let per_image = bytes_per_image(&p.model.layers([3, side, side])?);
    check_batch(a.batch_size.min(images.len()), per_image).context("--batch-size")?;
    let runner = Runner::new(p.model, &dev, backend, a.engine, ConvChoice::Auto)?;
    let started = std::time::Instant::now();
    let progress = !a.json && images.len() > a.batch_size && std::io::stderr().is_terminal();
    let (mut done, mut failed) = (0usize, 0usize);
    for chunk in images.chunks(a.batch_size) {
        let mut ok_paths = Vec::new();
        let mut ok_images = Vec::new();
        for (path, r) in chunk
            .iter()
            .zip(prepare_checked(chunk, preset, side, &limits))
        {
            match r {
                Ok(img) => {
                    report_warnings(&img.warnings);
                    ok_paths.push(path);
                    ok_images.push(img.input);
                }
                Err(e) => report_unreadable(&e, a.fail_fast, &mut failed)?,
            }
        }
        let probs = probabilities(&runner, &ok_images, side)
            .with_context(|| format!("classifying {} images", ok_images.len()))?;
        for (path, probs) in ok_paths.iter().zip(probs) {
            let top = top_k(&probs, a.top_k, &classes);
            if a.json {
                // a file name that is not UTF-8 is written with U+FFFD in place of its bad bytes
                let obj = serde_json::json!({
                    "file": path.to_string_lossy(), "model": arch.name(), "weights": weights_name,
                    "preprocess": preset.name(), "top_k": top,
                });
                outln!("{}", serde_json::to_string(&obj)?);
            } else {
                outln!("{}", printable_path(path));
                let labels: Vec<_> = top.iter().map(|t| printable(&t.label)).collect();
                let width = labels.iter().map(|l| l.chars().count()).max();
                let width = width.unwrap_or(0);
                for (t, label) in top.iter().zip(&labels) {
                    outln!("  {label:<width$}  {:.4}", t.probability);
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
            describe(backend, &dev),
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

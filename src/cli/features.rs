//! `alexvgg features`: activations of named layers for images, written for other tools
//! (`.npy` for one layer, `.safetensors` for several) with the image paths in a sidecar file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use alexvgg_import::{write_npy, write_safetensors_f32};
use alexvgg_inference::classify::{collect_images, prepare_checked};
use alexvgg_inference::device::{describe, make_device};
use alexvgg_inference::features::{SpatialPool, check_input, extract};
use alexvgg_inference::preprocess::{ImageLimits, Preset};
use alexvgg_inference::pretrained::{Pretrained, PretrainedError};
use alexvgg_inference::runner::{ConvChoice, EngineKind, Runner};
use anyhow::{Context, Result, bail};
use clap::Args;

use super::{
    Choice, DeviceArgs, ModelArgs, choice, report_unreadable, report_warnings, write_row_paths,
};

impl Choice for SpatialPool {
    fn all() -> Vec<Self> {
        SpatialPool::ALL.to_vec()
    }
    fn name(&self) -> String {
        SpatialPool::name(*self).to_string()
    }
}

/// Write the activations of named layers (`conv5`, `fc7`, `conv5_3`...) for images: one layer
/// as `.npy` `[N, ...]`, several as `.safetensors` (one tensor per layer), and the image paths
/// in row order beside them (`OUT.paths.txt`).
#[derive(Args)]
pub struct FeaturesArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Weights: a known name, a file, or a fine-tuning output directory (as for classify).
    #[arg(long)]
    weights: Option<String>,
    /// Layer to write (repeat for several): the names `alexvgg layers` prints; a convolution
    /// or fc6/fc7 is its output after ReLU, fc8 the logits.
    #[arg(long = "layer", required = true)]
    layers: Vec<String>,
    /// Pool each feature map over space into one vector per image (fully connected layers are
    /// left as they are).
    #[arg(long, value_parser = choice::<SpatialPool>())]
    pool: Option<SpatialPool>,
    /// Input side (default: the network's, 227 or 224); other sizes suit convolutional layers
    /// (the layers after the last one asked for are not run).
    #[arg(long)]
    size: Option<usize>,
    /// Output file: `.npy` for one layer, `.safetensors` for several.
    #[arg(long)]
    out: PathBuf,
    /// Preprocessing preset (default: the weights').
    #[arg(long, value_parser = choice::<Preset>())]
    preprocess: Option<Preset>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Inference engine: auto (the alexvgg-cpu kernels on CPU backends, burn on wgpu), burn, kernels.
    #[arg(long, default_value = "auto", value_parser = choice::<EngineKind>())]
    engine: EngineKind,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Stop at the first unreadable image.
    #[arg(long)]
    fail_fast: bool,
    /// Image files and folders.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// Runs `alexvgg features`.
pub fn run(a: FeaturesArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut layers = a.layers.clone();
    layers.dedup();
    let ext = a.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    match (layers.len(), ext) {
        (1, "npy") | (2.., "safetensors") => {}
        (1, _) => bail!(
            "--out: one layer is written as .npy (got '{}')",
            a.out.display()
        ),
        _ => bail!(
            "--out: several layers are written as .safetensors (got '{}')",
            a.out.display()
        ),
    }
    let (backend, dev) = make_device(a.device.device.as_deref())?;
    let p = Pretrained::load(a.weights.as_deref(), a.model.arch()?, &dev).map_err(|e| match e {
        PretrainedError::NoDefault(_) => anyhow::anyhow!("{e}: pass --weights FILE"),
        e => e.into(),
    })?;
    let side = a.size.unwrap_or(p.arch.input_size());
    check_input(&p.model, &layers, side).with_context(|| format!("--size {side}"))?;
    let (arch, preset) = (p.arch, a.preprocess.unwrap_or(p.preset));
    let runner = Runner::new(p.model, &dev, backend, a.engine, ConvChoice::Auto)?;
    let images = collect_images(&a.inputs);
    if images.is_empty() {
        bail!("no images found in {:?}", a.inputs);
    }
    let limits = ImageLimits::from_env();
    let started = std::time::Instant::now();
    let progress = images.len() > a.batch_size && std::io::stderr().is_terminal();
    let mut rows: Vec<(Vec<usize>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); layers.len()];
    let mut written: Vec<&Path> = Vec::new();
    let (mut done, mut failed) = (0usize, 0usize);
    for chunk in images.chunks(a.batch_size) {
        let mut ok = Vec::new();
        for (path, r) in chunk
            .iter()
            .zip(prepare_checked(chunk, preset, side, &limits))
        {
            match r {
                Ok(img) => {
                    report_warnings(&img.warnings);
                    ok.push((path, img.input));
                }
                Err(e) => report_unreadable(&e, a.fail_fast, &mut failed)?,
            }
        }
        if !ok.is_empty() {
            let input: Vec<f32> = ok.iter().flat_map(|(_, img)| img.iter().copied()).collect();
            let dims = [ok.len(), 3, side, side];
            let feats = extract(&runner, input, dims, &layers, a.pool)?;
            for (row, f) in rows.iter_mut().zip(feats) {
                row.0 = f.shape[1..].to_vec();
                row.1.extend(f.data);
            }
            written.extend(ok.iter().map(|(p, _)| p.as_path()));
        }
        done += chunk.len();
        if progress {
            eprint!("\r[{done}/{}] images", images.len());
        }
    }
    if progress {
        eprintln!();
    }
    let n = written.len();
    if n == 0 {
        bail!("none of the {done} images could be read; nothing written");
    }
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = layers
        .iter()
        .zip(rows)
        .map(|(l, (dims, data))| (l.clone(), [vec![n], dims].concat(), data))
        .collect();
    match tensors.as_slice() {
        [(_, shape, data)] => write_npy(&a.out, shape, data)?,
        many => write_safetensors_f32(&a.out, many)?,
    }
    let sidecar = write_row_paths(&a.out, &written)?;
    let secs = started.elapsed().as_secs_f64();
    for (l, shape, _) in &tensors {
        eprintln!("{l}: {shape:?}");
    }
    eprintln!(
        "{n} images in {secs:.2} s ({:.2} images/s) with {} on {} ({}), preprocessing '{}': {} and {}{}",
        n as f64 / secs.max(1e-9),
        arch.describe(),
        describe(backend, &dev),
        runner.describe(),
        preset.name(),
        a.out.display(),
        sidecar.display(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        bail!("{failed} of {done} images could not be read");
    }
    Ok(())
}

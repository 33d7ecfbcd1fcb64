//! `alexvgg visualize filters|maps`: pictures of the first layer's filters, and of a layer's
//! activation maps for one image.

use std::path::PathBuf;

use alexvgg_inference::classify::prepare;
use alexvgg_inference::device::make_device;
use alexvgg_inference::features::{check_input, extract};
use alexvgg_inference::pictures::{bgr_input, filter_grid, map_grid};
use alexvgg_inference::preprocess::Preset;
use alexvgg_inference::pretrained::{Pretrained, PretrainedError};
use alexvgg_inference::runner::Runner;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use image::RgbImage;

use super::{DeviceArgs, ModelArgs, choice};

/// Pictures of the networks: the first layer's filters, or a layer's maps for an image.
#[derive(Args)]
pub struct VisualizeArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// The first convolution's filters as a grid of colour tiles (each min-max scaled, shown
    /// in RGB whatever channel order the weights use).
    Filters {
        #[command(flatten)]
        common: Common,
    },
    /// One image's activations at a layer as a grid of grey tiles, one per channel.
    Maps {
        /// The image.
        image: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Preprocessing preset (default: the weights').
        #[arg(long, value_parser = choice::<Preset>())]
        preprocess: Option<Preset>,
        #[command(flatten)]
        device: DeviceArgs,
    },
}

#[derive(Args)]
struct Common {
    #[command(flatten)]
    model: ModelArgs,
    /// Weights: a known name, a file, or a fine-tuning output directory.
    #[arg(long)]
    weights: Option<String>,
    /// Layer (`conv1`, `conv1_1` for filters; any convolution or pool for maps).
    #[arg(long)]
    layer: String,
    /// Each weight or activation drawn as ZOOM x ZOOM pixels.
    #[arg(long, default_value_t = 4)]
    zoom: u32,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `alexvgg visualize`.
pub fn run(a: VisualizeArgs) -> Result<()> {
    let (img, out) = match a.what {
        What::Filters { common } => {
            let dev = make_device(Some("cpu"))?.1;
            let p = load(&common, &dev)?;
            let img = filter_grid(
                &p.model,
                &p.arch,
                &common.layer,
                bgr_input(p.preset),
                common.zoom,
            )?;
            (img, common.out)
        }
        What::Maps {
            image,
            common,
            preprocess,
            device,
        } => {
            let (backend, dev) = make_device(device.device.as_deref())?;
            let p = load(&common, &dev)?;
            let side = p.arch.input_size();
            let layers = vec![common.layer.clone()];
            check_input(&p.model, &layers, side)?;
            let preset = preprocess.unwrap_or(p.preset);
            let input = prepare(std::slice::from_ref(&image), preset, side)
                .remove(0)
                .with_context(|| format!("reading {}", image.display()))?;
            let runner = Runner::auto(p.model, &dev, backend)?;
            let f = extract(&runner, input, [1, 3, side, side], &layers, None)?.remove(0);
            (map_grid(&f, common.zoom)?, common.out)
        }
    };
    save(&img, &out)?;
    outln!("wrote {} ({}x{})", out.display(), img.width(), img.height());
    Ok(())
}

fn load(c: &Common, dev: &burn::tensor::Device) -> Result<Pretrained> {
    Pretrained::load(c.weights.as_deref(), c.model.arch()?, dev).map_err(|e| match e {
        PretrainedError::NoDefault(_) => anyhow::anyhow!("{e}: pass --weights FILE"),
        e => e.into(),
    })
}

/// Saves a PNG through a temporary file renamed into place.
fn save(img: &RgbImage, out: &std::path::Path) -> Result<()> {
    let tmp = out.with_extension("png.partial");
    let written = img
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(anyhow::Error::from)
        .and_then(|()| std::fs::rename(&tmp, out).map_err(anyhow::Error::from));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", out.display()))
}

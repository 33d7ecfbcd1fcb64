//! `alexvgg explain`: why the network chose a class, as Grad-CAM or saliency maps: one picture
//! per image (the heat map over the image as the network saw it) and, with `--raw`, the maps
//! as one `.npy`.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use alexvgg_import::{write_bytes_atomic, write_npy};
use alexvgg_inference::classify::collect_images;
use alexvgg_inference::device::{describe, make_device};
use alexvgg_inference::explain::{Explainer, Method, Target, prepare_views};
use alexvgg_inference::memory::{bytes_per_image, check_batch};
use alexvgg_inference::overlay::{Caption, overlay};
use alexvgg_inference::preprocess::{ImageLimits, MAX_PIXELS_ENV, Preset};
use alexvgg_inference::pretrained::{Pretrained, PretrainedError};
use anyhow::{Context, Result, bail};
use clap::Args;

use super::{
    Choice, DeviceArgs, ModelArgs, choice, printable, printable_path, report_unreadable,
    report_warnings, write_row_paths,
};

impl Choice for Method {
    fn all() -> Vec<Self> {
        Method::ALL.to_vec()
    }
    fn name(&self) -> String {
        Method::name(*self).to_string()
    }
}

/// Explain the network's choice of class for images: Grad-CAM (at a layer, default the last
/// convolution) or saliency (at the input) maps of the class's logit, drawn over each image
/// as the network saw it (`OUT/NAME.METHOD.png`), and with `--raw` written as `[N, h, w]`.
#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Weights: a known name, a file, or a fine-tuning output directory (as for classify).
    #[arg(long)]
    weights: Option<String>,
    /// gradcam: relu(Σ_k mean(∂S/∂A_k) A_k) at a layer; saliency: max over channels of |∂S/∂x|.
    #[arg(long, default_value = "gradcam", value_parser = choice::<Method>())]
    method: Method,
    /// Grad-CAM's layer (a convolution, LRN or pool: the names `alexvgg layers` prints;
    /// default: the last convolution, after its ReLU).
    #[arg(long)]
    layer: Option<String>,
    /// The class whose logit is explained: top1 (each image's most probable) or an index.
    #[arg(long, default_value = "top1", value_name = "N|top1")]
    class: Target,
    /// Folder for the pictures (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Also write the maps, float32 [N, h, w] in the order of the images (listed in
    /// FILE.paths.txt), scaled to [0, 1].
    #[arg(long, value_name = "FILE.npy")]
    raw: Option<PathBuf>,
    /// Labels file for the class names (default: the weights' own; else `class N`).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Preprocessing preset (default: the weights').
    #[arg(long, value_parser = choice::<Preset>())]
    preprocess: Option<Preset>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Images per forward and backward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Largest image accepted, in pixels (as for classify).
    #[arg(long, env = MAX_PIXELS_ENV, default_value_t = ImageLimits::DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
    /// Stop at the first unreadable image.
    #[arg(long)]
    fail_fast: bool,
    /// Image files and folders.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// Runs `alexvgg explain`.
pub fn run(a: ExplainArgs) -> Result<()> {
    // every flag is checked before weights are loaded
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.max_image_pixels == 0 {
        bail!("--max-image-pixels must be at least 1");
    }
    if a.method == Method::Saliency
        && let Some(layer) = &a.layer
    {
        bail!("--layer {layer}: saliency maps are at the input; --layer is for --method gradcam");
    }
    if let Some(raw) = &a.raw
        && raw.extension().and_then(|e| e.to_str()) != Some("npy")
    {
        bail!(
            "--raw: the maps are written as .npy (got '{}')",
            raw.display()
        );
    }
    let limits = ImageLimits::new(a.max_image_pixels);
    let model_arch = a.model.arch()?;
    let (backend, dev) = make_device(a.device.device.as_deref())?;
    let images = collect_images(&a.inputs);
    if images.is_empty() {
        bail!("no images found in {:?}", a.inputs);
    }
    let p = Pretrained::load(a.weights.as_deref(), model_arch, &dev).map_err(|e| match e {
        PretrainedError::NoDefault(_) => anyhow::anyhow!("{e}: pass --weights FILE"),
        e => e.into(),
    })?;
    if let Some(note) = p.variant_note() {
        eprintln!("warning: {}", printable(&note));
    }
    let labels: Vec<String> = match p.labels(a.labels.as_deref()) {
        Ok(classes) => classes.into_iter().map(|c| c.label).collect(),
        Err(PretrainedError::UnknownClasses { classes, .. }) => {
            (0..classes).map(|i| format!("class {i}")).collect()
        }
        Err(e) => return Err(e.into()),
    };
    let (arch, preset) = (p.arch, a.preprocess.unwrap_or(p.preset));
    let side = arch.input_size();
    // the backward pass keeps the forward activations and their gradients: three times
    // what inference holds
    let per_image = bytes_per_image(&p.model.layers([3, side, side])?).saturating_mul(3);
    check_batch(a.batch_size.min(images.len()), per_image).context("--batch-size")?;
    let explainer = Explainer::new(p.model, &dev);
    let layer = explainer
        .layer(a.method, a.layer.as_deref())
        .context("--layer")?;
    explainer.check_target(a.class).context("--class")?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let what = match &layer {
        Some(l) => format!("{} at {l}", a.method.title()),
        None => format!("{} at the input", a.method.title()),
    };
    let started = std::time::Instant::now();
    let progress = images.len() > a.batch_size && std::io::stderr().is_terminal();
    let names = picture_names(&images, a.method);
    let (mut maps, mut map_dims, mut rows) = (Vec::new(), [0usize; 2], Vec::new());
    let (mut done, mut failed) = (0usize, 0usize);
    for (chunk, chunk_names) in images.chunks(a.batch_size).zip(names.chunks(a.batch_size)) {
        let mut ok = Vec::new();
        let prepared = prepare_views(chunk, preset, side, &limits);
        for ((path, name), r) in chunk.iter().zip(chunk_names).zip(prepared) {
            match r {
                Ok(prepared) => {
                    report_warnings(&prepared.warnings);
                    ok.push((path, name, prepared))
                }
                Err(e) => report_unreadable(&e, a.fail_fast, &mut failed)?,
            }
        }
        if !ok.is_empty() {
            let input: Vec<f32> = ok
                .iter()
                .flat_map(|(_, _, p)| p.input.iter().copied())
                .collect();
            let dims = [ok.len(), 3, side, side];
            let explained = explainer
                .explain(input, dims, a.method, layer.as_deref(), a.class)
                .with_context(|| format!("explaining {} images", ok.len()))?;
            for ((path, name, prepared), e) in ok.iter().zip(explained) {
                let label = labels
                    .get(e.class)
                    .cloned()
                    .unwrap_or_else(|| format!("class {}", e.class));
                let caption = Caption {
                    label: label.clone(),
                    probability: e.probability,
                    method: format!("{what} ({}x{}) of {}", e.height, e.width, arch.describe()),
                    input: format!("input {side}x{side}, '{}' preprocessing", preset.name()),
                };
                let picture = overlay(&prepared.view, &e, &caption)?;
                let file = a.out.join(name);
                save_png(&picture, &file)?;
                outln!(
                    "{}: class {} {} ({:.4}) -> {}",
                    printable_path(path),
                    e.class,
                    printable(&label),
                    e.probability,
                    printable_path(&file)
                );
                map_dims = [e.height, e.width];
                maps.extend(e.map);
                rows.push(path.as_path());
            }
        }
        done += chunk.len();
        if progress {
            eprint!("\r[{done}/{}] images", images.len());
        }
    }
    if progress {
        eprintln!();
    }
    let n = rows.len();
    if n == 0 {
        bail!("none of the {done} images could be read; nothing written");
    }
    if let Some(raw) = &a.raw {
        write_npy(raw, &[n, map_dims[0], map_dims[1]], &maps)?;
        write_row_paths(raw, &rows)?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{n} images in {secs:.2} s with {} on {}, {what} ({}x{} maps), preprocessing '{}': pictures in {}{}{}",
        arch.describe(),
        describe(backend, &dev),
        map_dims[0],
        map_dims[1],
        preset.name(),
        a.out.display(),
        a.raw
            .as_ref()
            .map(|r| format!(", maps in {}", r.display()))
            .unwrap_or_default(),
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

/// The pictures' file names for `images`, in order: `STEM.METHOD.png` after each image's
/// name; when images of different folders share a name, their folder's name goes in front
/// (`red_disc_0003.gradcam.png`), and a name still taken gets a number (`0003-2.gradcam.png`).
fn picture_names(images: &[PathBuf], method: Method) -> Vec<String> {
    let stem = |p: &Path| {
        p.file_stem()
            .map_or_else(|| "image".to_string(), |s| s.to_string_lossy().into_owned())
    };
    let mut count: HashMap<String, usize> = HashMap::new();
    for p in images {
        *count.entry(stem(p)).or_default() += 1;
    }
    let mut taken = HashSet::new();
    images
        .iter()
        .map(|p| {
            let s = stem(p);
            let folder = p.parent().and_then(Path::file_name);
            let base = match folder {
                Some(d) if count[&s] > 1 => format!("{}_{s}", d.to_string_lossy()),
                _ => s,
            };
            let mut name = format!("{base}.{}.png", method.name());
            let mut k = 1;
            while !taken.insert(name.clone()) {
                k += 1;
                name = format!("{base}-{k}.{}.png", method.name());
            }
            name
        })
        .collect()
}

/// Encodes a PNG and writes it through a temporary file renamed into place.
fn save_png(img: &image::RgbImage, out: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .with_context(|| format!("encoding {}", out.display()))?;
    write_bytes_atomic(out, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_of_images_with_the_same_name_do_not_overwrite_each_other() {
        let images: Vec<PathBuf> = [
            "a/0001.png",
            "b/0001.png",
            "b/0001.jpg",
            "d/0002.png",
            "0003.png",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            picture_names(&images, Method::Saliency),
            [
                "a_0001.saliency.png",
                "b_0001.saliency.png",
                "b_0001-2.saliency.png",
                "0002.saliency.png",
                "0003.saliency.png",
            ]
        );
    }
}

//! Image preprocessing: each weights entry carries its own preset, because preprocessing
//! belongs to the weights, not to the model.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Rgb32FImage};

/// How pixels are turned into network input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Caffe-trained weights: true BGR, 0..255, minus the BGR mean (104, 117, 123);
    /// shorter side to 256, centre crop.
    Caffe,
    /// Frossard's VGG16: RGB, 0..255, minus (123.68, 116.779, 103.939), resized to the input size.
    Frossard,
    /// torchvision: shorter side 256, centre crop, 0..1, normalised with ImageNet mean/std.
    Torchvision,
    /// The study note's AlexNet script, bit for bit, bugs included: resize to the input size
    /// (its images already were 227x227), drop alpha, subtract one scalar mean per image, and a
    /// "RGB to BGR" line that really yields channels [B, G, B]. For comparing with the note only.
    Note,
}

impl Preset {
    /// All presets.
    pub const ALL: [Preset; 4] = [
        Preset::Caffe,
        Preset::Frossard,
        Preset::Torchvision,
        Preset::Note,
    ];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Caffe => "caffe",
            Preset::Frossard => "frossard",
            Preset::Torchvision => "torchvision",
            Preset::Note => "note",
        }
    }

    /// Parses a [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Preset> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// Errors reading an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Unreadable or undecodable file.
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Decodes any image the `image` crate reads (grayscale, RGBA, 16-bit, palette...), applying
/// the EXIF orientation of JPEGs and TIFFs.
///
/// # Errors
/// [`ImageError::Decode`] naming the file.
pub fn load_image(path: &Path) -> Result<DynamicImage, ImageError> {
    let err = |reason: String| ImageError::Decode {
        path: path.display().to_string(),
        reason,
    };
    let reader = ImageReader::open(path).map_err(|e| err(e.to_string()))?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    let mut decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| err(e.to_string()))?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    Ok(image)
}

/// Resizes so the shorter side is `short` (aspect kept), bilinear with antialiasing, in f32.
fn resize_shorter(img: &Rgb32FImage, short: u32) -> Rgb32FImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (
            short,
            ((h as f64 * short as f64 / w as f64).round() as u32).max(1),
        )
    } else {
        (
            ((w as f64 * short as f64 / h as f64).round() as u32).max(1),
            short,
        )
    };
    image::imageops::resize(img, nw, nh, FilterType::Triangle)
}

fn center_crop(img: &Rgb32FImage, size: u32) -> Rgb32FImage {
    let (w, h) = img.dimensions();
    let left = (w.saturating_sub(size)) / 2;
    let top = (h.saturating_sub(size)) / 2;
    image::imageops::crop_imm(img, left, top, size.min(w), size.min(h)).to_image()
}

/// Turns an image into a `[3, size, size]` channels-first f32 buffer for `preset`.
pub fn preprocess(image: &DynamicImage, preset: Preset, size: usize) -> Vec<f32> {
    let size32 = size as u32;
    // 0..255 floats (the image crate's f32 conversion gives 0..1).
    let rgb = image.to_rgb32f();
    let img = match preset {
        Preset::Caffe | Preset::Torchvision => center_crop(&resize_shorter(&rgb, 256), size32),
        Preset::Frossard | Preset::Note => {
            if rgb.dimensions() == (size32, size32) {
                rgb
            } else {
                image::imageops::resize(&rgb, size32, size32, FilterType::Triangle)
            }
        }
    };
    normalize(&img, preset)
}

/// Random-resized-crop and flip augmentation for training (the scheme of torchvision's
/// `RandomResizedCrop` + `RandomHorizontalFlip`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Range of the crop's area as a fraction of the image (torchvision: 0.08..1).
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio, width / height (torchvision: 3/4..4/3).
    pub ratio: (f64, f64),
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: true,
        }
    }
}

/// A random crop of `image` resized to `size`x`size`, maybe mirrored, normalised for `preset`.
/// `uniform` returns independent draws from [0, 1); the same draws give the same result.
pub fn augmented(
    image: &DynamicImage,
    preset: Preset,
    size: usize,
    aug: &Augment,
    uniform: &mut dyn FnMut() -> f64,
) -> Vec<f32> {
    let rgb = image.to_rgb32f();
    let (w, h) = rgb.dimensions();
    let (x, y, cw, ch) = crop_box(w, h, aug, uniform);
    let crop = image::imageops::crop_imm(&rgb, x, y, cw, ch).to_image();
    let mut img = image::imageops::resize(&crop, size as u32, size as u32, FilterType::Triangle);
    if aug.flip && uniform() < 0.5 {
        image::imageops::flip_horizontal_in_place(&mut img);
    }
    normalize(&img, preset)
}

/// Picks the crop `(x, y, width, height)`: up to ten tries at a random area and log-uniform
/// aspect ratio that fits, then the largest centred crop within the ratio range.
fn crop_box(
    w: u32,
    h: u32,
    aug: &Augment,
    uniform: &mut dyn FnMut() -> f64,
) -> (u32, u32, u32, u32) {
    let area = f64::from(w) * f64::from(h);
    let (lr0, lr1) = (aug.ratio.0.ln(), aug.ratio.1.ln());
    for _ in 0..10 {
        let target = area * (aug.scale.0 + (aug.scale.1 - aug.scale.0) * uniform());
        let ratio = (lr0 + (lr1 - lr0) * uniform()).exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = ((f64::from(w - cw + 1)) * uniform()) as u32;
            let y = ((f64::from(h - ch + 1)) * uniform()) as u32;
            return (x.min(w - cw), y.min(h - ch), cw, ch);
        }
    }
    let in_ratio = f64::from(w) / f64::from(h);
    let (cw, ch) = if in_ratio < aug.ratio.0 {
        (w, ((f64::from(w) / aug.ratio.0).round() as u32).clamp(1, h))
    } else if in_ratio > aug.ratio.1 {
        (((f64::from(h) * aug.ratio.1).round() as u32).clamp(1, w), h)
    } else {
        (w, h)
    };
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

/// Turns a resized RGB image (0..1 floats) into the `[3, H, W]` channels-first network input of
/// `preset`: channel order, 0..255 or 0..1 scale, mean (and std) subtraction.
pub fn normalize(img: &Rgb32FImage, preset: Preset) -> Vec<f32> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate().take(plane) {
        let [r, g, b] = p.0.map(|v| v * 255.0);
        let (c0, c1, c2) = match preset {
            Preset::Caffe => (b - 104.0, g - 117.0, r - 123.0),
            Preset::Frossard => (r - 123.68, g - 116.779, b - 103.939),
            Preset::Torchvision => (
                (r / 255.0 - 0.485) / 0.229,
                (g / 255.0 - 0.456) / 0.224,
                (b / 255.0 - 0.406) / 0.225,
            ),
            // mean subtracted below; the script's swap leaves [B, G, B]
            Preset::Note => (b, g, b),
        };
        out[i] = c0;
        out[plane + i] = c1;
        out[2 * plane + i] = c2;
    }
    if preset == Preset::Note {
        // one scalar mean over the (pre-swap) RGB image, as `im1 - mean(im1)` computes it
        let mean = img
            .pixels()
            .map(|p| p.0.iter().map(|v| (v * 255.0) as f64).sum::<f64>())
            .sum::<f64>()
            / (3 * plane) as f64;
        out.iter_mut().for_each(|v| *v -= mean as f32);
    }
    out
}

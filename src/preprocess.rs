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
    let plane = size * size;
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

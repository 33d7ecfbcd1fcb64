//! Image preprocessing: each weights entry carries its own preset, because preprocessing
//! belongs to the weights, not to the model.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Rgb32FImage, RgbImage};

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

/// The side the Caffe and torchvision presets resize an image's shorter side to.
pub const RESIZE_SHORTER: u32 = 256;

/// Environment variable setting the default [`ImageLimits::max_pixels`] (for `classify`'s
/// `--max-image-pixels` and for fine-tuning, which reads images with [`load_image`]).
pub const MAX_PIXELS_ENV: &str = "ALEXVGG_MAX_IMAGE_PIXELS";

/// How large an image may be, checked on the image's header before anything is decoded, so
/// that a small file claiming a huge size (an image bomb) costs nothing.
///
/// One number bounds both the decoded image and the image the preprocessing resizes it to:
/// the Caffe and torchvision presets scale the shorter side to [`RESIZE_SHORTER`], which
/// turns an extreme aspect ratio (1x30000) into a huge image (256x7,680,000). Memory per
/// image is 15 to 20 bytes per pixel at most (the decoded pixels, then the same as 32-bit
/// floats), so the default of 64 megapixels (e.g. 8000x8000, or any camera photo up to
/// 64 MP) needs 1 to 1.3 GB per image. The file itself may hold at most 8 bytes per pixel
/// ([`max_file_bytes`](Self::max_file_bytes)), as some decoders read it whole first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most pixels (width x height) of the decoded image and of the resized one.
    pub max_pixels: u64,
}

impl ImageLimits {
    /// The default [`max_pixels`](Self::max_pixels): 64 megapixels.
    pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

    /// The limits with `max_pixels`.
    pub fn new(max_pixels: u64) -> Self {
        Self { max_pixels }
    }

    /// The default limits, with [`MAX_PIXELS_ENV`] read when it holds a positive number.
    pub fn from_env() -> Self {
        let max_pixels = std::env::var(MAX_PIXELS_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(Self::DEFAULT_MAX_PIXELS);
        Self { max_pixels }
    }

    /// Checks an image of `width` x `height` against the limits: its own size, and the size
    /// it has once its shorter side is scaled to [`RESIZE_SHORTER`].
    ///
    /// # Errors
    /// Why the image is refused.
    pub fn check(&self, width: u32, height: u32) -> Result<(), String> {
        let raise = format!(
            "raise the limit with --max-image-pixels or {MAX_PIXELS_ENV} if this is intended"
        );
        if width == 0 || height == 0 {
            return Err(format!("it is {width}x{height}: no pixels"));
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Err(format!(
                "it is {width}x{height} ({pixels} pixels), more than the limit of {} pixels; {raise}",
                self.max_pixels
            ));
        }
        let (short, long) = (width.min(height), width.max(height));
        let scaled = (f64::from(long) * f64::from(RESIZE_SHORTER) / f64::from(short)).round();
        let resized = scaled * f64::from(RESIZE_SHORTER);
        if resized > self.max_pixels as f64 {
            return Err(format!(
                "it is {width}x{height}, an extreme aspect ratio: scaling its shorter side to \
                 {RESIZE_SHORTER} would make it {RESIZE_SHORTER}x{scaled} ({resized} pixels), more \
                 than the limit of {} pixels; {raise}",
                self.max_pixels
            ));
        }
        Ok(())
    }

    /// The largest image file read: 8 bytes per pixel (16-bit RGBA, uncompressed), at least
    /// 64 MiB.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(8).max(64 << 20)
    }

    /// The `image` crate's decoding limits that go with these: no side beyond `max_pixels`,
    /// and allocations up to 8 bytes per pixel (16-bit RGBA), at least the crate's 512 MiB.
    fn decoder_limits(&self) -> image::Limits {
        let side = u32::try_from(self.max_pixels).unwrap_or(u32::MAX);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(
            self.max_pixels
                .saturating_mul(8)
                .max(limits.max_alloc.unwrap_or(0)),
        );
        limits
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_PIXELS)
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
    /// A file that is not read: not a regular file, or beyond the [`ImageLimits`].
    #[error("refusing image {path}: {reason}")]
    Refused {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Something odd about an image that still decoded, for the caller to report
/// ([`load_image_checked`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageWarning {
    /// A JPEG whose data ends before its end-of-image marker: the decoder fills the part that
    /// is missing (the bottom of the picture, or the later passes of a progressive JPEG) with
    /// grey instead of failing.
    #[error("{path} looks truncated: its missing part decodes grey")]
    Truncated {
        /// The file.
        path: String,
    },
}

/// An image decoded by [`load_image_checked`], with the warnings its file raised.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// The decoded image, EXIF orientation applied.
    pub image: DynamicImage,
    /// What looked wrong with the file although it decoded.
    pub warnings: Vec<ImageWarning>,
}

/// Whether the JPEG `data` ends before its end-of-image marker (FF D9): `Some(true)` for a
/// truncated JPEG, `Some(false)` for a complete one (anything after the marker, such as
/// padding, is allowed), `None` when `data` is not a JPEG or its structure cannot be followed
/// (the decoder is the judge of such files).
///
/// The segments are walked by their lengths (so an EXIF thumbnail's own end marker inside an
/// APP1 segment does not count), and each scan's entropy-coded data up to the next marker
/// (skipping stuffed `FF 00` bytes and restart markers).
pub fn jpeg_truncated(data: &[u8]) -> Option<bool> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    loop {
        // a marker: FF (any number of fill FFs), then its code
        match data.get(i) {
            None => return Some(true),
            Some(0xFF) => {}
            Some(_) => return None,
        }
        while data.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&code) = data.get(i) else {
            return Some(true);
        };
        i += 1;
        match code {
            0xD9 => return Some(false),
            // standalone markers: TEM and restarts
            0x01 | 0xD0..=0xD7 => continue,
            0x00 | 0xD8 => return None,
            _ => {}
        }
        // a segment with its length (which counts the two length bytes)
        let (Some(&hi), Some(&lo)) = (data.get(i), data.get(i + 1)) else {
            return Some(true);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < 2 {
            return None;
        }
        i += len;
        if i > data.len() {
            return Some(true);
        }
        if code == 0xDA {
            // entropy-coded data up to the next marker that is not a stuffed byte or a restart
            loop {
                let Some(at) = data[i..].iter().position(|&b| b == 0xFF) else {
                    return Some(true);
                };
                i += at;
                match data.get(i + 1) {
                    None => return Some(true),
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    // fill bytes before a marker: the marker loop skips them
                    Some(_) => break,
                }
            }
        }
    }
}

/// [`load_image_with`] the limits of [`ImageLimits::from_env`].
///
/// # Errors
/// As [`load_image_with`].
pub fn load_image(path: &Path) -> Result<DynamicImage, ImageError> {
    load_image_with(path, &ImageLimits::from_env())
}

/// Decodes any image the `image` crate reads (grayscale, RGBA, 16-bit, palette...), applying
/// the EXIF orientation of JPEGs and TIFFs.
///
/// Only regular files are opened (a FIFO or device would block or never end), and the size in
/// the image's header is checked against `limits` before anything is decoded.
///
/// # Errors
/// [`ImageError::Decode`] naming the file for unreadable and corrupt files,
/// [`ImageError::Refused`] for files that are not regular files or exceed `limits`.
pub fn load_image_with(path: &Path, limits: &ImageLimits) -> Result<DynamicImage, ImageError> {
    load_image_checked(path, limits).map(|loaded| loaded.image)
}

/// [`load_image_with`], also reporting what looks wrong with a file that still decodes: a
/// truncated JPEG ([`ImageWarning::Truncated`]), which the decoder completes with grey.
///
/// # Errors
/// As [`load_image_with`].
pub fn load_image_checked(path: &Path, limits: &ImageLimits) -> Result<LoadedImage, ImageError> {
    let err = |reason: String| ImageError::Decode {
        path: path.display().to_string(),
        reason,
    };
    let refused = |reason: String| ImageError::Refused {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(refused(format!(
            "it is {}, not a regular file",
            crate::files::kind(&meta)
        )));
    }
    // some decoders read the whole file first; no encoding needs more than 8 bytes a pixel
    let max_bytes = limits.max_file_bytes();
    if meta.len() > max_bytes {
        return Err(refused(format!(
            "the file is {} bytes, more than the {max_bytes} bytes (8 per pixel) an image within the limit of {} pixels can take; raise the limit with --max-image-pixels or {MAX_PIXELS_ENV} if this is intended",
            meta.len(),
            limits.max_pixels
        )));
    }
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    // the name may have been replaced between the check and the open
    match file.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(m) => {
            return Err(refused(format!(
                "it is {}, not a regular file",
                crate::files::kind(&m)
            )));
        }
        Err(e) => return Err(err(e.to_string())),
    }
    // read whole (the size is bounded above), so that its end can be checked too
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max_bytes), &mut bytes)
        .map_err(|e| err(e.to_string()))?;
    let mut warnings = Vec::new();
    if jpeg_truncated(&bytes) == Some(true) {
        warnings.push(ImageWarning::Truncated {
            path: path.display().to_string(),
        });
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes));
    if let Ok(format) = image::ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    reader.limits(limits.decoder_limits());
    let limit_or_decode = |e: image::ImageError| match e {
        image::ImageError::Limits(l) => {
            refused(format!("{l} (limit of {} pixels)", limits.max_pixels))
        }
        e => err(e.to_string()),
    };
    let mut decoder = reader.into_decoder().map_err(limit_or_decode)?;
    let (width, height) = decoder.dimensions();
    limits.check(width, height).map_err(refused)?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(limit_or_decode)?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    Ok(LoadedImage { image, warnings })
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
    normalize(&fitted(image, preset, size), preset)
}

/// The picture the network sees for `preset`: the image resized and cropped to `size` x
/// `size` as [`preprocess`] does, before normalisation, in RGB (for the note's preset, whose
/// channels the script scrambles, the RGB picture it meant to show).
pub fn network_view(image: &DynamicImage, preset: Preset, size: usize) -> RgbImage {
    let img = fitted(image, preset, size);
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        image::Rgb(
            img.get_pixel(x, y)
                .0
                .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8),
        )
    })
}

/// The image resized (and cropped) to `size` x `size` for `preset`, RGB in 0..1.
fn fitted(image: &DynamicImage, preset: Preset, size: usize) -> Rgb32FImage {
    let size32 = size as u32;
    let rgb = image.to_rgb32f();
    match preset {
        Preset::Caffe | Preset::Torchvision => {
            center_crop(&resize_shorter(&rgb, RESIZE_SHORTER), size32)
        }
        Preset::Frossard | Preset::Note => {
            if rgb.dimensions() == (size32, size32) {
                rgb
            } else {
                image::imageops::resize(&rgb, size32, size32, FilterType::Triangle)
            }
        }
    }
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

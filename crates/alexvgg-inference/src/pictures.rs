//! Pictures of what the networks hold and see: the first layer's filters as a grid of small
//! colour images, and a layer's activations for one image as a grid of grey maps.
//!
//! Only the first convolution's filters are pictures of something (their three input channels
//! are colours); a deeper layer's filters have tens to hundreds of input channels, so asking
//! for them is an error that points to activation maps instead.

use alexvgg_import::{ImportError, module_tensors};
use alexvgg_models::params::layers;
use alexvgg_models::{Architecture, Model};
use image::{Rgb, RgbImage};

use crate::features::Feature;
use crate::preprocess::Preset;

/// Errors making pictures.
#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    /// A layer without filters, or one whose filters are not colour pictures.
    #[error("{0}")]
    Layer(String),
    /// The model's parameters could not be read.
    #[error(transparent)]
    Import(#[from] ImportError),
}

/// Whether weights trained with `preset` expect blue, green, red input channels (Caffe's
/// order), so that their first filters must be flipped to show in RGB.
pub fn bgr_input(preset: Preset) -> bool {
    matches!(preset, Preset::Caffe | Preset::Note)
}

/// The filters of convolution `layer` (only the first: `conv1`, `conv1_1`) as a grid: one
/// `kh x kw` colour tile per filter, each min-max scaled on its own, drawn `zoom` times
/// larger, in RGB whatever channel order the weights use (`bgr`), on a grey background.
///
/// # Errors
/// [`PictureError::Layer`] for a layer that is not a convolution of `arch`, or not the first.
pub fn filter_grid(
    model: &Model,
    arch: &Architecture,
    layer: &str,
    bgr: bool,
    zoom: u32,
) -> Result<RgbImage, PictureError> {
    let all = layers(arch);
    let Some(found) = all.iter().find(|l| l.name == layer && !l.fc) else {
        let convs: Vec<&str> = all
            .iter()
            .filter(|l| !l.fc)
            .map(|l| l.name.as_str())
            .collect();
        return Err(PictureError::Layer(format!(
            "{} has no convolution '{layer}' (convolutions: {})",
            arch.describe(),
            convs.join(", ")
        )));
    };
    let key = format!("{}.weight", found.params);
    let tensors = module_tensors(model)?;
    let w = tensors
        .get(&key)
        .ok_or_else(|| PictureError::Layer(format!("no parameter {key}")))?;
    let &[count, channels, kh, kw] = w.shape.as_slice() else {
        return Err(PictureError::Layer(format!(
            "{key} has shape {:?}",
            w.shape
        )));
    };
    if channels != 3 {
        return Err(PictureError::Layer(format!(
            "the filters of {layer} have {channels} input channels, not colours: only the first \
             layer's filters are pictures; show what a deeper layer sees with `visualize maps`"
        )));
    }
    let tiles: Vec<Vec<[u8; 3]>> = w
        .data
        .chunks(channels * kh * kw)
        .map(|f| {
            let (lo, hi) = min_max(f);
            (0..kh * kw)
                .map(|p| {
                    let c = |ch: usize| scale(f[ch * kh * kw + p], lo, hi);
                    if bgr {
                        [c(2), c(1), c(0)]
                    } else {
                        [c(0), c(1), c(2)]
                    }
                })
                .collect()
        })
        .collect();
    Ok(grid(&tiles, count, kh, kw, zoom))
}

/// The channels of one image's activation map `feature` (`[1, C, h, w]` or `[C, h, w]`) as a
/// grid of grey tiles, each min-max scaled on its own, drawn `zoom` times larger.
///
/// # Errors
/// [`PictureError::Layer`] for a vector (a fully connected layer) instead of a map.
pub fn map_grid(feature: &Feature, zoom: u32) -> Result<RgbImage, PictureError> {
    let (c, h, w) = match feature.shape.as_slice() {
        &[1, c, h, w] | &[c, h, w] => (c, h, w),
        other => {
            return Err(PictureError::Layer(format!(
                "{} is not a map of one image (shape {other:?}): pictures are of convolution \
                 and pooling layers",
                feature.layer
            )));
        }
    };
    let tiles: Vec<Vec<[u8; 3]>> = feature
        .data
        .chunks(h * w)
        .map(|plane| {
            let (lo, hi) = min_max(plane);
            plane
                .iter()
                .map(|&v| {
                    let g = scale(v, lo, hi);
                    [g, g, g]
                })
                .collect()
        })
        .collect();
    Ok(grid(&tiles, c, h, w, zoom))
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// `v` scaled from `[lo, hi]` to `0..=255` (mid-grey for a constant tile).
fn scale(v: f32, lo: f32, hi: f32) -> u8 {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) || !v.is_finite() {
        return 128;
    }
    (255.0 * (v - lo) / (hi - lo)).round().clamp(0.0, 255.0) as u8
}

/// Lays out `count` tiles of `h x w` pixels in a near-square grid, one (zoomed) pixel of grey
/// between and around them.
fn grid(tiles: &[Vec<[u8; 3]>], count: usize, h: usize, w: usize, zoom: u32) -> RgbImage {
    let zoom = zoom.max(1);
    let cols = (count as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (count as u32).div_ceil(cols).max(1);
    let (th, tw) = (h as u32 * zoom, w as u32 * zoom);
    let gap = zoom.clamp(1, 4);
    let width = cols * (tw + gap) + gap;
    let height = rows * (th + gap) + gap;
    let mut img = RgbImage::from_pixel(width, height, Rgb([64, 64, 64]));
    for (i, tile) in tiles.iter().enumerate().take(count) {
        let (col, row) = (i as u32 % cols, i as u32 / cols);
        let (x0, y0) = (gap + col * (tw + gap), gap + row * (th + gap));
        for (p, rgb) in tile.iter().enumerate() {
            let (py, px) = ((p / w) as u32, (p % w) as u32);
            for dy in 0..zoom {
                for dx in 0..zoom {
                    img.put_pixel(x0 + px * zoom + dx, y0 + py * zoom + dy, Rgb(*rgb));
                }
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_scaled_per_channel_into_a_grid() {
        let f = Feature {
            layer: "conv1".into(),
            shape: vec![1, 2, 1, 2],
            data: vec![0.0, 1.0, 5.0, 5.0],
        };
        let img = map_grid(&f, 1).unwrap();
        // 2 tiles of 1x2: 2 columns, 1 row, 1-pixel gaps
        assert_eq!(img.dimensions(), (2 * 3 + 1, 3));
        assert_eq!(img.get_pixel(1, 1).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(2, 1).0, [255, 255, 255]);
        assert_eq!(
            img.get_pixel(4, 1).0,
            [128, 128, 128],
            "a constant channel is grey"
        );
        let vector = Feature {
            layer: "fc7".into(),
            shape: vec![1, 8],
            data: vec![0.0; 8],
        };
        assert!(map_grid(&vector, 1).is_err());
    }
}

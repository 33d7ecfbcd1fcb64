//! Image classification: files and folders in, top-k ImageNet (or fine-tuned) classes out.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::labels::Class;
use crate::preprocess::{ImageError, Preset, load_image, preprocess};
use crate::runner::{Runner, RunnerError};

/// Extensions treated as images when walking folders.
pub const IMAGE_EXTENSIONS: [&str; 10] = [
    "jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp", "ppm", "pgm",
];

/// One predicted class.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// Class index.
    pub index: usize,
    /// WordNet synset id, where known.
    pub synset: Option<String>,
    /// Label.
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

/// Expands files and folders (recursively, image extensions only, sorted) into image paths.
/// Explicitly named files are kept whatever their extension, so that bad ones are reported.
pub fn collect_images(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut out);
        } else {
            out.push(input.clone());
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        out.push(dir.to_path_buf()); // reported as unreadable later
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
}

/// Decodes and preprocesses images in parallel; each result is `[3, side, side]` values.
pub fn prepare(
    paths: &[PathBuf],
    preset: Preset,
    side: usize,
) -> Vec<Result<Vec<f32>, ImageError>> {
    paths
        .par_iter()
        .map(|p| load_image(p).map(|img| preprocess(&img, preset, side)))
        .collect()
}

/// Class probabilities for a batch of preprocessed images.
///
/// # Errors
/// [`RunnerError`] when the engine cannot take the batch.
///
/// # Shapes
/// - each image: `3 * side * side` values, channels first
/// - output: one `num_classes` probability vector per image
pub fn probabilities(
    runner: &Runner,
    images: &[Vec<f32>],
    side: usize,
) -> Result<Vec<Vec<f32>>, RunnerError> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    runner.probabilities(flat, [images.len(), 3, side, side])
}

/// The `k` most probable classes, most probable first.
pub fn top_k(probs: &[f32], k: usize, classes: &[Class]) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    order
        .into_iter()
        .take(k)
        .map(|i| Prediction {
            index: i,
            synset: classes.get(i).and_then(|c| c.synset.clone()),
            label: classes
                .get(i)
                .map_or_else(|| format!("class {i}"), |c| c.label.clone()),
            probability: probs[i],
        })
        .collect()
}

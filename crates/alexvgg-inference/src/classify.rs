//! Image classification: files and folders in, top-k ImageNet (or fine-tuned) classes out.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::labels::Class;
use crate::preprocess::{
    ImageError, ImageLimits, ImageWarning, LoadedImage, Preset, load_image_checked, preprocess,
};
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
///
/// Each directory is walked once, however many links lead to it (directory symlinks are
/// followed, but a directory already seen, by device and inode, is skipped), so that symlink
/// loops (`ln -s . a`) end. Files that are not regular files (FIFOs, sockets, devices) are
/// listed like the others when they have an image extension, and
/// [`load_image`](crate::preprocess::load_image) refuses them
/// without opening them.
pub fn collect_images(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut seen = Seen::default();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut seen, &mut out);
        } else {
            out.push(input.clone());
        }
    }
    out
}

/// The directories already walked.
#[derive(Default)]
struct Seen(std::collections::HashSet<DirId>);

#[cfg(unix)]
type DirId = (u64, u64);
#[cfg(not(unix))]
type DirId = PathBuf;

impl Seen {
    /// Records `dir`; `false` when it was seen before. A directory whose identity cannot be
    /// read counts as new (reading it will report the problem).
    fn first_visit(&mut self, dir: &Path) -> bool {
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(dir).map(|m| (m.dev(), m.ino()))
        };
        #[cfg(not(unix))]
        let id = std::fs::canonicalize(dir);
        match id {
            Ok(id) => self.0.insert(id),
            Err(_) => true,
        }
    }
}

/// Depth-first, in sorted order, without recursion (the depth of a tree is not bounded).
fn walk(root: &Path, seen: &mut Seen, out: &mut Vec<PathBuf>) {
    // each level: the remaining entries of one directory, in reverse order
    let mut stack: Vec<Vec<PathBuf>> = Vec::new();
    enter(root, seen, &mut stack, out);
    while let Some(level) = stack.last_mut() {
        let Some(p) = level.pop() else {
            stack.pop();
            continue;
        };
        if p.is_dir() {
            enter(&p, seen, &mut stack, out);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
}

/// Pushes the sorted entries of `dir` onto `stack`, unless it was walked before.
fn enter(dir: &Path, seen: &mut Seen, stack: &mut Vec<Vec<PathBuf>>, out: &mut Vec<PathBuf>) {
    if !seen.first_visit(dir) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        out.push(dir.to_path_buf()); // reported as unreadable later
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort_by(|a, b| b.cmp(a));
    stack.push(paths);
}

/// [`prepare_with`] the limits of [`ImageLimits::from_env`].
pub fn prepare(
    paths: &[PathBuf],
    preset: Preset,
    side: usize,
) -> Vec<Result<Vec<f32>, ImageError>> {
    prepare_with(paths, preset, side, &ImageLimits::from_env())
}

/// Decodes and preprocesses images in parallel, refusing images beyond `limits`; each result
/// is `[3, side, side]` values.
pub fn prepare_with(
    paths: &[PathBuf],
    preset: Preset,
    side: usize,
    limits: &ImageLimits,
) -> Vec<Result<Vec<f32>, ImageError>> {
    prepare_checked(paths, preset, side, limits)
        .into_iter()
        .map(|r| r.map(|p| p.input))
        .collect()
}

/// One image ready for the network, with what looked wrong with its file.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// `[3, side, side]` values, channels first.
    pub input: Vec<f32>,
    /// Warnings of decoding (a truncated JPEG), for the caller to report.
    pub warnings: Vec<ImageWarning>,
}

/// [`prepare_with`], keeping each image's decoding warnings ([`load_image_checked`]).
pub fn prepare_checked(
    paths: &[PathBuf],
    preset: Preset,
    side: usize,
    limits: &ImageLimits,
) -> Vec<Result<Prepared, ImageError>> {
    load_each(paths, limits, |loaded| Prepared {
        input: preprocess(&loaded.image, preset, side),
        warnings: loaded.warnings,
    })
}

/// Decodes `paths` in parallel, refusing images beyond `limits` ([`load_image_checked`]),
/// and makes each decoded image into what the caller needs; results in the order of `paths`.
pub fn load_each<T: Send>(
    paths: &[PathBuf],
    limits: &ImageLimits,
    make: impl Fn(LoadedImage) -> T + Sync,
) -> Vec<Result<T, ImageError>> {
    paths
        .par_iter()
        .map(|p| load_image_checked(p, limits).map(&make))
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

//! Image folders (one sub-folder per class), train/validation splits, and batches decoded and
//! augmented in parallel.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use alexvgg_inference::classify::collect_images;
use alexvgg_inference::preprocess::{Augment, Preset, augmented, load_image, preprocess};
use alexvgg_inference::rng::{SplitMix64, derive, permutation};

use crate::error::FinetuneError;

/// One image and its class index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Image file.
    pub path: PathBuf,
    /// Index into the class list.
    pub class: usize,
}

/// Where validation images come from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValSource {
    /// A second folder with the same class sub-folders.
    Dir(PathBuf),
    /// This fraction of each class of the training folder, chosen with the run's seed.
    Split(f64),
}

/// A training folder with its validation images.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Class names (sub-folder names, sorted).
    pub classes: Vec<String>,
    /// Training images.
    pub train: Vec<Sample>,
    /// Validation images.
    pub val: Vec<Sample>,
}

/// Reads a folder with one sub-folder per class (sorted by name); images are found
/// recursively inside each class folder.
///
/// # Errors
/// [`FinetuneError::Data`] when the folder is unreadable, has fewer than two classes, or a
/// class has no images.
pub fn scan(dir: &Path) -> Result<(Vec<String>, Vec<Sample>), FinetuneError> {
    let data_err = |reason: String| FinetuneError::Data {
        path: dir.to_path_buf(),
        reason,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| data_err(e.to_string()))?;
    let mut class_dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    class_dirs.sort();
    if class_dirs.len() < 2 {
        return Err(data_err(format!(
            "expected one sub-folder per class (at least two), found {}",
            class_dirs.len()
        )));
    }
    let mut classes = Vec::new();
    let mut samples = Vec::new();
    for (class, d) in class_dirs.iter().enumerate() {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let images = collect_images(std::slice::from_ref(d));
        if images.is_empty() {
            return Err(data_err(format!("class folder '{name}' has no images")));
        }
        samples.extend(images.into_iter().map(|path| Sample { path, class }));
        classes.push(name);
    }
    Ok((classes, samples))
}

/// Opens the training folder and its validation images.
///
/// # Errors
/// [`FinetuneError::Data`] for unreadable folders, a validation folder whose classes differ, a
/// split fraction outside (0, 1), or a split that leaves either side empty.
pub fn open(data: &Path, val: &ValSource, seed: u64) -> Result<Dataset, FinetuneError> {
    let (classes, samples) = scan(data)?;
    let (train, val) = match val {
        ValSource::Dir(dir) => {
            let (val_classes, val) = scan(dir)?;
            if val_classes != classes {
                return Err(FinetuneError::Data {
                    path: dir.clone(),
                    reason: format!(
                        "validation classes {val_classes:?} differ from the training classes {classes:?}"
                    ),
                });
            }
            (samples, val)
        }
        ValSource::Split(fraction) => {
            if !(*fraction > 0.0 && *fraction < 1.0) {
                return Err(FinetuneError::Data {
                    path: data.to_path_buf(),
                    reason: format!("the validation split must be between 0 and 1, got {fraction}"),
                });
            }
            split(samples, classes.len(), *fraction, seed)
        }
    };
    if train.is_empty() || val.is_empty() {
        return Err(FinetuneError::Data {
            path: data.to_path_buf(),
            reason: format!(
                "{} training and {} validation images: both must be non-empty",
                train.len(),
                val.len()
            ),
        });
    }
    Ok(Dataset {
        classes,
        train,
        val,
    })
}

/// Splits each class separately (stratified): a seeded shuffle, then `round(fraction * n)`
/// images (at least one where the class has two or more) go to validation.
pub fn split(
    samples: Vec<Sample>,
    num_classes: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<Sample>, Vec<Sample>) {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for class in 0..num_classes {
        let members: Vec<&Sample> = samples.iter().filter(|s| s.class == class).collect();
        let n = members.len();
        let mut k = (fraction * n as f64).round() as usize;
        if n >= 2 {
            k = k.clamp(1, n - 1);
        }
        for (rank, &i) in permutation(n, derive(seed, &[0x5917, class as u64]))
            .iter()
            .enumerate()
        {
            let s = members[i].clone();
            if rank < k { val.push(s) } else { train.push(s) }
        }
    }
    train.sort_by(|a, b| a.path.cmp(&b.path));
    val.sort_by(|a, b| a.path.cmp(&b.path));
    (train, val)
}

/// How a batch's images are turned into network input.
#[derive(Clone, Copy, Debug)]
pub enum Mode<'a> {
    /// The weights' own preprocessing (resize, centre crop, normalise).
    Eval,
    /// Random resized crop and flip; each image's draws come from `seed` and its position.
    Train {
        /// Augmentation settings.
        augment: &'a Augment,
        /// Seed of this batch (derived from the run seed, epoch and step).
        seed: u64,
    },
}

/// Network input for a batch, with the images that could not be read.
#[derive(Debug, Default)]
pub struct Batch {
    /// `[n, 3, size, size]` values, channels first.
    pub inputs: Vec<f32>,
    /// Class of each of the `n` images.
    pub labels: Vec<usize>,
    /// Unreadable images with the reason; they are left out of the batch.
    pub failed: Vec<(PathBuf, String)>,
}

/// Decodes and preprocesses `samples` in parallel (rayon).
pub fn load_batch(samples: &[&Sample], mode: Mode<'_>, preset: Preset, size: usize) -> Batch {
    let results: Vec<Result<Vec<f32>, String>> = samples
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let image = load_image(&s.path).map_err(|e| e.to_string())?;
            Ok(match mode {
                Mode::Eval => preprocess(&image, preset, size),
                Mode::Train { augment, seed } => {
                    let mut g = SplitMix64::new(derive(seed, &[i as u64]));
                    augmented(&image, preset, size, augment, &mut || g.uniform())
                }
            })
        })
        .collect();
    let mut batch = Batch::default();
    for (s, r) in samples.iter().zip(results) {
        match r {
            Ok(v) => {
                batch.inputs.extend_from_slice(&v);
                batch.labels.push(s.class);
            }
            Err(e) => batch.failed.push((s.path.clone(), e)),
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(per_class: &[usize]) -> Vec<Sample> {
        per_class
            .iter()
            .enumerate()
            .flat_map(|(class, &n)| {
                (0..n).map(move |i| Sample {
                    path: PathBuf::from(format!("c{class}/{i:03}.png")),
                    class,
                })
            })
            .collect()
    }

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        let all = samples(&[10, 20, 3]);
        let (train, val) = split(all.clone(), 3, 0.2, 9);
        let count = |v: &[Sample], c: usize| v.iter().filter(|s| s.class == c).count();
        assert_eq!([count(&val, 0), count(&val, 1), count(&val, 2)], [2, 4, 1]);
        assert_eq!(train.len() + val.len(), all.len());
        assert!(val.iter().all(|v| !train.contains(v)));
        assert_eq!(split(all.clone(), 3, 0.2, 9).1, val);
        assert_ne!(split(all, 3, 0.2, 10).1, val);
    }
}

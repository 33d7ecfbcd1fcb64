//! `alexvgg make-dataset`: a small synthetic image folder whose classes differ in shape, texture
//! and colour, for fine-tuning tests and demonstrations.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::FinetuneError;
use alexvgg_inference::rng::{SplitMix64, derive};

/// One synthetic class: a name, a base colour and a pattern.
struct ClassSpec {
    name: &'static str,
    colour: [f32; 3],
    pattern: Pattern,
}

#[derive(Clone, Copy)]
enum Pattern {
    Disc,
    Square,
    Triangle,
    Stripes,
    Checker,
    Ring,
    Cross,
    Dots,
}

const CLASSES: [ClassSpec; 8] = [
    ClassSpec {
        name: "red_disc",
        colour: [220.0, 40.0, 40.0],
        pattern: Pattern::Disc,
    },
    ClassSpec {
        name: "green_square",
        colour: [40.0, 190.0, 60.0],
        pattern: Pattern::Square,
    },
    ClassSpec {
        name: "blue_triangle",
        colour: [40.0, 70.0, 220.0],
        pattern: Pattern::Triangle,
    },
    ClassSpec {
        name: "yellow_stripes",
        colour: [230.0, 210.0, 40.0],
        pattern: Pattern::Stripes,
    },
    ClassSpec {
        name: "magenta_checker",
        colour: [200.0, 50.0, 200.0],
        pattern: Pattern::Checker,
    },
    ClassSpec {
        name: "cyan_ring",
        colour: [40.0, 200.0, 210.0],
        pattern: Pattern::Ring,
    },
    ClassSpec {
        name: "orange_cross",
        colour: [240.0, 140.0, 30.0],
        pattern: Pattern::Cross,
    },
    ClassSpec {
        name: "white_dots",
        colour: [235.0, 235.0, 235.0],
        pattern: Pattern::Dots,
    },
];

/// The largest number of classes [`make_dataset`] can draw.
pub const MAX_CLASSES: usize = CLASSES.len();
/// The smallest image side [`make_dataset`] draws.
pub const MIN_SIZE: u32 = 16;
/// The largest image side [`make_dataset`] draws: 4096 pixels, 48 MiB per image in memory
/// (the networks see 224 or 227 pixels anyway).
pub const MAX_SIZE: u32 = 4096;
/// The most images per class [`make_dataset`] writes.
pub const MAX_PER_CLASS: usize = 100_000;
/// The most pixel data (width x height x 3 bytes over all images) [`make_dataset`] writes:
/// 64 GiB. Noisy PNGs compress little, so the files take about as much disk.
pub const MAX_TOTAL_BYTES: u64 = 64 << 30;

/// Writes `per_class` PNG images of `size`x`size` pixels for each of the first `classes`
/// classes into `dir/<class>/NNNN.png`. Positions, sizes, colours, backgrounds and noise are
/// drawn from `seed`, so the same arguments write the same files. A `dir` that exists and is
/// not empty is refused (see [`make_dataset_with`]).
///
/// # Errors
/// See [`make_dataset_with`].
pub fn make_dataset(
    dir: &Path,
    classes: usize,
    per_class: usize,
    size: u32,
    seed: u64,
) -> Result<(), FinetuneError> {
    make_dataset_with(dir, classes, per_class, size, seed, false)
}

/// [`make_dataset`], writing into a non-empty `dir` when `overwrite` is set (files of the same
/// names are replaced, other files are left alone).
///
/// # Errors
/// [`FinetuneError::Setting`] naming `classes` (outside 2..=8), `per_class` (outside
/// 1..=[`MAX_PER_CLASS`]) or `size` (outside [`MIN_SIZE`]..=[`MAX_SIZE`], or more than
/// [`MAX_TOTAL_BYTES`] of pixels in all, with the amount they would need);
/// [`FinetuneError::Data`] for a `dir` that is not empty (without `overwrite`) or not a
/// directory; [`FinetuneError::Io`] when a file cannot be written.
pub fn make_dataset_with(
    dir: &Path,
    classes: usize,
    per_class: usize,
    size: u32,
    seed: u64,
    overwrite: bool,
) -> Result<(), FinetuneError> {
    check_sizes(classes, per_class, size)?;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if !overwrite && entries.next().is_some() {
                return Err(FinetuneError::Data {
                    path: dir.to_path_buf(),
                    reason: "is not empty: refusing to write images over its files; choose a new or empty folder, or pass --overwrite".to_string(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) if dir.exists() && !dir.is_dir() => {
            return Err(FinetuneError::Data {
                path: dir.to_path_buf(),
                reason: "exists and is not a directory".to_string(),
            });
        }
        Err(e) => return Err(FinetuneError::io(dir, e)),
    }
    for (c, spec) in CLASSES.iter().take(classes).enumerate() {
        let class_dir = dir.join(spec.name);
        std::fs::create_dir_all(&class_dir).map_err(|e| FinetuneError::io(&class_dir, e))?;
        for i in 0..per_class {
            let mut g = SplitMix64::new(derive(seed, &[c as u64, i as u64]));
            let img = draw(spec, size, &mut g);
            let path = class_dir.join(format!("{i:04}.png"));
            let tmp = class_dir.join(format!(".{i:04}.png.partial"));
            img.save_with_format(&tmp, image::ImageFormat::Png)
                .map_err(|e| FinetuneError::io(&tmp, std::io::Error::other(e.to_string())))?;
            std::fs::rename(&tmp, &path).map_err(|e| FinetuneError::io(&path, e))?;
        }
    }
    Ok(())
}

/// The bounds of [`make_dataset_with`], checked before anything is written.
fn check_sizes(classes: usize, per_class: usize, size: u32) -> Result<(), FinetuneError> {
    let bad =
        |setting: &'static str, reason: String| Err(FinetuneError::Setting { setting, reason });
    if !(2..=MAX_CLASSES).contains(&classes) {
        return bad(
            "classes",
            format!("must be between 2 and {MAX_CLASSES}, got {classes}"),
        );
    }
    if per_class == 0 {
        return bad("per_class", "must be at least 1".to_string());
    }
    if per_class > MAX_PER_CLASS {
        return bad(
            "per_class",
            format!("must be at most {MAX_PER_CLASS}, got {per_class}"),
        );
    }
    let gib = |bytes: u128| bytes as f64 / crate::memory::GIB;
    let image = 3 * u128::from(size) * u128::from(size);
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return bad(
            "size",
            format!(
                "must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size} (one {size}x{size} image needs {:.1} GiB of memory)",
                gib(image)
            ),
        );
    }
    let total = image * (classes * per_class) as u128;
    if total > u128::from(MAX_TOTAL_BYTES) {
        return bad(
            "size",
            format!(
                "{} images of {size}x{size} pixels would write about {:.1} GiB, more than the limit of {:.0} GiB: fewer or smaller images",
                classes * per_class,
                gib(total),
                gib(u128::from(MAX_TOTAL_BYTES))
            ),
        );
    }
    Ok(())
}

fn draw(spec: &ClassSpec, size: u32, g: &mut SplitMix64) -> RgbImage {
    let s = size as f32;
    // a dim, slightly tinted background with a gentle gradient
    let bg = [
        30.0 + 60.0 * g.uniform() as f32,
        30.0 + 60.0 * g.uniform() as f32,
        30.0 + 60.0 * g.uniform() as f32,
    ];
    let tilt = (g.uniform() as f32 - 0.5) * 40.0;
    let jitter =
        |g: &mut SplitMix64, v: f32| (v + (g.uniform() as f32 - 0.5) * 50.0).clamp(0.0, 255.0);
    let fg = [
        jitter(g, spec.colour[0]),
        jitter(g, spec.colour[1]),
        jitter(g, spec.colour[2]),
    ];
    let radius = s * (0.18 + 0.17 * g.uniform() as f32);
    let cx = radius + (s - 2.0 * radius) * g.uniform() as f32;
    let cy = radius + (s - 2.0 * radius) * g.uniform() as f32;
    let period = s * (0.08 + 0.06 * g.uniform() as f32);
    let angle = g.uniform() as f32 * std::f32::consts::PI;
    let (sin, cos) = angle.sin_cos();
    let mut img = RgbImage::new(size, size);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        let (dx, dy) = (fx - cx, fy - cy);
        let inside = match spec.pattern {
            Pattern::Disc => dx * dx + dy * dy <= radius * radius,
            Pattern::Square => {
                let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
                u.abs() <= radius * 0.8 && v.abs() <= radius * 0.8
            }
            Pattern::Triangle => {
                let v = dy / radius;
                (-0.9..=0.8).contains(&v) && dx.abs() / radius <= (v + 0.9) * 0.6
            }
            Pattern::Stripes => ((fy + tilt * fx / s) / period).floor() as i64 % 2 == 0,
            Pattern::Checker => {
                ((fx / period).floor() as i64 + (fy / period).floor() as i64) % 2 == 0
            }
            Pattern::Ring => {
                let d = (dx * dx + dy * dy).sqrt();
                d <= radius && d >= radius * 0.6
            }
            Pattern::Cross => {
                (dx.abs() <= radius * 0.25 && dy.abs() <= radius)
                    || (dy.abs() <= radius * 0.25 && dx.abs() <= radius)
            }
            Pattern::Dots => {
                let (u, v) = (fx % (2.0 * period) - period, fy % (2.0 * period) - period);
                u * u + v * v <= (period * 0.45).powi(2)
            }
        };
        let shade = 1.0 + tilt / 400.0 * (fx / s - 0.5);
        let base = if inside { fg } else { bg };
        let noise = (g.uniform() as f32 - 0.5) * 24.0;
        *px = Rgb(base.map(|v| (v * shade + noise).clamp(0.0, 255.0) as u8));
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_same_images_for_the_same_seed() {
        let dir = std::env::temp_dir().join(format!("alexvgg-synth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        make_dataset(&dir.join("a"), 3, 2, 32, 5).unwrap();
        make_dataset(&dir.join("b"), 3, 2, 32, 5).unwrap();
        let read = |p: &Path| std::fs::read(p).unwrap();
        let a = read(&dir.join("a/blue_triangle/0001.png"));
        assert_eq!(a, read(&dir.join("b/blue_triangle/0001.png")));
        assert_ne!(a, read(&dir.join("a/blue_triangle/0000.png")));
        assert!(make_dataset(&dir.join("c"), 9, 1, 32, 5).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_are_bounded_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("alexvgg-synth-sizes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (classes, per_class, size, setting, says) in [
            (3, 0, 32, "per_class", "at least"),
            (3, MAX_PER_CLASS + 1, 32, "per_class", "100000"),
            (3, 1, 100_000, "size", "GiB"),
            (3, 1, 8, "size", "16"),
            (8, 100_000, 512, "size", "GiB"),
            (1, 1, 32, "classes", "2"),
        ] {
            match make_dataset(&dir, classes, per_class, size, 0) {
                Err(FinetuneError::Setting { setting: s, reason }) => {
                    assert_eq!(s, setting, "{reason}");
                    assert!(reason.contains(says), "{reason}");
                }
                other => panic!("{classes} x {per_class} of {size}: {other:?}"),
            }
            assert!(!dir.exists(), "nothing is written");
        }
    }

    #[test]
    fn a_non_empty_folder_is_refused_unless_overwriting() {
        let dir = std::env::temp_dir().join(format!("alexvgg-synth-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("red_disc")).unwrap();
        std::fs::write(dir.join("red_disc/0000.png"), b"mine").unwrap();
        let err = make_dataset(&dir, 2, 1, 32, 0).unwrap_err().to_string();
        assert!(
            err.contains("not empty") && err.contains("--overwrite"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(dir.join("red_disc/0000.png")).unwrap(),
            b"mine"
        );
        make_dataset_with(&dir, 2, 1, 32, 0, true).unwrap();
        assert_ne!(
            std::fs::read(dir.join("red_disc/0000.png")).unwrap(),
            b"mine"
        );
        // an existing empty folder is fine
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        make_dataset(&empty, 2, 1, 32, 0).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

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

/// Writes `per_class` PNG images of `size`x`size` pixels for each of the first `classes`
/// classes into `dir/<class>/NNNN.png`. Positions, sizes, colours, backgrounds and noise are
/// drawn from `seed`, so the same arguments write the same files.
///
/// # Errors
/// [`FinetuneError::Data`] for a class count outside 2..=8 or a size below 16;
/// [`FinetuneError::Io`] when a file cannot be written.
pub fn make_dataset(
    dir: &Path,
    classes: usize,
    per_class: usize,
    size: u32,
    seed: u64,
) -> Result<(), FinetuneError> {
    if !(2..=MAX_CLASSES).contains(&classes) || size < 16 {
        return Err(FinetuneError::Data {
            path: dir.to_path_buf(),
            reason: format!(
                "need 2..={MAX_CLASSES} classes and images of at least 16 pixels (got {classes} classes, size {size})"
            ),
        });
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
}

//! Training curves of a fine-tuning run: loss and top-1 accuracy per epoch, for training and
//! validation, drawn with plotters into a PNG (`curves.png` beside `metrics.csv`).
//!
//! `alexvgg finetune` redraws the picture after every epoch from its history, and
//! `alexvgg plot RUN_DIR` redraws it from the run's `metrics.jsonl` ([`plot_run`]). Both go
//! through [`write_curves`], so the two pictures are the same.
//!
//! The picture has two panels side by side: loss (cross-entropy, from 0) on the left, top-1
//! accuracy (0 to 100 %) on the right, each with its training series in blue and its
//! validation series in orange, a marker at every epoch (one epoch still draws: as points),
//! a legend, axis labels, and the network's name in the title. A value that is not finite (a
//! NaN validation loss) leaves a gap in its line.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use alexvgg_models::Architecture;
use image::RgbImage;
use plotters::prelude::*;

use crate::finetuned::{CURVES, FinetunedError, METRICS_JSONL, is_finetuned, read_card};

/// Width of the picture in pixels.
pub const WIDTH: u32 = 1100;
/// Height of the picture in pixels.
pub const HEIGHT: u32 = 460;
/// Colour of the training series (matplotlib's blue).
pub const TRAIN_COLOR: [u8; 3] = [31, 119, 180];
/// Colour of the validation series (matplotlib's orange).
pub const VAL_COLOR: [u8; 3] = [255, 127, 14];

/// The font family plotters draws text with, registered once by [`register_fonts`].
pub const FONT: &str = "sans-serif";

/// One epoch's values as the curves show them (a line of `metrics.jsonl`; its other fields
/// are ignored). A value the run could not compute (`null`, written for NaN) is `NaN`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
pub struct EpochPoint {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    #[serde(deserialize_with = "number_or_nan")]
    pub train_loss: f64,
    /// Training top-1 accuracy, 0 to 1.
    #[serde(deserialize_with = "number_or_nan")]
    pub train_top1: f64,
    /// Validation loss.
    #[serde(deserialize_with = "number_or_nan")]
    pub val_loss: f64,
    /// Validation top-1 accuracy, 0 to 1.
    #[serde(deserialize_with = "number_or_nan")]
    pub val_top1: f64,
}

/// A number, or `null` (how JSON writes NaN and infinities) as `NaN`.
fn number_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Errors reading a run's metrics or drawing its curves.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The directory holds no fine-tuning run.
    #[error("{}: not a fine-tuning run directory (no config.json)", .0.display())]
    NotARun(PathBuf),
    /// The run has no finished epoch to draw.
    #[error("{}: no metrics to plot (no epoch of the run has finished yet)", .0.display())]
    NoMetrics(PathBuf),
    /// A metrics file that is not what a run writes.
    #[error("{}: corrupt metrics at line {line}: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An unreadable file.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something other than a regular file is at the picture's path.
    #[error("{} exists and is {kind}, not a regular file: refusing to replace it", .path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What is there.
        kind: &'static str,
    },
    /// An unreadable `config.json`.
    #[error(transparent)]
    Finetuned(#[from] FinetunedError),
    /// Drawing or encoding the picture failed.
    #[error("drawing the training curves: {0}")]
    Draw(String),
    /// Writing the picture failed.
    #[error(transparent)]
    Write(#[from] alexvgg_import::ImportError),
}

/// Registers DejaVu Sans (embedded by the `dejavu` crate) as plotters' [`FONT`], once per
/// process; every picture with text calls it before drawing.
///
/// # Errors
/// [`PlotError::Draw`] if the embedded font cannot be parsed (it always can).
pub fn register_fonts() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
        ]
        .into_iter()
        .all(|(style, bytes)| plotters::style::register_font(FONT, style, bytes).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Draw(
            "the embedded DejaVu Sans font cannot be read".into(),
        ))
    }
}

/// The title of a run's curves: its network and number of classes.
pub fn curves_title(arch: &Architecture, classes: usize) -> String {
    format!(
        "{} on {classes} classes: loss and top-1 per epoch",
        arch.describe()
    )
}

/// Reads the epochs of `dir/metrics.jsonl`, in order.
///
/// # Errors
/// [`PlotError::NotARun`] when `dir` has no `config.json`, [`PlotError::NoMetrics`] when it
/// has no metrics (or no line in them), [`PlotError::Corrupt`] naming the line that is not an
/// epoch's record or whose epoch does not follow the previous one.
pub fn read_metrics(dir: &Path) -> Result<Vec<EpochPoint>, PlotError> {
    if !is_finetuned(dir) {
        return Err(PlotError::NotARun(dir.to_path_buf()));
    }
    let path = dir.join(METRICS_JSONL);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PlotError::NoMetrics(dir.to_path_buf()));
        }
        Err(source) => return Err(PlotError::Io { path, source }),
    };
    let corrupt = |line: usize, reason: String| PlotError::Corrupt {
        path: path.clone(),
        line,
        reason,
    };
    let text = String::from_utf8(bytes).map_err(|e| corrupt(1, format!("not UTF-8 ({e})")))?;
    let mut points: Vec<EpochPoint> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p: EpochPoint = serde_json::from_str(line)
            .map_err(|e| corrupt(i + 1, format!("not an epoch's record ({e})")))?;
        let expected = points.last().map_or(1, |q| q.epoch + 1);
        if p.epoch != expected {
            return Err(corrupt(
                i + 1,
                format!("epoch {} where epoch {expected} should be", p.epoch),
            ));
        }
        points.push(p);
    }
    if points.is_empty() {
        return Err(PlotError::NoMetrics(dir.to_path_buf()));
    }
    Ok(points)
}

/// Draws the curves of `points` (at least one epoch) under `title`, [`WIDTH`] x [`HEIGHT`].
///
/// # Errors
/// [`PlotError::NoMetrics`] for no points, [`PlotError::Draw`] when plotters fails.
pub fn render_curves(title: &str, points: &[EpochPoint]) -> Result<RgbImage, PlotError> {
    if points.is_empty() {
        return Err(PlotError::NoMetrics(PathBuf::new()));
    }
    register_fonts()?;
    let draw = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let root = root
            .titled(title, (FONT, 24).into_font().style(FontStyle::Bold))
            .map_err(|e| draw(&e))?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        let loss_max = points
            .iter()
            .flat_map(|p| [p.train_loss, p.val_loss])
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let loss_top = if loss_max > 0.0 { loss_max * 1.1 } else { 1.0 };
        let loss = Panel {
            caption: "loss",
            y_label: "cross-entropy loss",
            y_max: loss_top,
            legend: SeriesLabelPosition::UpperRight,
            series: [
                points.iter().map(|p| (p.epoch, p.train_loss)).collect(),
                points.iter().map(|p| (p.epoch, p.val_loss)).collect(),
            ],
        };
        let top1 = Panel {
            caption: "top-1 accuracy",
            y_label: "top-1 accuracy (%)",
            y_max: 100.0,
            legend: SeriesLabelPosition::LowerRight,
            series: [
                points
                    .iter()
                    .map(|p| (p.epoch, 100.0 * p.train_top1))
                    .collect(),
                points
                    .iter()
                    .map(|p| (p.epoch, 100.0 * p.val_top1))
                    .collect(),
            ],
        };
        loss.draw(&left, points.len()).map_err(|e| draw(&e))?;
        top1.draw(&right, points.len()).map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    RgbImage::from_raw(WIDTH, HEIGHT, buf)
        .ok_or_else(|| PlotError::Draw("the picture buffer has the wrong size".into()))
}

/// One panel: a caption, a y axis from 0, and the training and validation series.
struct Panel {
    caption: &'static str,
    y_label: &'static str,
    y_max: f64,
    legend: SeriesLabelPosition,
    /// `(epoch, value)` of training, then of validation.
    series: [Vec<(usize, f64)>; 2],
}

impl Panel {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
        epochs: usize,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let n = epochs as f64;
        // a margin so that the first and last markers are whole; half an epoch for short runs
        let pad = (n * 0.03).max(0.5);
        // no epoch 0 on the axis
        let x = (1.0 - pad.min(0.5))..(n + pad);
        // markers shrink as epochs crowd together
        let radius = match epochs {
            0..=25 => 4,
            26..=60 => 3,
            _ => 2,
        };
        let mut chart = ChartBuilder::on(area)
            .caption(self.caption, (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x, 0.0..self.y_max)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(self.y_label)
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            // at most ten epoch labels (steps of 1, 2, 5, 10...), whole epochs only
            .x_labels(epochs.clamp(1, 10))
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| {
                if self.y_max >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()?;
        let colors = [TRAIN_COLOR, VAL_COLOR].map(|[r, g, b]| RGBColor(r, g, b));
        for ((values, name), color) in self
            .series
            .iter()
            .zip(["training", "validation"])
            .zip(colors)
        {
            let line = color.stroke_width(2);
            // contiguous runs of finite values are joined by lines; a NaN leaves a gap
            let finite = |v: &&(usize, f64)| v.1.is_finite();
            for run in values.split(|&(_, v)| !v.is_finite()) {
                if run.len() > 1 {
                    let run = run.iter().map(|&(e, v)| (e as f64, v.min(self.y_max)));
                    chart.draw_series(LineSeries::new(run, line))?;
                }
            }
            chart
                .draw_series(values.iter().filter(finite).map(|&(e, v)| {
                    Circle::new((e as f64, v.min(self.y_max)), radius, color.filled())
                }))?
                .label(name)
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (24, 0)], line)
                        + Circle::new((12, 0), 4, color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(self.legend.clone())
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .margin(12)
            .draw()?;
        Ok(())
    }
}

/// `image` as PNG bytes.
///
/// # Errors
/// [`PlotError::Draw`] when encoding fails.
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, PlotError> {
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| PlotError::Draw(format!("encoding the PNG: {e}")))?;
    Ok(out.into_inner())
}

/// Draws the curves of `points` under `title` and writes them as a PNG to `path` through a
/// temporary file renamed into place (a failure never leaves a partial picture).
///
/// # Errors
/// [`PlotError::NotAFile`] when something other than a regular file is at `path` (a
/// directory, a FIFO, a device, a symbolic link); as [`render_curves`] and [`encode_png`];
/// [`PlotError::Write`] for a failed write.
pub fn write_curves(path: &Path, title: &str, points: &[EpochPoint]) -> Result<(), PlotError> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
    {
        return Err(PlotError::NotAFile {
            path: path.to_path_buf(),
            kind: crate::files::kind(&meta),
        });
    }
    let png = encode_png(&render_curves(title, points)?)?;
    alexvgg_import::write_bytes_atomic(path, &png)?;
    Ok(())
}

/// Redraws the curves of the run in `dir` from its `metrics.jsonl` into `out` (default:
/// `dir/curves.png`); returns the file written. Nothing is written when the run or its
/// metrics cannot be read.
///
/// # Errors
/// As [`read_metrics`], [`read_card`] and [`write_curves`].
pub fn plot_run(dir: &Path, out: Option<&Path>) -> Result<PathBuf, PlotError> {
    let points = read_metrics(dir)?;
    let card = read_card(dir)?;
    let out = out.map_or_else(|| dir.join(CURVES), Path::to_path_buf);
    let title = curves_title(&card.architecture, card.classes.len());
    write_curves(&out, &title, &points)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(epoch: usize, loss: f64, top1: f64) -> EpochPoint {
        EpochPoint {
            epoch,
            train_loss: loss,
            train_top1: top1,
            val_loss: loss * 0.8,
            val_top1: top1 * 0.9,
        }
    }

    /// Pixels of exactly `color` in the columns `x0..x1`.
    fn count(img: &RgbImage, color: [u8; 3], x0: u32, x1: u32) -> usize {
        img.enumerate_pixels()
            .filter(|(x, _, p)| (x0..x1).contains(x) && p.0 == color)
            .count()
    }

    #[test]
    fn both_series_are_drawn_in_both_panels_even_for_one_epoch() {
        for points in [
            vec![point(1, 2.0, 0.3)],
            (1..=30)
                .map(|e| point(e, 2.0 / e as f64, 1.0 - 1.0 / e as f64))
                .collect(),
        ] {
            let img = render_curves("AlexNet (tf) on 2 classes", &points).unwrap();
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
            for color in [TRAIN_COLOR, VAL_COLOR] {
                for (x0, x1) in [(0, WIDTH / 2), (WIDTH / 2, WIDTH)] {
                    // markers (and lines) beyond the legend's sample
                    assert!(
                        count(&img, color, x0, x1) > 60,
                        "{} epochs: colour {color:?} in columns {x0}..{x1}",
                        points.len()
                    );
                }
            }
        }
    }

    #[test]
    fn a_nan_value_leaves_a_gap_and_no_error() {
        let mut points: Vec<EpochPoint> = (1..=4).map(|e| point(e, 1.0 / e as f64, 0.5)).collect();
        points[2].val_loss = f64::NAN;
        let img = render_curves("t", &points).unwrap();
        assert!(count(&img, VAL_COLOR, 0, WIDTH / 2) > 0);
        let all_nan = vec![EpochPoint {
            epoch: 1,
            train_loss: f64::NAN,
            train_top1: f64::NAN,
            val_loss: f64::NAN,
            val_top1: f64::NAN,
        }];
        assert!(render_curves("t", &all_nan).is_ok());
        assert!(matches!(
            render_curves("t", &[]),
            Err(PlotError::NoMetrics(_))
        ));
    }
}

//! The picture of an explanation: the image as the network saw it, and beside it the same image
//! under the heat map, with a colour bar and, above, the class explained and its probability.
//!
//! The map (Grad-CAM's `h x w`, or saliency's input-sized one) is scaled bilinearly to the
//! image's size (pixel centres aligned, as OpenCV's and PIL's resizing do), coloured with
//! matplotlib's perceptually uniform *inferno* colormap (black for 0, through purple and
//! orange, to pale yellow for 1) and blended half and half over the image, so hot regions glow
//! and cold ones darken. The colour bar shows the colormap from 0 (bottom) to 1 (top). Text
//! and colour bar are drawn by plotters, in DejaVu Sans.

use image::{Rgb, RgbImage};
use plotters::prelude::*;

use crate::explain::Explanation;
use crate::plot::{FONT, register_fonts};

/// Space around and between the panels, in pixels.
const MARGIN: u32 = 12;
/// Height of the two title lines above the panels.
const TITLE_HEIGHT: u32 = 50;
/// Height of the captions under the panels.
const FOOT_HEIGHT: u32 = 24;
/// Width of the colour bar.
const BAR_WIDTH: u32 = 14;
/// Width kept right of the colour bar for its tick labels.
const TICKS_WIDTH: u32 = 36;
/// Weight of the heat map's colour in the blend (the image has the rest).
pub const HEAT_ALPHA: f32 = 0.5;

/// Errors drawing a picture.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The map does not fit the explanation's size, or the image is not square.
    #[error("{0}")]
    Shape(String),
    /// Drawing failed.
    #[error("drawing the picture: {0}")]
    Draw(String),
}

/// What the picture says in words.
#[derive(Clone, Debug, PartialEq)]
pub struct Caption {
    /// The class explained (its name, or `class N`).
    pub label: String,
    /// Its softmax probability.
    pub probability: f32,
    /// What the map is, for the second title line (`Grad-CAM at conv5 (13x13) of AlexNet (tf)`).
    pub method: String,
    /// What the first panel shows, under it (`input 227x227, 'caffe' preprocessing`).
    pub input: String,
}

/// The size of the picture for images of `side` x `side`: two panels, the colour bar with
/// its ticks, the title above and the captions below.
pub fn overlay_size(side: u32) -> (u32, u32) {
    (
        MARGIN + side + MARGIN + side + MARGIN + BAR_WIDTH + TICKS_WIDTH + MARGIN,
        MARGIN + TITLE_HEIGHT + side + FOOT_HEIGHT + MARGIN,
    )
}

/// The explanation's picture over `view`, the image as the network saw it (square, the
/// network's input size).
///
/// # Errors
/// [`OverlayError::Shape`] for a map whose length is not its height x width, or an image that
/// is not square; [`OverlayError::Draw`] when the text cannot be drawn.
pub fn overlay(
    view: &RgbImage,
    e: &Explanation,
    caption: &Caption,
) -> Result<RgbImage, OverlayError> {
    let side = view.width();
    if view.height() != side || side == 0 {
        return Err(OverlayError::Shape(format!(
            "the image is {}x{}, not a square",
            view.width(),
            view.height()
        )));
    }
    if e.map.len() != e.height * e.width || e.map.is_empty() {
        return Err(OverlayError::Shape(format!(
            "a map of {} values is not {}x{}",
            e.map.len(),
            e.height,
            e.width
        )));
    }
    let heat = upsample(&e.map, e.height, e.width, side as usize);
    let (width, height) = overlay_size(side);
    let mut picture = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let top = MARGIN + TITLE_HEIGHT;
    let right = MARGIN + side + MARGIN;
    for (x, y, p) in view.enumerate_pixels() {
        picture.put_pixel(MARGIN + x, top + y, *p);
        let c = inferno(heat[(y * side + x) as usize]);
        let blend = |i: usize| {
            (f32::from(p.0[i]) * (1.0 - HEAT_ALPHA) + f32::from(c[i]) * HEAT_ALPHA).round() as u8
        };
        picture.put_pixel(right + x, top + y, Rgb([blend(0), blend(1), blend(2)]));
    }
    let mut buf = picture.into_raw();
    draw_text_and_bar(&mut buf, (width, height), side, e, caption).map_err(OverlayError::Draw)?;
    RgbImage::from_raw(width, height, buf)
        .ok_or_else(|| OverlayError::Draw("the picture's buffer changed size".into()))
}

/// Title, captions and colour bar, drawn by plotters into the picture's RGB buffer.
fn draw_text_and_bar(
    buf: &mut [u8],
    (width, height): (u32, u32),
    side: u32,
    e: &Explanation,
    caption: &Caption,
) -> Result<(), String> {
    register_fonts().map_err(|e| e.to_string())?;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(buf, (width, height)).into_drawing_area();
    let title = (FONT, 18).into_font().style(FontStyle::Bold).color(&BLACK);
    let small = (FONT, 13).into_font().color(&RGBColor(60, 60, 60));
    let available = width - 2 * MARGIN;
    let head = format!("p = {:.4}", caption.probability);
    let label = fit(
        &root,
        &format!("class {}: {}", e.class, caption.label),
        &title,
        available.saturating_sub(text_width(&root, &head, &title)? + 16),
    )?;
    root.draw_text(&label, &title, (MARGIN as i32, MARGIN as i32))
        .map_err(|e| err(&e))?;
    let head_x = width - MARGIN - text_width(&root, &head, &title)?;
    root.draw_text(&head, &title, (head_x as i32, MARGIN as i32))
        .map_err(|e| err(&e))?;
    let method = fit(&root, &caption.method, &small, available)?;
    root.draw_text(&method, &small, (MARGIN as i32, (MARGIN + 27) as i32))
        .map_err(|e| err(&e))?;
    // captions under the panels
    let top = MARGIN + TITLE_HEIGHT;
    let foot_y = (top + side + 6) as i32;
    let input = fit(&root, &caption.input, &small, side)?;
    root.draw_text(&input, &small, (MARGIN as i32, foot_y))
        .map_err(|e| err(&e))?;
    let blended = format!("the {}x{} map over the input", e.height, e.width);
    let blended = fit(&root, &blended, &small, side)?;
    root.draw_text(&blended, &small, ((2 * MARGIN + side) as i32, foot_y))
        .map_err(|e| err(&e))?;
    // the colour bar: 1 at the top, 0 at the bottom, framed, with three ticks
    let x0 = (3 * MARGIN + 2 * side) as i32;
    let x1 = x0 + BAR_WIDTH as i32;
    let (y0, y1) = (top as i32, (top + side) as i32);
    for y in y0..y1 {
        let v = 1.0 - (y - y0) as f32 / (side - 1).max(1) as f32;
        let [r, g, b] = inferno(v);
        root.draw(&Rectangle::new(
            [(x0, y), (x1, y + 1)],
            RGBColor(r, g, b).filled(),
        ))
        .map_err(|e| err(&e))?;
    }
    let frame = RGBColor(90, 90, 90);
    root.draw(&Rectangle::new([(x0, y0), (x1, y1)], frame.stroke_width(1)))
        .map_err(|e| err(&e))?;
    for (v, text) in [(1.0f32, "1"), (0.5, "0.5"), (0.0, "0")] {
        let y = y0 + ((1.0 - v) * (y1 - y0 - 1) as f32).round() as i32;
        root.draw(&PathElement::new(vec![(x1, y), (x1 + 4, y)], frame))
            .map_err(|e| err(&e))?;
        let (_, th) = root.estimate_text_size(text, &small).map_err(|e| err(&e))?;
        let ty = (y - th as i32 / 2).clamp(y0 - 2, y1 - th as i32 + 2);
        root.draw_text(text, &small, (x1 + 7, ty))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// The width of `text` in `style`.
fn text_width<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    style: &TextStyle,
) -> Result<u32, String> {
    root.estimate_text_size(text, style)
        .map(|(w, _)| w)
        .map_err(|e| e.to_string())
}

/// `text`, shortened with an ellipsis until it is at most `width` pixels wide in `style`.
fn fit<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    style: &TextStyle,
    width: u32,
) -> Result<String, String> {
    let mut chars: Vec<char> = text.chars().collect();
    let mut candidate = text.to_string();
    while text_width(root, &candidate, style)? > width && !chars.is_empty() {
        chars.pop();
        candidate = format!("{}…", chars.iter().collect::<String>().trim_end());
    }
    Ok(candidate)
}

/// `map` (`h x w`) scaled bilinearly to `side x side`, pixel centres aligned.
///
/// # Shapes
/// - `map`: `[h, w]` row-major
/// - output: `[side, side]` row-major
pub fn upsample(map: &[f32], h: usize, w: usize, side: usize) -> Vec<f32> {
    // source coordinate of a destination pixel centre, and its two neighbours with weights
    let axis = |n: usize| -> Vec<(usize, usize, f32)> {
        (0..side)
            .map(|d| {
                let s =
                    ((d as f32 + 0.5) * n as f32 / side as f32 - 0.5).clamp(0.0, (n - 1) as f32);
                let i0 = s.floor() as usize;
                let i1 = (i0 + 1).min(n - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let (rows, cols) = (axis(h), axis(w));
    let mut out = Vec::with_capacity(side * side);
    for &(r0, r1, fy) in &rows {
        for &(c0, c1, fx) in &cols {
            let top = map[r0 * w + c0] * (1.0 - fx) + map[r0 * w + c1] * fx;
            let bottom = map[r1 * w + c0] * (1.0 - fx) + map[r1 * w + c1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// matplotlib's *inferno* colormap at `v` (clamped to `[0, 1]`; not a number is 0): its
/// colours at `k / 32` (`matplotlib.colormaps["inferno"]`, rounded to bytes), linearly
/// interpolated, within 5/255 of matplotlib's 256-entry table.
pub fn inferno(v: f32) -> [u8; 3] {
    const TABLE: [[u8; 3]; 33] = [
        [0, 0, 4],
        [4, 3, 18],
        [11, 7, 36],
        [21, 11, 55],
        [33, 12, 74],
        [47, 10, 91],
        [61, 9, 101],
        [74, 12, 107],
        [87, 16, 110],
        [100, 21, 110],
        [113, 25, 110],
        [125, 30, 109],
        [138, 34, 106],
        [151, 39, 102],
        [163, 44, 97],
        [176, 49, 91],
        [188, 55, 84],
        [199, 62, 76],
        [210, 70, 68],
        [219, 80, 59],
        [228, 90, 49],
        [235, 102, 40],
        [241, 115, 29],
        [246, 128, 19],
        [249, 142, 9],
        [251, 157, 7],
        [252, 172, 17],
        [251, 188, 33],
        [249, 203, 53],
        [245, 219, 76],
        [242, 234, 105],
        [243, 246, 138],
        [252, 255, 164],
    ];
    let t = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let at = t * (TABLE.len() - 1) as f32;
    let i = (at.floor() as usize).min(TABLE.len() - 2);
    let f = at - i as f32;
    let (a, b) = (TABLE[i], TABLE[i + 1]);
    std::array::from_fn(|c| (f32::from(a[c]) * (1.0 - f) + f32::from(b[c]) * f).round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_colormap_runs_from_black_to_pale_yellow() {
        assert_eq!(inferno(0.0), [0, 0, 4]);
        assert_eq!(inferno(1.0), [252, 255, 164]);
        assert_eq!(inferno(0.5), [188, 55, 84]);
        assert_eq!(inferno(0.5 / 32.0), [2, 2, 11]);
        assert_eq!(inferno(f32::NAN), inferno(0.0));
        assert_eq!(inferno(7.0), inferno(1.0));
    }

    #[test]
    fn upsampling_keeps_constant_maps_and_corners() {
        assert_eq!(upsample(&[0.25; 4], 2, 2, 5), vec![0.25; 25]);
        let up = upsample(&[0.0, 1.0, 0.0, 1.0], 2, 2, 4);
        assert_eq!(&up[..4], &[0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn the_picture_has_its_documented_size() {
        let view = RgbImage::from_pixel(40, 40, Rgb([10, 200, 30]));
        let e = Explanation {
            class: 3,
            logit: 2.0,
            probability: 0.75,
            height: 2,
            width: 2,
            map: vec![0.0, 0.5, 0.5, 1.0],
        };
        let caption = Caption {
            label: "a very long class name that cannot fit in so narrow a picture".into(),
            probability: 0.75,
            method: "Grad-CAM at conv5 (2x2)".into(),
            input: "input 40x40".into(),
        };
        let img = overlay(&view, &e, &caption).unwrap();
        assert_eq!(img.dimensions(), overlay_size(40));
        // the first panel is the image as it was
        assert_eq!(
            img.get_pixel(MARGIN + 5, MARGIN + TITLE_HEIGHT + 5).0,
            [10, 200, 30]
        );
        let bad = Explanation {
            map: vec![0.0; 3],
            ..e
        };
        assert!(overlay(&view, &bad, &caption).is_err());
    }
}

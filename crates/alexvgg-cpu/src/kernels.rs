//! The engine's kernels on channels-last (NHWC) activations.
//!
//! Channels-last keeps every inner loop contiguous: a convolution's patch row is `kh * kw`
//! copies of `C` contiguous values, max pooling and LRN run along contiguous channel vectors,
//! and the convolution's GEMM writes its output in place with no transpose.

use rayon::prelude::*;

use crate::gemm::{MatRef, sgemm, sgemm_serial};
use crate::multiversion;
use crate::pool::Pool;
use crate::simd::Simd;

/// An activation in channels-last layout: element `(n, y, x, c)` at `((n * h + y) * w + x) * c`.
#[derive(Clone, Debug, PartialEq)]
pub struct Nhwc {
    /// Values, `batch * height * width * channels` of them.
    pub data: Vec<f32>,
    /// Batch size.
    pub batch: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Channels.
    pub channels: usize,
}

impl Nhwc {
    /// Converts a channels-first `[batch, channels, height, width]` buffer.
    ///
    /// # Panics
    /// When `data` does not hold exactly that many values.
    pub fn from_nchw(
        data: &[f32],
        [batch, channels, height, width]: [usize; 4],
        pool: &Pool,
    ) -> Self {
        assert_eq!(
            data.len(),
            batch * channels * height * width,
            "NCHW buffer size"
        );
        let plane = height * width;
        let mut out = pool.overwrite(data.len());
        // One task per image row (a single image is most of the work at batch 1).
        let row = width * channels;
        if row > 0 {
            out.par_chunks_mut(row).enumerate().for_each(|(r, dst)| {
                let (n, y) = (r / height, r % height);
                let src = &data[n * plane * channels + y * width..];
                for (x, px) in dst.chunks_mut(channels).enumerate() {
                    for (c, v) in px.iter_mut().enumerate() {
                        *v = src[c * plane + x];
                    }
                }
            });
        }
        Self {
            data: out,
            batch,
            height,
            width,
            channels,
        }
    }

    /// The same values channels-first, `[batch, channels * height * width]` flattened in
    /// `(c, h, w)` order: what a channels-first model's fully connected layer expects.
    pub fn to_nchw(&self) -> Vec<f32> {
        let plane = self.height * self.width;
        let per_image = plane * self.channels;
        let mut out = vec![0.0; self.data.len()];
        if per_image == 0 {
            return out;
        }
        out.par_chunks_mut(per_image)
            .zip(self.data.par_chunks(per_image))
            .for_each(|(dst, src)| {
                for (p, px) in src.chunks(self.channels).enumerate() {
                    for (c, &v) in px.iter().enumerate() {
                        dst[c * plane + p] = v;
                    }
                }
            });
        out
    }

    /// A result of this batch: `data` as `[batch, height, width, channels]`.
    pub fn output(&self, data: Vec<f32>, [height, width]: [usize; 2], channels: usize) -> Nhwc {
        debug_assert_eq!(data.len(), self.batch * height * width * channels);
        Nhwc {
            data,
            batch: self.batch,
            height,
            width,
            channels,
        }
    }
}

/// A convolution's geometry for one input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride `[height, width]`.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    /// Output `[height, width]`.
    pub output: [usize; 2],
}

/// Convolution weights packed for the GEMM: per group a `[kh * kw * cin_g, cout_g]` row-major
/// matrix whose rows follow the NHWC patch order `(ky, kx, c)`.
#[derive(Clone, Debug)]
pub struct PackedConv {
    /// Input channels (all groups).
    pub in_channels: usize,
    /// Output channels (all groups).
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Channel groups.
    pub groups: usize,
    /// Group matrices, one after the other.
    pub weight: Vec<f32>,
    /// One bias per output channel.
    pub bias: Vec<f32>,
}

impl PackedConv {
    /// Packs a burn/PyTorch `[cout, cin / groups, kh, kw]` weight.
    ///
    /// # Panics
    /// When the sizes disagree.
    pub fn from_oihw(
        weight: &[f32],
        [cout, cin_g, kh, kw]: [usize; 4],
        groups: usize,
        bias: Vec<f32>,
    ) -> Self {
        assert_eq!(weight.len(), cout * cin_g * kh * kw, "conv weight size");
        assert_eq!(bias.len(), cout, "conv bias size");
        let cout_g = cout / groups;
        let packed = pack_patches(weight, [cout, cin_g, kh, kw], groups, cout_g);
        Self {
            in_channels: cin_g * groups,
            out_channels: cout,
            kernel: [kh, kw],
            groups,
            weight: packed,
            bias,
        }
    }
}

/// A `[cout, cin_g, kh, kw]` weight as patch-row matrices: per group, per block of `width` output
/// channels, a `[kh * kw * cin_g][width]` matrix whose rows follow the NHWC patch order
/// `(ky, kx, c)`, zeros past the group's last channel (`width = cout_g`: one row-major matrix per
/// group, for the GEMM; 16: the direct kernel's blocks).
pub(crate) fn pack_patches(
    weight: &[f32],
    [cout, cin_g, kh, kw]: [usize; 4],
    groups: usize,
    width: usize,
) -> Vec<f32> {
    let cout_g = cout / groups;
    let blocks = cout_g.div_ceil(width);
    let kdim = kh * kw * cin_g;
    let mut packed = vec![0.0; groups * blocks * kdim * width];
    for (gb, dst) in packed.chunks_exact_mut(kdim * width).enumerate() {
        let (g, b) = (gb / blocks, gb % blocks);
        for c in 0..cin_g {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &mut dst[((ky * kw + kx) * cin_g + c) * width..][..width];
                    // output channel innermost: each packed row is written sequentially
                    for (o, v) in row.iter_mut().take(cout_g - b * width).enumerate() {
                        let oc = g * cout_g + b * width + o;
                        *v = weight[((oc * cin_g + c) * kh + ky) * kw + kx];
                    }
                }
            }
        }
    }
    packed
}

/// Output pixels per task of a large convolution: enough rows for the GEMM to run at full
/// speed, few enough that the patch matrix stays near the cache.
const CONV_TILE: usize = 192;

/// Convolution with bias and optional ReLU, NHWC in and out.
///
/// Large outputs are cut into tiles of output pixels, one task each: the task builds the tile's
/// patch matrix (im2col, zeros for padding), multiplies it by every group's weight matrix straight
/// into the output rows, then adds bias and applies ReLU while the tile is still in cache. Small
/// outputs (late layers at batch 1) build one patch matrix and split the output channels instead.
///
/// # Shapes
/// - `x`: `[batch, H, W, cin]`
/// - output: `[batch, OH, OW, cout]` with `OH, OW` from `geometry`
pub fn conv2d(x: &Nhwc, w: &PackedConv, geometry: &ConvGeometry, relu: bool, pool: &Pool) -> Nhwc {
    assert_eq!(x.channels, w.in_channels, "conv input channels");
    let [oh, ow] = geometry.output;
    let pixels = x.batch * oh * ow;
    let cout = w.out_channels;
    let cin_g = w.in_channels / w.groups;
    let cout_g = cout / w.groups;
    let kdim = w.kernel[0] * w.kernel[1] * cin_g;
    let mut out = pool.overwrite(pixels * cout);
    let threads = rayon::current_num_threads().max(1);
    if pixels >= CONV_TILE * threads {
        // Equal tiles, a multiple of the thread count, so that no core idles at the end.
        let tiles = pixels.div_ceil(CONV_TILE).next_multiple_of(threads);
        let tile_px = pixels.div_ceil(tiles).next_multiple_of(4);
        out.par_chunks_mut(tile_px * cout)
            .enumerate()
            .for_each_init(
                || pool.scratch(tile_px * kdim),
                |col, (t, tile)| {
                    let rows = tile.len() / cout;
                    for g in 0..w.groups {
                        im2col(x, geometry, t * tile_px, rows, g * cin_g, cin_g, col);
                        let wg = MatRef::new(&w.weight, g * kdim * cout_g, cout_g);
                        let col = MatRef::new(col, 0, kdim);
                        sgemm_serial(rows, cout_g, kdim, col, wg, &mut tile[g * cout_g..], cout);
                    }
                    bias_relu(tile, &w.bias, relu);
                },
            );
    } else {
        let mut col = pool.scratch(pixels * kdim);
        for g in 0..w.groups {
            im2col(x, geometry, 0, pixels, g * cin_g, cin_g, &mut col);
            let mut part = pool.scratch(pixels * cout_g);
            let wg = MatRef::new(&w.weight, g * kdim * cout_g, cout_g);
            sgemm(
                pixels,
                cout_g,
                kdim,
                MatRef::new(&col, 0, kdim),
                wg,
                &mut part,
            );
            for (dst, src) in out.chunks_mut(cout).zip(part.chunks(cout_g)) {
                dst[g * cout_g..(g + 1) * cout_g].copy_from_slice(src);
            }
        }
        out.par_chunks_mut(cout * 64)
            .for_each(|rows| bias_relu(rows, &w.bias, relu));
    }
    x.output(out, [oh, ow], cout)
}

/// Writes the patch rows of output pixels `first..first + rows` (flat over batch, y, x) for the
/// input channels `c0..c0 + cin_g` into `col` (`rows x (kh * kw * cin_g)`), zeros for padding.
pub(crate) fn im2col(
    x: &Nhwc,
    g: &ConvGeometry,
    first: usize,
    rows: usize,
    c0: usize,
    cin_g: usize,
    col: &mut [f32],
) {
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [top, left, _, _] = g.padding;
    let [oh, ow] = g.output;
    let kdim = kh * kw * cin_g;
    let (h, w, c) = (x.height, x.width, x.channels);
    for (r, dst) in col.chunks_mut(kdim).take(rows).enumerate() {
        let p = first + r;
        let (n, rem) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox) = (rem / ow, rem % ow);
        let image = &x.data[n * h * w * c..(n + 1) * h * w * c];
        for ky in 0..kh {
            let iy = (oy * sh + ky) as isize - top as isize;
            let row = &mut dst[ky * kw * cin_g..(ky + 1) * kw * cin_g];
            if iy < 0 || iy >= h as isize {
                row.fill(0.0);
                continue;
            }
            let iy = iy as usize;
            let x0 = (ox * sw) as isize - left as isize;
            if cin_g == c {
                // All channels: the part of the window inside the image is one contiguous copy,
                // the part in the padding zeros.
                let lo = (-x0).clamp(0, kw as isize) as usize;
                let hi = (w as isize - x0).clamp(lo as isize, kw as isize) as usize;
                row[..lo * c].fill(0.0);
                if hi > lo {
                    let start = (iy * w + (x0 + lo as isize) as usize) * c;
                    row[lo * c..hi * c].copy_from_slice(&image[start..start + (hi - lo) * c]);
                }
                row[hi * c..].fill(0.0);
                continue;
            }
            for kx in 0..kw {
                let ix = x0 + kx as isize;
                let cell = &mut row[kx * cin_g..(kx + 1) * cin_g];
                if ix < 0 || ix >= w as isize {
                    cell.fill(0.0);
                } else {
                    let start = (iy * w + ix as usize) * c + c0;
                    cell.copy_from_slice(&image[start..start + cin_g]);
                }
            }
        }
    }
}

/// Adds a per-channel bias to every row of `rows` (row length `bias.len()`), then ReLU.
pub fn bias_relu(rows: &mut [f32], bias: &[f32], relu: bool) {
    for row in rows.chunks_mut(bias.len()) {
        if relu {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
            }
        } else {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

/// A max-pool window's geometry for one input size (padding counts as minus infinity).
pub type PoolGeometry = ConvGeometry;

/// Max pooling over `geometry`'s windows, each clipped to the image; the element-wise body of
/// `simd`'s variant.
///
/// # Shapes
/// - `x`: `[batch, H, W, C]`
/// - output: `[batch, OH, OW, C]`
pub fn max_pool2d(x: &Nhwc, geometry: &PoolGeometry, simd: Simd, pool: &Pool) -> Nhwc {
    let [oh, ow] = geometry.output;
    let [kh, kw] = geometry.kernel;
    let [sh, sw] = geometry.stride;
    let [top, left, _, _] = geometry.padding;
    let (h, w, c) = (x.height, x.width, x.channels);
    let mut out = pool.overwrite(x.batch * oh * ow * c);
    out.fill(f32::NEG_INFINITY);
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(row, dst)| {
            let (n, oy) = (row / oh, row % oh);
            let image = &x.data[n * h * w * c..(n + 1) * h * w * c];
            let y0 = (oy * sh) as isize - top as isize;
            let ys = y0.max(0) as usize..((y0 + kh as isize).min(h as isize)).max(0) as usize;
            for (ox, px) in dst.chunks_mut(c).enumerate() {
                let x0 = (ox * sw) as isize - left as isize;
                let xs = x0.max(0) as usize..((x0 + kw as isize).min(w as isize)).max(0) as usize;
                for iy in ys.clone() {
                    let row = &image[(iy * w + xs.start) * c..(iy * w + xs.end) * c];
                    max_into(simd, px, row);
                }
            }
        });
    x.output(out, [oh, ow], c)
}

/// Local response normalization across channels (TensorFlow's parameters):
/// `y = x / (bias + alpha * sum_{|j - c| <= radius} x_j^2)^beta`; the element-wise body of
/// `simd`'s variant.
///
/// # Shapes
/// - `x`: `[batch, H, W, C]`
/// - output: same
pub fn lrn(
    x: &Nhwc,
    radius: usize,
    bias: f32,
    alpha: f32,
    beta: f32,
    simd: Simd,
    pool: &Pool,
) -> Nhwc {
    let c = x.channels;
    let mut out = pool.overwrite(x.data.len());
    let params = LrnParams {
        radius,
        bias,
        alpha,
        beta,
    };
    out.par_chunks_mut(c * 64)
        .zip(x.data.par_chunks(c * 64))
        .for_each_init(
            || vec![0.0f32; 2 * (c + 2 * radius)],
            |scratch, (dst, src)| lrn_pixels(simd, src, dst, c, &params, scratch),
        );
    x.output(out, [x.height, x.width], c)
}

/// LRN parameters (TensorFlow's convention).
struct LrnParams {
    radius: usize,
    bias: f32,
    alpha: f32,
    beta: f32,
}

multiversion! {
    /// LRN of whole pixels (`c` channels each); `scratch` holds `2 * (c + 2 * radius)` values.
    fn lrn_pixels(src: &[f32], dst: &mut [f32], c: usize, p: &LrnParams, scratch: &mut [f32]) {
        let r = p.radius;
        let (squares, sums) = scratch.split_at_mut(c + 2 * r);
        let sums = &mut sums[..c];
        for (d, s) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
            // squares with r zeros on each side, then the window sum as 2r + 1 shifted adds
            for (q, v) in squares[r..r + c].iter_mut().zip(s) {
                *q = v * v;
            }
            sums.copy_from_slice(&squares[..c]);
            for j in 1..=2 * r {
                for (acc, q) in sums.iter_mut().zip(&squares[j..j + c]) {
                    *acc += q;
                }
            }
            if p.beta == 0.75 {
                for ((o, v), sum) in d.iter_mut().zip(s).zip(sums.iter()) {
                    let base = p.bias + p.alpha * sum;
                    *o = v / (base * base.sqrt()).sqrt();
                }
            } else {
                for ((o, v), sum) in d.iter_mut().zip(s).zip(sums.iter()) {
                    *o = v / (p.bias + p.alpha * sum).powf(p.beta);
                }
            }
        }
    }
}

/// Adaptive average pooling to `[oh, ow]` with PyTorch's bins
/// (`floor(i * H / oh) .. ceil((i + 1) * H / oh)`); the identity when the size already matches.
///
/// # Shapes
/// - `x`: `[batch, H, W, C]`
/// - output: `[batch, oh, ow, C]`
pub fn adaptive_avg_pool2d(x: Nhwc, [oh, ow]: [usize; 2], pool: &Pool) -> Nhwc {
    if x.height == oh && x.width == ow {
        return x;
    }
    let (h, w, c) = (x.height, x.width, x.channels);
    let mut out = pool.vec(x.batch * oh * ow * c);
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(row, dst)| {
            let (n, oy) = (row / oh, row % oh);
            let image = &x.data[n * h * w * c..(n + 1) * h * w * c];
            let (y0, y1) = (oy * h / oh, ((oy + 1) * h).div_ceil(oh));
            for (ox, px) in dst.chunks_mut(c).enumerate() {
                let (x0, x1) = (ox * w / ow, ((ox + 1) * w).div_ceil(ow));
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let src = &image[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                        for (m, &v) in px.iter_mut().zip(src) {
                            *m += v;
                        }
                    }
                }
                let scale = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
                px.iter_mut().for_each(|v| *v *= scale);
            }
        });
    let y = x.output(out, [oh, ow], c);
    pool.give(x.data);
    y
}

multiversion! {
    /// `acc[c] = max(acc[c], pixel[c])` for every pixel of `pixels` (`acc.len()` channels each).
    fn max_into(acc: &mut [f32], pixels: &[f32]) {
        for src in pixels.chunks_exact(acc.len()) {
            for (m, &v) in acc.iter_mut().zip(src) {
                *m = m.max(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104729) % 211) as f32 / 21.0 - 5.0)
            .collect()
    }

    fn map(batch: usize, h: usize, w: usize, c: usize) -> Nhwc {
        Nhwc {
            data: values(batch * h * w * c, 1),
            batch,
            height: h,
            width: w,
            channels: c,
        }
    }

    #[test]
    fn lrn_matches_the_formula_at_every_level() {
        let x = map(2, 5, 3, 37);
        for simd in Simd::supported_levels() {
            // beta 0.75 has its own branch
            for (radius, bias, alpha, beta) in [(2, 1.0, 2e-3, 0.75), (5, 2.0, 1e-4, 0.6)] {
                let y = lrn(&x, radius, bias, alpha, beta, simd, &Pool::new());
                for (p, (out, px)) in y
                    .data
                    .chunks(x.channels)
                    .zip(x.data.chunks(x.channels))
                    .enumerate()
                {
                    for c in 0..x.channels {
                        let lo = c.saturating_sub(radius);
                        let hi = (c + radius).min(x.channels - 1);
                        let sum: f64 = px[lo..=hi].iter().map(|&v| (v as f64).powi(2)).sum();
                        let want =
                            px[c] as f64 / (bias as f64 + alpha as f64 * sum).powf(beta as f64);
                        let got = out[c] as f64;
                        assert!(
                            (got - want).abs() < 1e-4 * want.abs().max(1.0),
                            "{simd} r{radius} pixel {p} channel {c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn max_pool_matches_the_naive_maximum_at_every_level() {
        let x = map(2, 9, 8, 21);
        // 3x3 stride 2 with padding on the top and left, clipped at the bottom and right
        let g = ConvGeometry {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1, 1, 1],
            output: [5, 4],
        };
        for simd in Simd::supported_levels() {
            let y = max_pool2d(&x, &g, simd, &Pool::new());
            for n in 0..2 {
                for oy in 0..5 {
                    for ox in 0..4 {
                        for c in 0..21 {
                            let mut want = f32::NEG_INFINITY;
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) =
                                        ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                                    if (0..9).contains(&iy) && (0..8).contains(&ix) {
                                        let at = ((n * 9 + iy as usize) * 8 + ix as usize) * 21 + c;
                                        want = want.max(x.data[at]);
                                    }
                                }
                            }
                            let got = y.data[((n * 5 + oy) * 4 + ox) * 21 + c];
                            assert_eq!(got, want, "{simd} ({n},{oy},{ox},{c})");
                        }
                    }
                }
            }
        }
    }
}

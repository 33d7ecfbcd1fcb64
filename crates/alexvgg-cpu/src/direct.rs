//! Direct convolution for layers where im2col costs more than it saves: AlexNet's 11x11
//! stride-4 conv1 and other layers with few input channels.
//!
//! An im2col + GEMM convolution writes the patch matrix (for conv1, 363 values per output pixel,
//! each input value copied up to 9 times), and the GEMM then packs that matrix once more before
//! multiplying it. The direct kernel reads the patches where they lie: the input is padded once
//! (so every window is inside it), and a register tile of [`PIXELS`] output pixels by
//! [`BLOCK`] output channels (12 256-bit accumulators) walks the window row by row, broadcasting
//! one input value per pixel against one row of a weight block laid out `[kdim][BLOCK]`. Bias is
//! the accumulators' start value and ReLU is applied at the store.
//!
//! The kernel needs AVX2 and FMA; [`DirectConv::available`] says whether the running CPU has
//! them (the engine keeps im2col otherwise).

use rayon::prelude::*;

use crate::kernels::{ConvGeometry, Nhwc, pack_patches};
use crate::pool::Pool;

/// Output channels per register tile (two 256-bit vectors).
pub const BLOCK: usize = 16;
/// Output pixels per register tile.
pub const PIXELS: usize = 6;
/// Output pixels per task.
const TASK_PIXELS: usize = PIXELS * 16;

/// Convolution weights in the direct kernel's layout: per group and block of [`BLOCK`] output
/// channels, a `[kh * kw * cin_g][BLOCK]` matrix whose rows follow the NHWC patch order
/// `(ky, kx, c)`; output channels past the group's last are zero.
#[derive(Clone, Debug)]
pub struct DirectConv {
    /// Input channels (all groups).
    pub in_channels: usize,
    /// Output channels (all groups).
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Channel groups.
    pub groups: usize,
    /// `[groups][blocks][kdim][BLOCK]`.
    weight: Vec<f32>,
    /// One bias per output channel.
    bias: Vec<f32>,
}

impl DirectConv {
    /// Whether the running CPU can run the direct kernel (AVX2 and FMA on x86-64).
    pub fn available() -> bool {
        cfg!(target_arch = "x86_64") && crate::simd::has_avx2_fma()
    }

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
        let packed = pack_patches(weight, [cout, cin_g, kh, kw], groups, BLOCK);
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

/// `x` with `geometry`'s padding added as zeros (bottom and right only as far as the windows
/// reach), so that every window lies inside it.
fn padded(x: &Nhwc, g: &ConvGeometry, pool: &Pool) -> Option<Nhwc> {
    let [top, left, _, _] = g.padding;
    let ph = (g.output[0] - 1) * g.stride[0] + g.kernel[0];
    let pw = (g.output[1] - 1) * g.stride[1] + g.kernel[1];
    if top == 0 && left == 0 && ph <= x.height && pw <= x.width {
        return None;
    }
    let c = x.channels;
    let rows = x.height.min(ph - top);
    let cols = x.width.min(pw - left);
    let mut out = pool.overwrite(x.batch * ph * pw * c);
    // Row by row in parallel (at batch 8 this is 5 MB for AlexNet's conv1).
    out.par_chunks_mut(pw * c).enumerate().for_each(|(r, dst)| {
        let (n, y) = (r / ph, r % ph);
        if y < top || y >= top + rows {
            dst.fill(0.0);
            return;
        }
        let src = &x.data[((n * x.height + y - top) * x.width) * c..][..cols * c];
        dst[..left * c].fill(0.0);
        dst[left * c..(left + cols) * c].copy_from_slice(src);
        dst[(left + cols) * c..].fill(0.0);
    });
    Some(x.output(out, [ph, pw], c))
}

/// Convolution with bias and optional ReLU by the direct kernel, NHWC in and out.
///
/// # Shapes
/// - `x`: `[batch, H, W, cin]`
/// - output: `[batch, OH, OW, cout]` with `OH, OW` from `geometry`
///
/// # Panics
/// When the CPU lacks AVX2/FMA (see [`DirectConv::available`]) or the channels disagree.
pub fn conv2d_direct(
    x: &Nhwc,
    w: &DirectConv,
    geometry: &ConvGeometry,
    relu: bool,
    pool: &Pool,
) -> Nhwc {
    assert!(
        DirectConv::available(),
        "direct convolution needs AVX2 and FMA"
    );
    assert_eq!(x.channels, w.in_channels, "conv input channels");
    let [oh, ow] = geometry.output;
    let pixels = x.batch * oh * ow;
    let cout = w.out_channels;
    if pixels == 0 {
        return x.output(Vec::new(), [oh, ow], cout);
    }
    let padded = padded(x, geometry, pool);
    let input = padded.as_ref().unwrap_or(x);
    let mut out = pool.overwrite(pixels * cout);
    // Equal tasks, a multiple of the thread count, so that no core idles at the end.
    let threads = rayon::current_num_threads().max(1);
    let tasks = pixels.div_ceil(TASK_PIXELS).next_multiple_of(threads);
    let task_px = pixels.div_ceil(tasks).next_multiple_of(PIXELS).max(PIXELS);
    out.par_chunks_mut(task_px * cout)
        .enumerate()
        .for_each(|(t, dst)| {
            let first = t * task_px;
            let count = dst.len() / cout;
            for g in 0..w.groups {
                task(input, w, geometry, g, first, count, relu, dst);
            }
        });
    if let Some(p) = padded {
        pool.give(p.data);
    }
    x.output(out, [oh, ow], cout)
}

/// Output pixels `first..first + count` (flat over batch, y, x) of group `g`, into `dst`
/// (`count` rows of `cout` values).
#[allow(clippy::too_many_arguments)]
fn task(
    x: &Nhwc,
    w: &DirectConv,
    geometry: &ConvGeometry,
    g: usize,
    first: usize,
    count: usize,
    relu: bool,
    dst: &mut [f32],
) {
    let [oh, ow] = geometry.output;
    let [sh, sw] = geometry.stride;
    let [kh, kw] = w.kernel;
    let (h, wd, c) = (x.height, x.width, x.channels);
    let cin_g = w.in_channels / w.groups;
    let cout_g = w.out_channels / w.groups;
    let cout = w.out_channels;
    let kdim = kh * kw * cin_g;
    let blocks = cout_g.div_ceil(BLOCK);
    // Offset of each output pixel's window corner (channel g * cin_g) in the input.
    let corner = |p: usize| {
        let (n, rem) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox) = (rem / ow, rem % ow);
        ((n * h + oy * sh) * wd + ox * sw) * c + g * cin_g
    };
    let shape = Window {
        rows: kh,
        row_stride: wd * c,
        // All channels: a window row is one contiguous run; otherwise kw runs of cin_g.
        runs: if cin_g == c { 1 } else { kw },
        run_len: if cin_g == c { kw * c } else { cin_g },
        run_stride: c,
    };
    // A weight block (kdim x 16 values: 23 KB for conv1, 221 KB for a 3x3 layer with 384 input
    // channels) stays in L2 while the task's pixels pass it.
    for b in 0..blocks {
        let weight = &w.weight[(g * blocks + b) * kdim * BLOCK..][..kdim * BLOCK];
        let channels = BLOCK.min(cout_g - b * BLOCK);
        let mut bias = [0.0f32; BLOCK];
        bias[..channels].copy_from_slice(&w.bias[g * cout_g + b * BLOCK..][..channels]);
        let mut p = 0;
        while p < count {
            let n = PIXELS.min(count - p);
            let mut offsets = [0usize; PIXELS];
            for (j, o) in offsets.iter_mut().enumerate() {
                // Missing pixels of a short tile repeat the last one; their sums are dropped.
                *o = corner(first + p + j.min(n - 1));
            }
            // SAFETY: the CPU has AVX2 and FMA (asserted by the caller); every window lies inside
            // `x` (padded by the caller) and `weight` holds `kdim` rows of BLOCK values.
            let tile = unsafe { tile_avx2(&x.data, &offsets, &shape, weight, &bias) };
            for (j, sums) in tile.iter().take(n).enumerate() {
                let row = &mut dst[(p + j) * cout + g * cout_g + b * BLOCK..][..channels];
                for (o, &v) in row.iter_mut().zip(sums) {
                    *o = if relu { v.max(0.0) } else { v };
                }
            }
            p += n;
        }
    }
}

/// `count` rows of `len` values in `data`, the first at `first`, each `stride` after the last.
pub struct Rows<'a> {
    /// Values.
    pub data: &'a [f32],
    /// Offset of the first row.
    pub first: usize,
    /// Distance between rows.
    pub stride: usize,
    /// Number of rows.
    pub count: usize,
    /// Values per row.
    pub len: usize,
}

/// `dst[r * ld + c0 + o] = sum_i rows[r][i] * blocks[o / BLOCK][i][o % BLOCK]` for
/// `o < channels`: a product whose right side is packed in blocks of [`BLOCK`] columns
/// (`[blocks][len][BLOCK]`, zeros past `channels`), by the direct convolution's register tiles.
///
/// # Panics
/// When the CPU lacks AVX2/FMA or a view does not fit its slice.
pub fn rows_times_blocks(
    rows: &Rows<'_>,
    blocks: &[f32],
    dst: &mut [f32],
    ld: usize,
    c0: usize,
    channels: usize,
) {
    assert!(
        DirectConv::available(),
        "the register-tile kernel needs AVX2 and FMA"
    );
    let n_blocks = channels.div_ceil(BLOCK);
    assert!(
        blocks.len() >= n_blocks * rows.len * BLOCK,
        "packed blocks too short"
    );
    let shape = Window {
        rows: 1,
        row_stride: 0,
        runs: 1,
        run_len: rows.len,
        run_stride: 0,
    };
    let zero = [0.0f32; BLOCK];
    for b in 0..n_blocks {
        let weight = &blocks[b * rows.len * BLOCK..][..rows.len * BLOCK];
        let width = BLOCK.min(channels - b * BLOCK);
        let mut r = 0;
        while r < rows.count {
            let n = PIXELS.min(rows.count - r);
            let offsets: [usize; PIXELS] =
                std::array::from_fn(|j| rows.first + (r + j.min(n - 1)) * rows.stride);
            // SAFETY: AVX2 and FMA are present (asserted above); `tile_avx2` checks every row
            // against `rows.data` and the block against `weight`.
            let tile = unsafe { tile_avx2(rows.data, &offsets, &shape, weight, &zero) };
            for (j, sums) in tile.iter().take(n).enumerate() {
                dst[(r + j) * ld + c0 + b * BLOCK..][..width].copy_from_slice(&sums[..width]);
            }
            r += n;
        }
    }
}

/// Where a window's values lie relative to its corner: `rows` rows `row_stride` apart, each made
/// of `runs` runs of `run_len` contiguous values `run_stride` apart.
struct Window {
    rows: usize,
    row_stride: usize,
    runs: usize,
    run_len: usize,
    run_stride: usize,
}

/// One register tile: [`PIXELS`] windows (corners at `offsets` in `x`) times a weight block,
/// plus `bias`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; each window must lie inside `x`, and `weight` must hold
/// `rows * runs * run_len` rows of [`BLOCK`] values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    x: &[f32],
    offsets: &[usize; PIXELS],
    shape: &Window,
    weight: &[f32],
    bias: &[f32; BLOCK],
) -> [[f32; BLOCK]; PIXELS] {
    use std::arch::x86_64::*;
    let span =
        (shape.rows - 1) * shape.row_stride + (shape.runs - 1) * shape.run_stride + shape.run_len;
    assert!(
        offsets.iter().all(|&o| o + span <= x.len()),
        "window outside the input"
    );
    assert!(
        weight.len() >= shape.rows * shape.runs * shape.run_len * BLOCK,
        "weight block"
    );
    // SAFETY (whole body): the asserts above bound every load below.
    unsafe {
        let b0 = _mm256_loadu_ps(bias.as_ptr());
        let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
        let mut acc = [[b0, b1]; PIXELS];
        let base = x.as_ptr();
        let mut wp = weight.as_ptr();
        for ky in 0..shape.rows {
            for run in 0..shape.runs {
                let start = ky * shape.row_stride + run * shape.run_stride;
                let ptrs: [*const f32; PIXELS] =
                    std::array::from_fn(|j| base.add(offsets[j] + start));
                for i in 0..shape.run_len {
                    let w0 = _mm256_loadu_ps(wp);
                    let w1 = _mm256_loadu_ps(wp.add(8));
                    for (a, p) in acc.iter_mut().zip(&ptrs) {
                        let v = _mm256_broadcast_ss(&*p.add(i));
                        a[0] = _mm256_fmadd_ps(v, w0, a[0]);
                        a[1] = _mm256_fmadd_ps(v, w1, a[1]);
                    }
                    wp = wp.add(BLOCK);
                }
            }
        }
        let mut out = [[0.0f32; BLOCK]; PIXELS];
        for (o, a) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), a[1]);
        }
        out
    }
}

/// Stand-in off x86-64, never called ([`DirectConv::available`] is false there).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_avx2(
    _: &[f32],
    _: &[usize; PIXELS],
    _: &Window,
    _: &[f32],
    _: &[f32; BLOCK],
) -> [[f32; BLOCK]; PIXELS] {
    unreachable!("direct convolution needs x86-64 with AVX2")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{PackedConv, conv2d};

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104729) % 211) as f32 / 105.0 - 1.0)
            .collect()
    }

    #[test]
    fn direct_matches_im2col() {
        if !DirectConv::available() {
            return;
        }
        // (batch, h, w, cin, cout, k, stride, padding [t, l, b, r], groups)
        let cases = [
            (1, 31, 29, 3, 20, 11, 4, [2, 3, 4, 1], 1),
            (2, 23, 23, 3, 64, 11, 4, [0, 0, 0, 0], 1),
            (1, 17, 19, 3, 16, 3, 1, [1, 1, 1, 1], 1),
            (1, 13, 12, 8, 24, 5, 1, [2, 2, 2, 2], 2),
            (3, 9, 10, 6, 35, 3, 2, [0, 1, 1, 0], 1),
            // windows stop short of the last input row and column
            (2, 12, 13, 3, 16, 3, 3, [1, 1, 0, 0], 1),
        ];
        for (batch, h, w, cin, cout, k, s, padding, groups) in cases {
            let oh = (h + padding[0] + padding[2] - k) / s + 1;
            let ow = (w + padding[1] + padding[3] - k) / s + 1;
            let geometry = ConvGeometry {
                kernel: [k, k],
                stride: [s, s],
                padding,
                output: [oh, ow],
            };
            let dims = [cout, cin / groups, k, k];
            let weight = values(dims.iter().product(), 1);
            let bias = values(cout, 2);
            let pool = Pool::new();
            let x = Nhwc::from_nchw(&values(batch * cin * h * w, 3), [batch, cin, h, w], &pool);
            for relu in [false, true] {
                let want = conv2d(
                    &x,
                    &PackedConv::from_oihw(&weight, dims, groups, bias.clone()),
                    &geometry,
                    relu,
                    &pool,
                );
                let got = conv2d_direct(
                    &x,
                    &DirectConv::from_oihw(&weight, dims, groups, bias.clone()),
                    &geometry,
                    relu,
                    &pool,
                );
                assert_eq!((got.height, got.width, got.channels), (oh, ow, cout));
                for (i, (a, b)) in got.data.iter().zip(&want.data).enumerate() {
                    assert!((a - b).abs() < 1e-4, "case {h}x{w} k{k}: [{i}] {a} vs {b}");
                }
            }
        }
    }
}

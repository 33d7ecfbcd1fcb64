//! Direct convolution for layers where im2col costs more than it saves: AlexNet's 11x11
//! stride-4 conv1 and other layers with few input channels.
//!
//! An im2col + GEMM convolution writes the patch matrix (for conv1, 363 values per output pixel,
//! each input value copied up to 9 times), and the GEMM then packs that matrix once more before
//! multiplying it. The direct kernel reads the patches where they lie: the input is padded once
//! (so every window is inside it), and a register tile of output pixels by [`BLOCK`] output
//! channels walks the window row by row, broadcasting one input value per pixel against one row
//! of a weight block laid out `[kdim][BLOCK]`. Bias is the accumulators' start value and ReLU is
//! applied at the store.
//!
//! The register tile has one variant per [`Simd`] level ([`tile_pixels`] pixels each): AVX2 +
//! FMA ([`PIXELS`] pixels x two 256-bit vectors, 12 accumulators), AVX-512 ([`PIXELS_512`]
//! pixels x one 512-bit vector) and portable Rust (the compiler's vectors for the baseline; the
//! engine prefers im2col + the `gemm` crate at that level).

use rayon::prelude::*;

use crate::kernels::{ConvGeometry, Nhwc, pack_patches};
use crate::pool::Pool;
use crate::simd::{Kernel, Simd};

/// Output channels per register tile (two 256-bit vectors, one 512-bit vector).
pub const BLOCK: usize = 16;
/// Output pixels per register tile of the AVX2 and portable variants.
pub const PIXELS: usize = 6;
/// Output pixels per register tile of the AVX-512 variant.
pub const PIXELS_512: usize = 8;
/// Whether the AVX-512 register tiles cover two weight blocks (32 output channels) at once.
const AVX512_PAIRS: bool = true;
/// Most output pixels per register tile of any variant.
const MAX_PIXELS: usize = if PIXELS_512 > PIXELS {
    PIXELS_512
} else {
    PIXELS
};
/// Register tiles per task.
const TASK_TILES: usize = 16;

/// Output pixels per register tile of `simd`'s variant.
pub fn tile_pixels(simd: Simd) -> usize {
    match simd {
        Simd::Avx512 => PIXELS_512,
        Simd::Avx2 | Simd::Portable => PIXELS,
    }
}

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
    /// The register tiles' variant.
    simd: Simd,
}

impl DirectConv {
    /// Whether the running CPU has a vector variant of the register tiles (AVX2 and FMA on
    /// x86-64; the portable variant runs anywhere, slower than im2col + GEMM).
    pub fn available() -> bool {
        Simd::current().vector_kernels()
    }

    /// Packs a burn/PyTorch `[cout, cin / groups, kh, kw]` weight; the register tiles are the
    /// variant [`Simd::current`] runs.
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
            simd: Simd::current().for_kernel(Kernel::Tiles),
        }
    }

    /// The same weights running the register tiles of `simd` exactly (lowered to what the CPU
    /// supports); tests and measurements use this to force a variant.
    pub fn with_simd(mut self, simd: Simd) -> Self {
        self.simd = simd.min(Simd::best());
        self
    }

    /// The register tiles' variant.
    pub fn simd(&self) -> Simd {
        self.simd
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
/// When the channels disagree.
pub fn conv2d_direct(
    x: &Nhwc,
    w: &DirectConv,
    geometry: &ConvGeometry,
    relu: bool,
    pool: &Pool,
) -> Nhwc {
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
    let tile = tile_pixels(w.simd);
    let tasks = pixels.div_ceil(tile * TASK_TILES).next_multiple_of(threads);
    let task_px = pixels.div_ceil(tasks).next_multiple_of(tile).max(tile);
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
    // channels; two of them at a time for AVX-512) stays in L2 while the task's pixels pass it.
    let block = |b: usize| &w.weight[(g * blocks + b) * kdim * BLOCK..][..kdim * BLOCK];
    let tile_px = tile_pixels(w.simd);
    let mut b = 0;
    while b < blocks {
        let nb = block_step(w.simd).min(blocks - b);
        let weights = [block(b), block(b + nb - 1)];
        let channels = (nb * BLOCK).min(cout_g - b * BLOCK);
        let mut bias = [0.0f32; 2 * BLOCK];
        bias[..channels].copy_from_slice(&w.bias[g * cout_g + b * BLOCK..][..channels]);
        let mut tile = [[0.0f32; 2 * BLOCK]; MAX_PIXELS];
        let mut p = 0;
        while p < count {
            let n = tile_px.min(count - p);
            let mut offsets = [0usize; MAX_PIXELS];
            for (j, o) in offsets.iter_mut().take(tile_px).enumerate() {
                // Missing pixels of a short tile repeat the last one; their sums are dropped.
                *o = corner(first + p + j.min(n - 1));
            }
            let live = (&offsets[..tile_px], n);
            run_tile(
                w.simd,
                &x.data,
                live,
                &shape,
                (weights, nb),
                &bias,
                &mut tile,
            );
            for (j, sums) in tile.iter().take(n).enumerate() {
                let row = &mut dst[(p + j) * cout + g * cout_g + b * BLOCK..][..channels];
                for (o, &v) in row.iter_mut().zip(sums) {
                    *o = if relu { v.max(0.0) } else { v };
                }
            }
            p += n;
        }
        b += nb;
    }
}

/// Weight blocks one register tile of `simd`'s variant covers: two for AVX-512 (32 output
/// channels, two 512-bit vectors per pixel), one otherwise.
fn block_step(simd: Simd) -> usize {
    if simd == Simd::Avx512 && AVX512_PAIRS {
        2
    } else {
        1
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
/// (`[blocks][len][BLOCK]`, zeros past `channels`), by the direct convolution's register tiles
/// of `simd`'s variant.
///
/// # Panics
/// When a view does not fit its slice.
pub fn rows_times_blocks(
    simd: Simd,
    rows: &Rows<'_>,
    blocks: &[f32],
    dst: &mut [f32],
    ld: usize,
    c0: usize,
    channels: usize,
) {
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
    let zero = [0.0f32; 2 * BLOCK];
    let simd = simd.min(Simd::best());
    let tile_px = tile_pixels(simd);
    let block = |b: usize| &blocks[b * rows.len * BLOCK..][..rows.len * BLOCK];
    let mut b = 0;
    while b < n_blocks {
        let nb = block_step(simd).min(n_blocks - b);
        let weights = [block(b), block(b + nb - 1)];
        let width = (nb * BLOCK).min(channels - b * BLOCK);
        let mut tile = [[0.0f32; 2 * BLOCK]; MAX_PIXELS];
        let mut r = 0;
        while r < rows.count {
            let n = tile_px.min(rows.count - r);
            let offsets: [usize; MAX_PIXELS] =
                std::array::from_fn(|j| rows.first + (r + j.min(n - 1)) * rows.stride);
            let live = (&offsets[..tile_px], n);
            run_tile(
                simd,
                rows.data,
                live,
                &shape,
                (weights, nb),
                &zero,
                &mut tile,
            );
            for (j, sums) in tile.iter().take(n).enumerate() {
                dst[(r + j) * ld + c0 + b * BLOCK..][..width].copy_from_slice(&sums[..width]);
            }
            r += n;
        }
        b += nb;
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

/// Register tiles' sums: per pixel, the channels of up to two blocks (the first
/// [`tile_pixels`] rows are used).
type TileSums = [[f32; 2 * BLOCK]; MAX_PIXELS];

/// One register tile of `simd`'s variant (lowered to what the CPU supports) into `out`: the
/// windows with corners at `offsets.0` (`tile_pixels(simd)` of them, the first `offsets.1`
/// needed) in `x` times `weights.1` (1 or 2) weight blocks `weights.0`, plus `bias`
/// (`weights.1 * BLOCK` values used). The AVX-512 variant computes [`PIXELS`] windows instead of [`PIXELS_512`]
/// when that covers the needed ones (short last tiles of a row: Winograd's tile rows have 7-14
/// tiles at AlexNet's sizes); the other variants take a second block as a second tile.
///
/// # Panics
/// When `offsets` does not hold `tile_pixels(simd)` corners, a window leaves `x`, or a weight
/// block is shorter than the window's `rows * runs * run_len` rows of [`BLOCK`] values.
fn run_tile(
    simd: Simd,
    x: &[f32],
    (offsets, live): (&[usize], usize),
    shape: &Window,
    (weights, nb): ([&[f32]; 2], usize),
    bias: &[f32; 2 * BLOCK],
    out: &mut TileSums,
) {
    let simd = simd.min(Simd::best());
    assert_eq!(offsets.len(), tile_pixels(simd), "register tile size");
    assert!(nb == 1 || nb == 2, "one or two weight blocks");
    let span =
        (shape.rows - 1) * shape.row_stride + (shape.runs - 1) * shape.run_stride + shape.run_len;
    assert!(
        offsets.iter().all(|&o| o + span <= x.len()),
        "window outside the input"
    );
    let rows = shape.rows * shape.runs * shape.run_len;
    assert!(
        weights.iter().all(|w| w.len() >= rows * BLOCK),
        "weight block"
    );
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 {
        // SAFETY (the three calls): the CPU has AVX-512 F, AVX2 and FMA (`simd` was lowered to
        // `Simd::best`); every window and the weight blocks were checked above.
        unsafe {
            if nb == 2 && live <= PIXELS {
                let o: &[usize; PIXELS] = offsets[..PIXELS].try_into().expect("tile size");
                tile_avx512_pair::<PIXELS>(x, o, shape, weights, bias, out);
            } else if nb == 2 {
                let o: &[usize; PIXELS_512] = offsets.try_into().expect("tile size");
                tile_avx512_pair::<PIXELS_512>(x, o, shape, weights, bias, out);
            } else if live <= PIXELS {
                let o: &[usize; PIXELS] = offsets[..PIXELS].try_into().expect("tile size");
                tile_avx512::<PIXELS>(x, o, shape, weights[0], bias, out);
            } else {
                let o: &[usize; PIXELS_512] = offsets.try_into().expect("tile size");
                tile_avx512::<PIXELS_512>(x, o, shape, weights[0], bias, out);
            }
        }
        return;
    }
    let offsets: &[usize; PIXELS] = offsets.try_into().expect("tile size");
    for (half, weight) in weights.iter().take(nb).enumerate() {
        let bias: &[f32; BLOCK] = bias[half * BLOCK..][..BLOCK].try_into().expect("bias");
        let col = half * BLOCK;
        match simd {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => {
                // SAFETY: the CPU has AVX2 and FMA (`simd` was lowered to `Simd::best`); every
                // window and the weight block were checked above.
                unsafe { tile_avx2(x, offsets, shape, weight, bias, (out, col)) };
            }
            _ => tile_portable(x, offsets, shape, weight, bias, (out, col)),
        }
    }
}

/// [`run_tile`] in plain Rust: [`PIXELS`] windows, one block, into `out`'s columns
/// `col..col + BLOCK`.
fn tile_portable(
    x: &[f32],
    offsets: &[usize; PIXELS],
    shape: &Window,
    weight: &[f32],
    bias: &[f32; BLOCK],
    (out, col): (&mut TileSums, usize),
) {
    let mut acc = [*bias; PIXELS];
    let mut rows = weight.chunks_exact(BLOCK);
    for ky in 0..shape.rows {
        for run in 0..shape.runs {
            let start = ky * shape.row_stride + run * shape.run_stride;
            for i in 0..shape.run_len {
                let w: &[f32; BLOCK] = rows
                    .next()
                    .and_then(|r| r.try_into().ok())
                    .expect("weight block");
                for (a, &o) in acc.iter_mut().zip(offsets) {
                    let v = x[o + start + i];
                    for (s, &wv) in a.iter_mut().zip(w) {
                        *s += v * wv;
                    }
                }
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        o[col..col + BLOCK].copy_from_slice(a);
    }
}

/// [`run_tile`] with AVX2 + FMA: [`PIXELS`] windows x two 256-bit vectors (one block), into
/// `out`'s columns `col..col + BLOCK`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; each window must lie inside `x`, `weight` must hold
/// `rows * runs * run_len` rows of [`BLOCK`] values, and `col + BLOCK <= 2 * BLOCK`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    x: &[f32],
    offsets: &[usize; PIXELS],
    shape: &Window,
    weight: &[f32],
    bias: &[f32; BLOCK],
    (out, col): (&mut TileSums, usize),
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller guarantees that every load below is in bounds.
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
        for (o, a) in out.iter_mut().zip(acc) {
            let o = &mut o[col..col + BLOCK];
            _mm256_storeu_ps(o.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), a[1]);
        }
    }
}

/// [`run_tile`] with AVX-512: `P` windows x one block (one 512-bit vector; `P <= MAX_PIXELS`).
///
/// # Safety
/// The CPU must support AVX-512 F, AVX2 and FMA; each window must lie inside `x`, and `weight`
/// must hold `rows * runs * run_len` rows of [`BLOCK`] values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_avx512<const P: usize>(
    x: &[f32],
    offsets: &[usize; P],
    shape: &Window,
    weight: &[f32],
    bias: &[f32; 2 * BLOCK],
    out: &mut TileSums,
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller guarantees that every load below is in bounds.
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias.as_ptr()); P];
        let base = x.as_ptr();
        let mut wp = weight.as_ptr();
        for ky in 0..shape.rows {
            for run in 0..shape.runs {
                let start = ky * shape.row_stride + run * shape.run_stride;
                let ptrs: [*const f32; P] = std::array::from_fn(|j| base.add(offsets[j] + start));
                for i in 0..shape.run_len {
                    let w = _mm512_loadu_ps(wp);
                    for (a, p) in acc.iter_mut().zip(&ptrs) {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(*p.add(i)), w, *a);
                    }
                    wp = wp.add(BLOCK);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a);
        }
    }
}

/// [`run_tile`] with AVX-512: `P` windows x two blocks (two 512-bit vectors, `2 * P`
/// accumulators; `P <= MAX_PIXELS`): each broadcast input value serves 32 output channels.
///
/// # Safety
/// The CPU must support AVX-512 F, AVX2 and FMA; each window must lie inside `x`, and both
/// weight blocks must hold `rows * runs * run_len` rows of [`BLOCK`] values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_avx512_pair<const P: usize>(
    x: &[f32],
    offsets: &[usize; P],
    shape: &Window,
    weights: [&[f32]; 2],
    bias: &[f32; 2 * BLOCK],
    out: &mut TileSums,
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller guarantees that every load below is in bounds.
    unsafe {
        let b0 = _mm512_loadu_ps(bias.as_ptr());
        let b1 = _mm512_loadu_ps(bias.as_ptr().add(BLOCK));
        let mut acc = [[b0, b1]; P];
        let base = x.as_ptr();
        let (mut w0p, mut w1p) = (weights[0].as_ptr(), weights[1].as_ptr());
        for ky in 0..shape.rows {
            for run in 0..shape.runs {
                let start = ky * shape.row_stride + run * shape.run_stride;
                let ptrs: [*const f32; P] = std::array::from_fn(|j| base.add(offsets[j] + start));
                for i in 0..shape.run_len {
                    let w0 = _mm512_loadu_ps(w0p);
                    let w1 = _mm512_loadu_ps(w1p);
                    for (a, p) in acc.iter_mut().zip(&ptrs) {
                        let v = _mm512_set1_ps(*p.add(i));
                        a[0] = _mm512_fmadd_ps(v, w0, a[0]);
                        a[1] = _mm512_fmadd_ps(v, w1, a[1]);
                    }
                    w0p = w0p.add(BLOCK);
                    w1p = w1p.add(BLOCK);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a[0]);
            _mm512_storeu_ps(o.as_mut_ptr().add(BLOCK), a[1]);
        }
    }
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
    fn direct_matches_im2col_at_every_level() {
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
            for (relu, simd) in [false, true]
                .into_iter()
                .flat_map(|r| Simd::supported_levels().into_iter().map(move |s| (r, s)))
            {
                let want = conv2d(
                    &x,
                    &PackedConv::from_oihw(&weight, dims, groups, bias.clone()),
                    &geometry,
                    relu,
                    &pool,
                );
                let direct = DirectConv::from_oihw(&weight, dims, groups, bias.clone());
                let got = conv2d_direct(&x, &direct.with_simd(simd), &geometry, relu, &pool);
                assert_eq!((got.height, got.width, got.channels), (oh, ow, cout));
                for (i, (a, b)) in got.data.iter().zip(&want.data).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-4,
                        "{simd} case {h}x{w} k{k}: [{i}] {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_times_blocks_matches_the_naive_product_at_every_level() {
        // (row count, row length, channels): short last tiles, a partial last block
        for (count, len, channels) in [
            (1, 5, 16usize),
            (13, 7, 20),
            (25, 33, 48),
            (6, 1, 3),
            (7, 9, 80),
        ] {
            let stride = len + 3;
            let data = values(2 + count * stride, 4);
            let n_blocks = channels.div_ceil(BLOCK);
            let mut blocks = values(n_blocks * len * BLOCK, 5);
            // zeros past `channels`, as the packed layouts have
            for (i, v) in blocks.iter_mut().enumerate() {
                if (i / (len * BLOCK)) * BLOCK + i % BLOCK >= channels {
                    *v = 0.0;
                }
            }
            let (ld, c0) = (channels + 4, 2);
            for simd in Simd::supported_levels() {
                let rows = Rows {
                    data: &data,
                    first: 2,
                    stride,
                    count,
                    len,
                };
                let mut dst = vec![f32::NAN; count * ld];
                rows_times_blocks(simd, &rows, &blocks, &mut dst, ld, c0, channels);
                for r in 0..count {
                    for o in 0..channels {
                        let want: f32 = (0..len)
                            .map(|i| {
                                data[2 + r * stride + i]
                                    * blocks[((o / BLOCK) * len + i) * BLOCK + o % BLOCK]
                            })
                            .sum();
                        let got = dst[r * ld + c0 + o];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{simd} [{r},{o}] {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

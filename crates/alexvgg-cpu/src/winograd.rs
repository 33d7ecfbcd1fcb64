//! Stride-1 convolution by Winograd's minimal filtering (Lavin & Gray, 2015): F(4x4, 3x3) for
//! 3x3 kernels and F(2x2, 5x5) for 5x5 kernels, both on 6x6 input tiles with the interpolation
//! points 0, 1, -1, 2, -2, ∞ (so both share the input transform `Bᵀ`).
//!
//! Each 4x4 (or 2x2) block of outputs is computed from a 6x6 input tile: the tile is transformed
//! (`Bᵀ d B`), multiplied element-wise by the transformed filter (`G g Gᵀ`, computed once when
//! the engine is built), and transformed back (`Aᵀ m A`). Summed over input channels, the
//! element-wise products become 36 independent GEMMs of `[tiles, cin] x [cin, cout]`: 36
//! multiplications per 16 outputs instead of 144 for 3x3 (a 4x cut in the GEMM work), per 4
//! outputs instead of 100 for 5x5 (2.8x), paid for by the transforms (linear in the channel
//! count) and 4x (1.4x) the filter memory.
//!
//! Layers whose transformed filters are small (at most 2 MB: AlexNet's conv2, VGG's conv1_2 and
//! conv2_1) run one tile row per task: the row's transformed input and products stay in the
//! core's own cache through the three steps, and the products come from the direct convolution's
//! register tiles (AlexNet's conv2 at batch 1: 1.9-2.3 ms -> 1.5-1.9 ms; batch 8 unchanged).
//! Larger layers would re-read their filters for every row, so they process tiles in blocks of
//! whole tile rows sized for the last-level cache: within a block the input transform runs in
//! parallel over tiles, the 36 GEMMs in parallel over the transform index, the output
//! transform in parallel over tile rows (bias and ReLU fused).

use rayon::prelude::*;

use crate::direct::{BLOCK, Rows, rows_times_blocks};
use crate::gemm::{MatRef, sgemm_serial};
use crate::kernels::{ConvGeometry, Nhwc};
use crate::multiversion;
use crate::pool::Pool;
use crate::simd::{Kernel, Simd};

/// Largest input tile side.
const T_MAX: usize = 6;
/// Largest output tile side.
const M_MAX: usize = 4;

/// Which minimal filtering algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// F(4x4, 3x3): 6x6 input tiles, 36 products per 16 outputs (4x fewer than direct).
    F4x3,
    /// F(2x2, 5x5): 6x6 input tiles, 36 products per 4 outputs (2.8x fewer).
    F2x5,
    /// F(2x2, 3x3): 4x4 input tiles, 16 products per 4 outputs (2.25x fewer); more tiles for
    /// small feature maps, and 1.8x (not 4x) the filter memory.
    F2x3,
}

impl Variant {
    /// Input tile side.
    pub fn input(self) -> usize {
        match self {
            Variant::F4x3 | Variant::F2x5 => 6,
            Variant::F2x3 => 4,
        }
    }

    /// Outputs per tile side.
    pub fn tile(self) -> usize {
        match self {
            Variant::F4x3 => 4,
            Variant::F2x5 | Variant::F2x3 => 2,
        }
    }

    /// Kernel side.
    pub fn kernel(self) -> usize {
        match self {
            Variant::F4x3 | Variant::F2x3 => 3,
            Variant::F2x5 => 5,
        }
    }
}

/// Bytes of transformed input and products that one block of tiles may use.
const BLOCK_BYTES: usize = 8 << 20;

/// Largest transformed filter (bytes) run tile row by tile row ([`Layout::Fused`]) on the AVX2
/// register tiles: each task reads all of it (at 8 MB AlexNet's 13x13 layers were measured
/// 30-60% slower fused).
const FUSED_MAX_BYTES: usize = 2 << 20;

/// The same for the AVX-512 register tiles on inputs with many tiles, which were measured
/// fastest fused up to VGG16's conv3_1 (4.7 MB; 15-25% ahead of the blocked layouts at batch 8).
const FUSED_MAX_BYTES_AVX512: usize = 5 << 20;

/// A 3x3 convolution's filters in the Winograd domain.
#[derive(Clone, Debug)]
pub struct WinogradConv {
    /// Input channels (all groups).
    pub in_channels: usize,
    /// Output channels (all groups).
    pub out_channels: usize,
    /// Channel groups.
    pub groups: usize,
    /// The algorithm.
    pub variant: Variant,
    /// Kernel side (3 or 5).
    pub kernel: usize,
    /// Outputs per tile side.
    pub tile: usize,
    /// `G g Gᵀ`, laid out `[t * t][groups][blocks][cin_g][width]` (`t` the input tile side):
    /// blocks of [`BLOCK`] output channels for the register-tile kernel (zeros past the group's
    /// last channel) in the blocked layouts, one block of `cout_g` (the row-major
    /// `[cin_g][cout_g]` matrices of the GEMM) in [`Layout::Gemm`].
    pub transformed: Vec<f32>,
    /// Output channels per block of `transformed`.
    pub width: usize,
    /// How the layer runs.
    pub layout: Layout,
    /// One bias per output channel.
    pub bias: Vec<f32>,
    /// The register tiles' variant (blocked layouts).
    pub tiles: Simd,
    /// The input and output transforms' variant.
    pub transforms: Simd,
}

impl WinogradConv {
    /// The same filters running the register tiles and transforms of `simd` exactly (lowered to
    /// what the CPU supports); tests and measurements use this to force a variant.
    pub fn with_simd(mut self, simd: Simd) -> Self {
        let simd = simd.min(Simd::best());
        self.tiles = simd;
        self.transforms = simd;
        self
    }

    /// Products of transform index `k` and group `g` by the register tiles (a blocked layout):
    /// `m[t * ld + g * cout_g + o] = sum_c v[(t * 36 + k) * cin + g * cin_g + c] * u[k][g][c][o]`
    /// for `tiles` tiles (`v` is `[tiles][t * t][cin]`).
    fn block_products(
        &self,
        [k, g]: [usize; 2],
        v: &[f32],
        tiles: usize,
        m: &mut [f32],
        ld: usize,
    ) {
        let kk = self.variant.input() * self.variant.input();
        let cin_g = self.in_channels / self.groups;
        let cout_g = self.out_channels / self.groups;
        let blocks = cout_g.div_ceil(BLOCK);
        let at = (k * self.groups + g) * blocks * cin_g * BLOCK;
        let rows = Rows {
            data: v,
            first: k * self.in_channels + g * cin_g,
            stride: kk * self.in_channels,
            count: tiles,
            len: cin_g,
        };
        let u = &self.transformed[at..at + blocks * cin_g * BLOCK];
        rows_times_blocks(self.tiles, &rows, u, m, ld, g * cout_g, cout_g);
    }
}

/// How a Winograd layer's products are computed, and the filter layout that goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Blocks of tile rows sized for the last-level cache; the 36 products by the `gemm`
    /// crate over row-major `[cin_g][cout_g]` filters.
    Gemm,
    /// Blocks of tile rows as [`Gemm`](Self::Gemm); the products by the direct convolution's
    /// register tiles over filters in blocks of 16 output channels (measured 15-20% faster than
    /// the `gemm` crate for the few-tile products of 13x13 maps, where its packing dominates).
    Blocks,
    /// One tile row per task, transformed input and products kept in the core's cache;
    /// register tiles over blocked filters. For small filters (each task reads all of them).
    Fused,
}

impl WinogradConv {
    /// Transforms a burn/PyTorch `[cout, cin / groups, k, k]` weight (in f64, rounded once),
    /// in the layout [`default_layout`](Self::default_layout) picks for the register tiles of
    /// [`Simd::current`].
    ///
    /// # Panics
    /// When the kernel does not match `variant` or the sizes disagree.
    pub fn from_oihw(
        weight: &[f32],
        dims: [usize; 4],
        groups: usize,
        bias: Vec<f32>,
        variant: Variant,
    ) -> Self {
        let tiles = Simd::current().for_kernel(Kernel::Tiles);
        let layout = Self::default_layout(dims, variant, tiles, false);
        Self::with_layout(weight, dims, groups, bias, variant, layout)
    }

    /// The layout for a `[cout, cin_g, k, k]` weight whose products run the register tiles of
    /// level `tiles`, on inputs with `few_tiles` (AlexNet's 13x13 maps at batch 1) or not:
    /// [`Layout::Fused`] where the transformed filter is small (at most 2 MB; 5 MB for the
    /// AVX-512 tiles on inputs with many tiles); beyond that [`Layout::Blocks`] for the AVX-512
    /// tiles and on inputs with few tiles (where the `gemm` crate's packing dominates), the
    /// `gemm` crate ([`Layout::Gemm`]) else; the `gemm` crate at the portable level, whose
    /// tiles are the compiler's. Measured with `alexvgg tune` (AMD EPYC, Zen 4 class;
    /// `docs/cpu-engine.md`).
    pub fn default_layout(
        dims: [usize; 4],
        variant: Variant,
        tiles: Simd,
        few_tiles: bool,
    ) -> Layout {
        let bytes = Self::transformed_bytes(dims, variant);
        let fused_max = if tiles == Simd::Avx512 && !few_tiles {
            FUSED_MAX_BYTES_AVX512
        } else {
            FUSED_MAX_BYTES
        };
        match tiles {
            Simd::Portable => Layout::Gemm,
            _ if bytes <= fused_max => Layout::Fused,
            Simd::Avx512 => Layout::Blocks,
            _ if few_tiles => Layout::Blocks,
            _ => Layout::Gemm,
        }
    }

    /// Bytes of a `[cout, cin_g, k, k]` weight's filters in the Winograd domain of `variant`.
    pub fn transformed_bytes(dims: [usize; 4], variant: Variant) -> usize {
        variant.input() * variant.input() * dims[0] * dims[1] * 4
    }

    /// [`from_oihw`](Self::from_oihw) with the layout chosen by the caller (the register tiles
    /// and transforms of [`Simd::current`]).
    ///
    /// # Panics
    /// As [`from_oihw`](Self::from_oihw).
    pub fn with_layout(
        weight: &[f32],
        [cout, cin_g, kh, kw]: [usize; 4],
        groups: usize,
        bias: Vec<f32>,
        variant: Variant,
        layout: Layout,
    ) -> Self {
        let side = variant.kernel();
        assert_eq!(
            [kh, kw],
            [side, side],
            "{variant:?} needs a {side}x{side} kernel"
        );
        let kk = variant.input() * variant.input();
        assert_eq!(weight.len(), cout * cin_g * side * side, "conv weight size");
        assert_eq!(bias.len(), cout, "conv bias size");
        let cout_g = cout / groups;
        let width = if layout == Layout::Gemm {
            cout_g
        } else {
            BLOCK
        };
        let blocks = cout_g.div_ceil(width);
        let region = cin_g * width;
        let mut transformed = vec![0.0f32; kk * groups * blocks * region];
        // Tasks own a range of input channels of one block (g, b); each owns its part of each of
        // the 36 matrices, written with the output channel innermost (sequentially).
        let per_task = cin_g
            .div_ceil((4 * rayon::current_num_threads()).div_ceil(groups * blocks))
            .max(1);
        let c_tasks = cin_g.div_ceil(per_task);
        let mut parts: Vec<Vec<&mut [f32]>> = (0..groups * blocks * c_tasks)
            .map(|_| Vec::with_capacity(kk))
            .collect();
        for matrix in transformed.chunks_mut(groups * blocks * region) {
            for (gb, block) in matrix.chunks_mut(region).enumerate() {
                for (ct, part) in block.chunks_mut(per_task * width).enumerate() {
                    parts[gb * c_tasks + ct].push(part);
                }
            }
        }
        parts.into_par_iter().enumerate().for_each(|(t, mut outs)| {
            let (gb, ct) = (t / c_tasks, t % c_tasks);
            let (g, b) = (gb / blocks, gb % blocks);
            for c in ct * per_task..((ct + 1) * per_task).min(cin_g) {
                let local = (c - ct * per_task) * width;
                for o in 0..width.min(cout_g - b * width) {
                    let oc = g * cout_g + b * width + o;
                    let at = (oc * cin_g + c) * side * side;
                    let u = transform_filter(&weight[at..at + side * side], variant);
                    for (out, &v) in outs.iter_mut().zip(&u) {
                        out[local + o] = v as f32;
                    }
                }
            }
        });
        Self {
            in_channels: cin_g * groups,
            out_channels: cout,
            groups,
            variant,
            kernel: side,
            tile: variant.tile(),
            transformed,
            width,
            layout,
            bias,
            tiles: Simd::current().for_kernel(Kernel::Tiles),
            transforms: Simd::current().for_kernel(Kernel::Elementwise),
        }
    }
}

/// `G g` along one axis: six values from three (f64).
#[inline(always)]
fn g3(a: f64, b: f64, c: f64) -> [f64; 6] {
    [
        a / 4.0,
        -(a + b + c) / 6.0,
        -(a - b + c) / 6.0,
        a / 24.0 + b / 12.0 + c / 6.0,
        a / 24.0 - b / 12.0 + c / 6.0,
        c,
    ]
}

/// `G g` along one axis for F(2x2, 5x5): six values from five (f64).
#[inline(always)]
fn g5(v: [f64; 5]) -> [f64; 6] {
    let [a, b, c, d, e] = v;
    [
        a / 4.0,
        -(a + b + c + d + e) / 6.0,
        -(a - b + c - d + e) / 6.0,
        (a + 2.0 * b + 4.0 * c + 8.0 * d + 16.0 * e) / 24.0,
        (a - 2.0 * b + 4.0 * c - 8.0 * d + 16.0 * e) / 24.0,
        e,
    ]
}

/// `G g` along one axis: `t` values (the first of six) from the kernel's `r` (the first of five).
#[inline(always)]
fn g_axis(v: &[f64; 5], variant: Variant) -> [f64; T_MAX] {
    let [a, b, c, d, e] = *v;
    match variant {
        Variant::F4x3 => g3(a, b, c),
        Variant::F2x5 => g5([a, b, c, d, e]),
        Variant::F2x3 => [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c, 0.0, 0.0],
    }
}

/// `G g Gᵀ` of one filter (row-major), as `t * t` values in row-major order (the first of 36).
fn transform_filter(w: &[f32], variant: Variant) -> [f64; T_MAX * T_MAX] {
    let (r, t) = (variant.kernel(), variant.input());
    // columns first: cols[x][i] = (G g)[i][x]
    let mut cols = [[0.0f64; T_MAX]; 5];
    for (x, col) in cols.iter_mut().enumerate().take(r) {
        let mut v = [0.0f64; 5];
        for (y, slot) in v.iter_mut().enumerate().take(r) {
            *slot = w[y * r + x] as f64;
        }
        *col = g_axis(&v, variant);
    }
    let mut out = [0.0; T_MAX * T_MAX];
    for i in 0..t {
        let mut v = [0.0f64; 5];
        for (x, slot) in v.iter_mut().enumerate().take(r) {
            *slot = cols[x][i];
        }
        out[i * t..(i + 1) * t].copy_from_slice(&g_axis(&v, variant)[..t]);
    }
    out
}

/// Whether `geometry` is one the Winograd kernels compute (3x3 or 5x5 kernel, stride 1).
pub fn supports(geometry: &ConvGeometry) -> bool {
    (geometry.kernel == [3, 3] || geometry.kernel == [5, 5]) && geometry.stride == [1, 1]
}

/// 3x3 or 5x5 stride-1 convolution with bias and optional ReLU.
///
/// # Shapes
/// - `x`: `[batch, H, W, cin]`
/// - output: `[batch, OH, OW, cout]` with `OH, OW` from `geometry`
pub fn conv2d_winograd(
    x: &Nhwc,
    w: &WinogradConv,
    geometry: &ConvGeometry,
    relu: bool,
    pool: &Pool,
) -> Nhwc {
    assert!(
        supports(geometry) && geometry.kernel[0] == w.kernel,
        "Winograd needs the weights' kernel with stride 1"
    );
    assert_eq!(x.channels, w.in_channels, "conv input channels");
    if w.layout == Layout::Fused {
        return conv2d_fused(x, w, geometry, relu, pool);
    }
    let mt = w.tile;
    let side_in = w.variant.input();
    let kk = side_in * side_in;
    let [oh, ow] = geometry.output;
    let (th, tw) = (oh.div_ceil(mt), ow.div_ceil(mt));
    let (cin, cout) = (w.in_channels, w.out_channels);
    let (cin_g, cout_g) = (cin / w.groups, cout / w.groups);
    let tile_rows = x.batch * th;
    let per_tile = kk * (cin + cout) * 4;
    let rows_per_block = (BLOCK_BYTES / (per_tile * tw).max(1)).clamp(1, tile_rows.max(1));
    let block_tiles = rows_per_block * tw;
    let mut out = pool.overwrite(x.batch * oh * ow * cout);
    let mut v = pool.scratch(block_tiles * kk * cin);
    let mut m = pool.scratch(kk * block_tiles * cout);
    // Output rows of each tile row: a tile row (n, ty) covers rows ty*4 .. min(ty*4 + 4, oh).
    let mut chunks = tile_row_outputs(&mut out, tile_rows, [th, mt, oh], ow * cout).into_iter();
    for r0 in (0..tile_rows).step_by(rows_per_block) {
        let nrows = rows_per_block.min(tile_rows - r0);
        let nt = nrows * tw;
        let first_tile = r0 * tw;
        // 1. input transform, tile by tile: v[t][k][c]
        v[..nt * kk * cin]
            .par_chunks_mut(kk * cin)
            .enumerate()
            .for_each_init(
                || pool.scratch(2 * kk * cin),
                |scratch, (t, vt)| {
                    let tile = first_tile + t;
                    let (n, ty, tx) = (tile / (th * tw), (tile / tw) % th, tile % tw);
                    gather_tile(
                        x,
                        geometry,
                        [n, ty, tx],
                        [mt, side_in],
                        &mut scratch[..kk * cin],
                    );
                    input_transform(w.transforms, scratch, vt, cin, side_in);
                },
            );
        // 2. 36 GEMMs: m[k][t][o] = sum_c v[t][k][c] * u[k][c][o]
        let v_ref: &[f32] = &v;
        m[..kk * nt * cout]
            .par_chunks_mut(nt * cout)
            .enumerate()
            .for_each(|(k, mk)| {
                for g in 0..w.groups {
                    if w.layout == Layout::Gemm {
                        let a = MatRef::new(v_ref, k * cin + g * cin_g, kk * cin);
                        let u_off = (k * w.groups + g) * cin_g * cout_g;
                        let b = MatRef::new(&w.transformed, u_off, cout_g);
                        sgemm_serial(nt, cout_g, cin_g, a, b, &mut mk[g * cout_g..], cout);
                    } else {
                        w.block_products([k, g], v_ref, nt, mk, cout);
                    }
                }
            });
        // 3. output transform with bias and ReLU, one tile row per task
        let m_ref: &[f32] = &m;
        let targets: Vec<&mut [f32]> = chunks.by_ref().take(nrows).collect();
        targets.into_par_iter().enumerate().for_each_init(
            || pool.scratch(kk * cout + T_MAX * M_MAX * cout),
            |scratch, (row, dst)| {
                let rows = dst.len() / (ow * cout);
                for tx in 0..tw {
                    let t = row * tw + tx;
                    let (gathered, rest) = scratch.split_at_mut(kk * cout);
                    for k in 0..kk {
                        let src = &m_ref[(k * nt + t) * cout..(k * nt + t + 1) * cout];
                        gathered[k * cout..(k + 1) * cout].copy_from_slice(src);
                    }
                    let place = OutputPlace::new(w, ow, rows, tx);
                    let simd = w.transforms;
                    output_transform(simd, gathered, rest, dst, place, &w.bias, relu);
                }
            },
        );
    }
    x.output(out, [oh, ow], cout)
}

/// [`conv2d_winograd`] one tile row per task: the row's transformed input (`[tw][36][cin]`) and
/// products (`[tw][36][cout]`) stay in the core's own cache between the three steps, and the
/// products of a tile are already contiguous for the output transform. The products come from
/// the direct convolution's register tiles over the blocked filters.
fn conv2d_fused(
    x: &Nhwc,
    w: &WinogradConv,
    geometry: &ConvGeometry,
    relu: bool,
    pool: &Pool,
) -> Nhwc {
    let mt = w.tile;
    let side_in = w.variant.input();
    let kk = side_in * side_in;
    let [oh, ow] = geometry.output;
    let (th, tw) = (oh.div_ceil(mt), ow.div_ceil(mt));
    let (cin, cout) = (w.in_channels, w.out_channels);
    let mut out = pool.overwrite(x.batch * oh * ow * cout);
    // Output rows of each tile row: a tile row (n, ty) covers rows ty*mt .. min(ty*mt + mt, oh).
    let targets = tile_row_outputs(&mut out, x.batch * th, [th, mt, oh], ow * cout);
    let (v_len, m_len) = (tw * kk * cin, tw * kk * cout);
    let tmp_len = 2 * kk * cin + T_MAX * M_MAX * cout;
    targets.into_par_iter().enumerate().for_each_init(
        || pool.scratch(v_len + m_len + tmp_len),
        |scratch, (r, dst)| {
            let (n, ty) = (r / th, r % th);
            let (v, rest) = scratch.split_at_mut(v_len);
            let (m, tmp) = rest.split_at_mut(m_len);
            // 1. input transform of the row's tiles: v[t][k][c]
            for (tx, vt) in v.chunks_exact_mut(kk * cin).enumerate() {
                gather_tile(
                    x,
                    geometry,
                    [n, ty, tx],
                    [mt, side_in],
                    &mut tmp[..kk * cin],
                );
                // the second half of `tmp[..2 * kk * cin]` is the transform's own scratch
                input_transform(w.transforms, &mut tmp[..2 * kk * cin], vt, cin, side_in);
            }
            // 2. products m[t][k][o] = sum_c v[t][k][c] * u[k][c][o]
            for k in 0..kk {
                for g in 0..w.groups {
                    w.block_products([k, g], v, tw, &mut m[k * cout..], kk * cout);
                }
            }
            // 3. output transform with bias and ReLU
            let rows = dst.len() / (ow * cout);
            for (tx, mt_values) in m.chunks_exact_mut(kk * cout).enumerate() {
                let place = OutputPlace::new(w, ow, rows, tx);
                output_transform(w.transforms, mt_values, tmp, dst, place, &w.bias, relu);
            }
        },
    );
    x.output(out, [oh, ow], cout)
}

/// The output rows of each tile row, in order: tile row `r` (image `r / th`, tile row `r % th`
/// of tiles `mt` high) covers `min(mt, oh - (r % th) * mt)` rows of `row_len` values.
fn tile_row_outputs(
    out: &mut [f32],
    tile_rows: usize,
    [th, mt, oh]: [usize; 3],
    row_len: usize,
) -> Vec<&mut [f32]> {
    let mut rest = out;
    let mut chunks = Vec::with_capacity(tile_rows);
    for r in 0..tile_rows {
        let rows = mt.min(oh - (r % th) * mt);
        let (head, tail) = rest.split_at_mut(rows * row_len);
        chunks.push(head);
        rest = tail;
    }
    chunks
}

/// Copies the 6x6 input tile of output tile `(n, ty, tx)` (tiles of `mt` outputs) into `d`
/// (`[36][cin]`), zeros outside.
fn gather_tile(
    x: &Nhwc,
    g: &ConvGeometry,
    [n, ty, tx]: [usize; 3],
    [mt, t]: [usize; 2],
    d: &mut [f32],
) {
    let (h, w, c) = (x.height, x.width, x.channels);
    let [top, left, _, _] = g.padding;
    let image = &x.data[n * h * w * c..(n + 1) * h * w * c];
    for i in 0..t {
        let iy = (ty * mt + i) as isize - top as isize;
        let row = &mut d[i * t * c..(i + 1) * t * c];
        if iy < 0 || iy >= h as isize {
            row.fill(0.0);
            continue;
        }
        let x0 = (tx * mt) as isize - left as isize;
        let base = iy as usize * w;
        if x0 >= 0 && x0 as usize + t <= w {
            let start = (base + x0 as usize) * c;
            row.copy_from_slice(&image[start..start + t * c]);
            continue;
        }
        for j in 0..t {
            let ix = x0 + j as isize;
            let cell = &mut row[j * c..(j + 1) * c];
            if ix < 0 || ix >= w as isize {
                cell.fill(0.0);
            } else {
                let start = (base + ix as usize) * c;
                cell.copy_from_slice(&image[start..start + c]);
            }
        }
    }
}

/// The `N` source rows of a transform pass (`n` values each, row `i` at `at(i)`).
#[inline(always)]
fn rows<const N: usize>(src: &[f32], at: impl Fn(usize) -> usize, n: usize) -> [&[f32]; N] {
    std::array::from_fn(|i| &src[at(i)..at(i) + n])
}

/// The `N` destination offsets of a transform pass, checked to leave room for `n` values.
#[inline(always)]
fn offsets<const N: usize>(dst: &[f32], at: impl Fn(usize) -> usize, n: usize) -> [usize; N] {
    let o: [usize; N] = std::array::from_fn(at);
    assert!(
        o.iter().all(|&v| v + n <= dst.len()),
        "transform rows overrun"
    );
    o
}

/// `out[r] = Bᵀ · in` for six input rows and six output rows of `n` values each (row `i` of a
/// side at `in_at(i)`, written at `out_at(i)`).
#[inline(always)]
fn bt6(
    src: &[f32],
    src_at: impl Fn(usize) -> usize,
    dst: &mut [f32],
    dst_at: impl Fn(usize) -> usize,
    n: usize,
) {
    let d: [&[f32]; 6] = rows(src, src_at, n);
    let o: [usize; 6] = offsets(dst, dst_at, n);
    for c in 0..n {
        let (d0, d1, d2, d3, d4, d5) = (d[0][c], d[1][c], d[2][c], d[3][c], d[4][c], d[5][c]);
        dst[o[0] + c] = 4.0 * d0 - 5.0 * d2 + d4;
        dst[o[1] + c] = -4.0 * (d1 + d2) + d3 + d4;
        dst[o[2] + c] = 4.0 * (d1 - d2) - d3 + d4;
        dst[o[3] + c] = 2.0 * (d3 - d1) - d2 + d4;
        dst[o[4] + c] = 2.0 * (d1 - d3) - d2 + d4;
        dst[o[5] + c] = 4.0 * d1 - 5.0 * d3 + d5;
    }
}

/// `out[r] = Bᵀ · in` of F(2x2, 3x3) for four input and four output rows of `n` values each.
#[inline(always)]
fn bt4(
    src: &[f32],
    src_at: impl Fn(usize) -> usize,
    dst: &mut [f32],
    dst_at: impl Fn(usize) -> usize,
    n: usize,
) {
    let d: [&[f32]; 4] = rows(src, src_at, n);
    let o: [usize; 4] = offsets(dst, dst_at, n);
    for c in 0..n {
        let (d0, d1, d2, d3) = (d[0][c], d[1][c], d[2][c], d[3][c]);
        dst[o[0] + c] = d0 - d2;
        dst[o[1] + c] = d1 + d2;
        dst[o[2] + c] = d2 - d1;
        dst[o[3] + c] = d1 - d3;
    }
}

/// `out[r] = Aᵀ · in` of F(2x2, 3x3): four input rows, two output rows of `n` values each.
#[inline(always)]
fn at2_4(
    src: &[f32],
    src_at: impl Fn(usize) -> usize,
    dst: &mut [f32],
    dst_at: impl Fn(usize) -> usize,
    n: usize,
) {
    let m: [&[f32]; 4] = rows(src, src_at, n);
    let o: [usize; 2] = offsets(dst, dst_at, n);
    for c in 0..n {
        let (m0, m1, m2, m3) = (m[0][c], m[1][c], m[2][c], m[3][c]);
        dst[o[0] + c] = m0 + m1 + m2;
        dst[o[1] + c] = m1 - m2 - m3;
    }
}

multiversion! {
    /// `Bᵀ d B` for one tile: `scratch[..36 * c]` holds `d` (`[6][6][c]`); the result goes to
    /// `v` (`[36][c]`); the rest of `scratch` is workspace.
    fn input_transform(scratch: &mut [f32], v: &mut [f32], c: usize, t: usize) {
        let (d, tmp) = scratch.split_at_mut(t * t * c);
        // columns: tmp[i][j] = sum_a Bt[i][a] d[a][j]; then rows: v[i][j] = sum_b tmp[i][b] Bt[j][b]
        if t == 6 {
            for j in 0..6 {
                bt6(d, |a| (a * 6 + j) * c, tmp, |i| (i * 6 + j) * c, c);
            }
            for i in 0..6 {
                bt6(tmp, |b| (i * 6 + b) * c, v, |j| (i * 6 + j) * c, c);
            }
        } else {
            for j in 0..4 {
                bt4(d, |a| (a * 4 + j) * c, tmp, |i| (i * 4 + j) * c, c);
            }
            for i in 0..4 {
                bt4(tmp, |b| (i * 4 + b) * c, v, |j| (i * 4 + j) * c, c);
            }
        }
    }
}

/// Where one tile's outputs go.
struct OutputPlace {
    channels: usize,
    row_len: usize,
    x0: usize,
    rows: usize,
    cols: usize,
    tile: usize,
    input: usize,
}

impl OutputPlace {
    /// Tile `tx` of a tile row covering `rows` output rows of a map `ow` wide.
    fn new(w: &WinogradConv, ow: usize, rows: usize, tx: usize) -> Self {
        OutputPlace {
            channels: w.out_channels,
            row_len: ow * w.out_channels,
            x0: tx * w.tile,
            tile: w.tile,
            input: w.variant.input(),
            rows,
            cols: w.tile.min(ow - tx * w.tile),
        }
    }
}

/// `out[r] = Aᵀ · in` for six input rows and four output rows of `n` values each.
#[inline(always)]
fn at4(
    src: &[f32],
    src_at: impl Fn(usize) -> usize,
    dst: &mut [f32],
    dst_at: impl Fn(usize) -> usize,
    n: usize,
) {
    let m: [&[f32]; 6] = rows(src, src_at, n);
    let o: [usize; 4] = offsets(dst, dst_at, n);
    for c in 0..n {
        let (m0, m1, m2, m3, m4, m5) = (m[0][c], m[1][c], m[2][c], m[3][c], m[4][c], m[5][c]);
        let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        dst[o[0] + c] = m0 + s12 + s34;
        dst[o[1] + c] = d12 + 2.0 * d34;
        dst[o[2] + c] = s12 + 4.0 * s34;
        dst[o[3] + c] = d12 + 8.0 * d34 + m5;
    }
}

/// `out[r] = Aᵀ · in` of F(2x2, 5x5): six input rows, two output rows of `n` values each.
#[inline(always)]
fn at2(
    src: &[f32],
    src_at: impl Fn(usize) -> usize,
    dst: &mut [f32],
    dst_at: impl Fn(usize) -> usize,
    n: usize,
) {
    let m: [&[f32]; 6] = rows(src, src_at, n);
    let o: [usize; 2] = offsets(dst, dst_at, n);
    for c in 0..n {
        let (m0, m1, m2, m3, m4, m5) = (m[0][c], m[1][c], m[2][c], m[3][c], m[4][c], m[5][c]);
        dst[o[0] + c] = m0 + m1 + m2 + m3 + m4;
        dst[o[1] + c] = m1 - m2 + 2.0 * (m3 - m4) + m5;
    }
}

multiversion! {
    /// `Aᵀ m A` for one tile (`m`: `[36][cout]`), plus bias and optional ReLU, written to the
    /// tile's place in `dst` (the output rows of its tile row); `tmp` is `[6][4][cout]` workspace.
    fn output_transform(m: &mut [f32], tmp: &mut [f32], dst: &mut [f32], place: OutputPlace, bias: &[f32], relu: bool) {
        let (c, mt, t) = (place.channels, place.tile, place.input);
        // columns: tmp[i][j] (i < mt) = sum_a At[i][a] m[a][j]
        for j in 0..t {
            match (t, mt) {
                (6, 4) => at4(m, |a| (a * t + j) * c, tmp, |i| (i * t + j) * c, c),
                (6, _) => at2(m, |a| (a * t + j) * c, tmp, |i| (i * t + j) * c, c),
                _ => at2_4(m, |a| (a * t + j) * c, tmp, |i| (i * t + j) * c, c),
            }
        }
        // rows: y[i][jj] = sum_b tmp[i][b] At[jj][b], into m's first rows as scratch
        for i in 0..mt {
            match (t, mt) {
                (6, 4) => at4(tmp, |b| (i * t + b) * c, m, |jj| (i * mt + jj) * c, c),
                (6, _) => at2(tmp, |b| (i * t + b) * c, m, |jj| (i * mt + jj) * c, c),
                _ => at2_4(tmp, |b| (i * t + b) * c, m, |jj| (i * mt + jj) * c, c),
            }
        }
        for i in 0..place.rows {
            for jj in 0..place.cols {
                let src = &m[(i * mt + jj) * c..(i * mt + jj + 1) * c];
                let at = i * place.row_len + (place.x0 + jj) * c;
                let out = &mut dst[at..at + c];
                if relu {
                    for ((o, s), b) in out.iter_mut().zip(src).zip(bias) {
                        *o = (s + b).max(0.0);
                    }
                } else {
                    for ((o, s), b) in out.iter_mut().zip(src).zip(bias) {
                        *o = s + b;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{PackedConv, conv2d};

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn winograd_matches_im2col_on_odd_sizes_padding_and_groups() {
        for (batch, h, w, cin, cout, groups, pad, r) in [
            (1, 13, 13, 8, 12, 2, [1, 1, 1, 1], 3),
            (2, 9, 7, 5, 3, 1, [0, 0, 0, 0], 3),
            (1, 10, 11, 4, 4, 1, [0, 1, 2, 0], 3),
            (3, 4, 4, 16, 32, 4, [1, 1, 1, 1], 3),
            (1, 27, 27, 8, 12, 2, [2, 2, 2, 2], 5),
            (2, 9, 8, 5, 3, 1, [0, 0, 0, 0], 5),
            (1, 10, 11, 4, 6, 1, [1, 2, 3, 0], 5),
            // more than one block of 16 output channels, the last one partial
            (2, 11, 12, 24, 40, 1, [1, 1, 1, 1], 3),
            (1, 14, 13, 20, 36, 2, [2, 2, 2, 2], 5),
        ] {
            let x = Nhwc {
                data: values(batch * h * w * cin, 1),
                batch,
                height: h,
                width: w,
                channels: cin,
            };
            let dims = [cout, cin / groups, r, r];
            let weight = values(dims.iter().product(), 2);
            let bias = values(cout, 3);
            let g = ConvGeometry {
                kernel: [r, r],
                stride: [1, 1],
                padding: pad,
                output: [h + pad[0] + pad[2] + 1 - r, w + pad[1] + pad[3] + 1 - r],
            };
            let pool = Pool::new();
            let direct = conv2d(
                &x,
                &PackedConv::from_oihw(&weight, dims, groups, bias.clone()),
                &g,
                false,
                &pool,
            );
            let variants: &[Variant] = if r == 3 {
                &[Variant::F4x3, Variant::F2x3]
            } else {
                &[Variant::F2x5]
            };
            for &variant in variants {
                // every layout: tile rows, blocks with register tiles, blocks with the GEMM
                for layout in [Layout::Fused, Layout::Blocks, Layout::Gemm] {
                    let w = WinogradConv::with_layout(
                        &weight,
                        dims,
                        groups,
                        bias.clone(),
                        variant,
                        layout,
                    );
                    // every variant of the register tiles and transforms the CPU has
                    for simd in Simd::supported_levels() {
                        let w = w.clone().with_simd(simd);
                        let wino = conv2d_winograd(&x, &w, &g, false, &pool);
                        assert_eq!(direct.data.len(), wino.data.len());
                        for (a, b) in direct.data.iter().zip(&wino.data) {
                            assert!(
                                (a - b).abs() < 1e-4,
                                "{simd} {variant:?} {layout:?}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }
}

//! Fully connected layers at inference batch sizes.
//!
//! At batch 1-8 a fully connected layer is a stream over its weights (AlexNet's fc6 is 151 MB,
//! VGG16's 411 MB) with a few multiply-adds per weight, so the kernels are built around reading
//! the weights once, as fast as memory delivers them, and not at all where they do not count:
//!
//! - The weights stay in burn's `[d_in, d_out]` row-major layout (no packing when the engine is
//!   built: a packed copy of VGG16's fc6 took 0.19 s to make, mostly first-touch page faults).
//! - Rows are taken four at a time, as four concurrent read streams (one stream per core
//!   reached 10-15% less bandwidth), each output vector updated once per four rows.
//! - A row whose input is zero for every image of the group is skipped: after ReLU (and
//!   dropout's absence at inference) many inputs are exactly zero, and a skipped row is
//!   `d_out` weights never read. The result is the same sum without its zero terms.
//!
//! At batch 1 the non-zero rows are split between the cores, each summing into its own output
//! vector; at larger batches images go in groups of [`ROWS`] and the output columns are split,
//! each core keeping its `ROWS x columns` sums in its own cache.

use rayon::prelude::*;

use crate::pool::Pool;
use crate::simd::{Kernel, Simd};

/// Images multiplied together against each weight row.
pub const ROWS: usize = 8;
/// Weight rows read together.
const STREAMS: usize = 4;

/// A fully connected layer: `y = x W + b` with `W` `[d_in, d_out]` row-major (burn's and
/// TensorFlow's layout).
#[derive(Clone, Debug)]
pub struct LinearWeights {
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// `[d_in][d_out]`.
    weight: Vec<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
    /// The variant of the weight-stream kernel that runs.
    simd: Simd,
}

impl LinearWeights {
    /// Takes a `[d_in, d_out]` row-major weight as it is (no copy); its kernel variant is the
    /// one [`Simd::current`] runs.
    ///
    /// # Panics
    /// When the sizes disagree.
    pub fn from_in_out(weight: Vec<f32>, d_in: usize, d_out: usize, bias: Vec<f32>) -> Self {
        assert_eq!(weight.len(), d_in * d_out, "linear weight size");
        assert_eq!(bias.len(), d_out, "linear bias size");
        Self {
            d_in,
            d_out,
            weight,
            bias,
            simd: Simd::current().for_kernel(Kernel::Linear),
        }
    }

    /// The same layer running the kernel variant of `simd` exactly (lowered to what the CPU
    /// supports); tests and measurements use this to force a variant.
    pub fn with_simd(mut self, simd: Simd) -> Self {
        self.simd = simd.min(Simd::best());
        self
    }

    /// The kernel variant this layer runs.
    pub fn simd(&self) -> Simd {
        self.simd
    }
}

/// `y[r * ld + c] += sum_k x[k][r] * w[k][c0 + c]` (`c < cols`) over the weight rows `rows`, for
/// the `R` images of a group: `x` is `[d_in][R]` (images innermost); `simd`'s variant (lowered
/// to what the CPU supports).
fn rows_update<const R: usize>(
    simd: Simd,
    rows: &[u32],
    x: &[f32],
    w: &LinearWeights,
    [c0, cols]: [usize; 2],
    y: &mut [f32],
    ld: usize,
) {
    assert!(c0 + cols <= w.d_out, "columns outside the layer");
    assert!(
        cols <= ld && y.len() >= (R - 1) * ld + cols,
        "sums too short"
    );
    assert!(x.len() >= w.d_in * R, "inputs too short");
    assert!(
        rows.iter().all(|&k| (k as usize) < w.d_in),
        "row outside the layer"
    );
    #[cfg(target_arch = "x86_64")]
    match simd.min(Simd::best()) {
        Simd::Avx512 => {
            // SAFETY: the CPU has AVX-512 F and AVX2 + FMA (`Simd::best` is Avx512); rows,
            // columns and inputs were checked against the slices above.
            unsafe { rows_update_avx512::<R>(rows, x, w, [c0, cols], y, ld) };
            return;
        }
        Simd::Avx2 => {
            // SAFETY: AVX2 and FMA are present (`Simd::best` is at least Avx2); rows, columns
            // and inputs were checked against the slices above.
            unsafe { rows_update_avx2::<R>(rows, x, w, [c0, cols], y, ld) };
            return;
        }
        Simd::Portable => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    rows_update_portable::<R>(rows, x, w, [c0, cols], y, ld);
}

/// [`rows_update`] in plain Rust (CPUs without AVX2/FMA, other architectures).
fn rows_update_portable<const R: usize>(
    rows: &[u32],
    x: &[f32],
    w: &LinearWeights,
    [c0, cols]: [usize; 2],
    y: &mut [f32],
    ld: usize,
) {
    for &k in rows {
        let k = k as usize;
        let wr = &w.weight[k * w.d_out + c0..][..cols];
        for (r, yr) in y.chunks_mut(ld).take(R).enumerate() {
            let xv = x[k * R + r];
            for (o, &wv) in yr.iter_mut().zip(wr) {
                *o += xv * wv;
            }
        }
    }
}

/// [`rows_update`] with AVX2 + FMA: rows four at a time, one 8-column vector of each row loaded
/// and applied to all `R` images before moving on.
///
/// # Safety
/// The CPU must support AVX2 and FMA; every row index is below `w.d_in`,
/// `c0 + cols <= w.d_out`, `y.len() >= (R - 1) * ld + cols` and `x.len() >= w.d_in * R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_update_avx2<const R: usize>(
    rows: &[u32],
    x: &[f32],
    w: &LinearWeights,
    [c0, cols]: [usize; 2],
    y: &mut [f32],
    ld: usize,
) {
    use std::arch::x86_64::*;
    let vec_cols = cols / 8 * 8;
    let yp = y.as_mut_ptr();
    // SAFETY (whole body): rows < d_in and columns < c0 + cols <= d_out (caller), so every
    // weight read lies in `w.weight`; image r < R and row k < d_in index `x` (caller); outputs
    // index `y` below (R - 1) * ld + cols.
    unsafe {
        for group in rows.chunks(STREAMS) {
            // Short last group: repeat its last row with zero inputs.
            let ks: [usize; STREAMS] =
                std::array::from_fn(|i| group[i.min(group.len() - 1)] as usize);
            let zeros = [0.0f32; R];
            let xp: [*const f32; STREAMS] = std::array::from_fn(|i| {
                if i < group.len() {
                    x.as_ptr().add(ks[i] * R)
                } else {
                    zeros.as_ptr()
                }
            });
            let wp: [*const f32; STREAMS] =
                std::array::from_fn(|i| w.weight.as_ptr().add(ks[i] * w.d_out + c0));
            let mut j = 0;
            while j < vec_cols {
                let w0 = _mm256_loadu_ps(wp[0].add(j));
                let w1 = _mm256_loadu_ps(wp[1].add(j));
                let w2 = _mm256_loadu_ps(wp[2].add(j));
                let w3 = _mm256_loadu_ps(wp[3].add(j));
                for r in 0..R {
                    let at = yp.add(r * ld + j);
                    let mut a = _mm256_loadu_ps(at);
                    a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*xp[0].add(r)), w0, a);
                    a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*xp[1].add(r)), w1, a);
                    a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*xp[2].add(r)), w2, a);
                    a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*xp[3].add(r)), w3, a);
                    _mm256_storeu_ps(at, a);
                }
                j += 8;
            }
            for j in vec_cols..cols {
                for r in 0..R {
                    let mut v = *yp.add(r * ld + j);
                    for i in 0..STREAMS {
                        v += *xp[i].add(r) * *wp[i].add(j);
                    }
                    *yp.add(r * ld + j) = v;
                }
            }
        }
    }
}

/// [`rows_update`] with AVX-512: as [`rows_update_avx2`] with 16-column vectors, the last
/// partial vector of each row by masked loads and stores.
///
/// # Safety
/// The CPU must support AVX-512 F; the slices as for [`rows_update_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_update_avx512<const R: usize>(
    rows: &[u32],
    x: &[f32],
    w: &LinearWeights,
    [c0, cols]: [usize; 2],
    y: &mut [f32],
    ld: usize,
) {
    use std::arch::x86_64::*;
    let yp = y.as_mut_ptr();
    let tail = cols % 16;
    let vec_cols = cols - tail;
    let mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    // SAFETY (whole body): as in `rows_update_avx2`; the masked loads and stores touch only
    // the `tail` columns below `cols`.
    unsafe {
        for group in rows.chunks(STREAMS) {
            let ks: [usize; STREAMS] =
                std::array::from_fn(|i| group[i.min(group.len() - 1)] as usize);
            let zeros = [0.0f32; R];
            let xp: [*const f32; STREAMS] = std::array::from_fn(|i| {
                if i < group.len() {
                    x.as_ptr().add(ks[i] * R)
                } else {
                    zeros.as_ptr()
                }
            });
            let wp: [*const f32; STREAMS] =
                std::array::from_fn(|i| w.weight.as_ptr().add(ks[i] * w.d_out + c0));
            let mut j = 0;
            while j < vec_cols {
                let w0 = _mm512_loadu_ps(wp[0].add(j));
                let w1 = _mm512_loadu_ps(wp[1].add(j));
                let w2 = _mm512_loadu_ps(wp[2].add(j));
                let w3 = _mm512_loadu_ps(wp[3].add(j));
                for r in 0..R {
                    let at = yp.add(r * ld + j);
                    let mut a = _mm512_loadu_ps(at);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(*xp[0].add(r)), w0, a);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(*xp[1].add(r)), w1, a);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(*xp[2].add(r)), w2, a);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(*xp[3].add(r)), w3, a);
                    _mm512_storeu_ps(at, a);
                }
                j += 16;
            }
            if tail > 0 {
                let w0 = _mm512_maskz_loadu_ps(mask, wp[0].add(j));
                let w1 = _mm512_maskz_loadu_ps(mask, wp[1].add(j));
                let w2 = _mm512_maskz_loadu_ps(mask, wp[2].add(j));
                let w3 = _mm512_maskz_loadu_ps(mask, wp[3].add(j));
                for r in 0..R {
                    let at = yp.add(r * ld + j);
                    let mut a = _mm512_maskz_loadu_ps(mask, at);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(*xp[0].add(r)), w0, a);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(*xp[1].add(r)), w1, a);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(*xp[2].add(r)), w2, a);
                    a = _mm512_fmadd_ps(_mm512_set1_ps(*xp[3].add(r)), w3, a);
                    _mm512_mask_storeu_ps(at, mask, a);
                }
            }
        }
    }
}

/// A zeroed buffer for `rows` rows of `cols` sums, and where they start in it and their
/// stride: rows `cols` rounded up plus 64 bytes apart, and the start 2 KB (mod 4 KB) away from
/// `anchor` (the first weight the kernel reads). Sums and weights otherwise tend to share their
/// address bits 0-11 (rows 8 KB or 16 KB apart), and a load that matches an earlier store in
/// those bits waits for it ("4K aliasing"): AlexNet's fc6 at batch 8 took 11.6-13.4 ms without
/// this placement in most runs, 5.0-5.5 ms with it.
fn sums_buffer(
    pool: &Pool,
    rows: usize,
    cols: usize,
    anchor: *const f32,
) -> (Vec<f32>, usize, usize) {
    let ld = if rows > 1 {
        cols.next_multiple_of(16) + 16
    } else {
        cols
    };
    let buf = pool.vec((rows - 1) * ld + cols + 1024);
    let gap = (anchor as usize + 2048).wrapping_sub(buf.as_ptr() as usize) % 4096;
    (buf, gap / 4, ld)
}

/// `y = x W + b`, then ReLU if asked.
///
/// # Shapes
/// - `x`: `[batch, d_in]` row-major
/// - output: `[batch, d_out]` row-major
pub fn linear(x: &[f32], batch: usize, w: &LinearWeights, relu: bool, pool: &Pool) -> Vec<f32> {
    let (d_in, d_out) = (w.d_in, w.d_out);
    assert_eq!(x.len(), batch * d_in, "linear input size");
    let threads = rayon::current_num_threads().max(1);
    let mut y = pool.overwrite(batch * d_out);
    if batch == 1 {
        // Non-zero rows split between the cores, each summing into its own vector.
        let rows: Vec<u32> = (0..d_in as u32).filter(|&k| x[k as usize] != 0.0).collect();
        let per_task = rows.len().div_ceil(threads).max(STREAMS);
        let partial: Vec<(Vec<f32>, usize)> = rows
            .par_chunks(per_task)
            .map(|part| {
                let (mut buf, at, ld) = sums_buffer(pool, 1, d_out, w.weight.as_ptr());
                rows_update::<1>(w.simd, part, x, w, [0, d_out], &mut buf[at..], ld);
                (buf, at)
            })
            .collect();
        y.copy_from_slice(&w.bias);
        for (buf, at) in partial {
            y.iter_mut().zip(&buf[at..]).for_each(|(o, s)| *o += s);
            pool.give(buf);
        }
    } else {
        // Images in groups of ROWS (inputs transposed, zeros padding the last group); the
        // columns split between the cores.
        let cols = d_out.div_ceil(threads).next_multiple_of(8).max(8);
        let mut xt = pool.vec(d_in * ROWS);
        for (g, images) in x.chunks(d_in * ROWS).enumerate() {
            xt.fill(0.0);
            for (r, image) in images.chunks_exact(d_in).enumerate() {
                for (k, &v) in image.iter().enumerate() {
                    xt[k * ROWS + r] = v;
                }
            }
            let rows: Vec<u32> = (0..d_in as u32)
                .filter(|&k| xt[k as usize * ROWS..][..ROWS].iter().any(|&v| v != 0.0))
                .collect();
            let n = images.len() / d_in;
            let parts: Vec<_> = (0..d_out.div_ceil(cols))
                .into_par_iter()
                .map(|p| {
                    let c0 = p * cols;
                    let width = cols.min(d_out - c0);
                    let anchor = w.weight[c0..].as_ptr();
                    let (mut buf, at, ld) = sums_buffer(pool, ROWS, width, anchor);
                    rows_update::<ROWS>(w.simd, &rows, &xt, w, [c0, width], &mut buf[at..], ld);
                    (c0, width, buf, at, ld)
                })
                .collect();
            for (c0, width, buf, at, ld) in parts {
                for r in 0..n {
                    let src = &buf[at + r * ld..][..width];
                    let dst = &mut y[(g * ROWS + r) * d_out + c0..][..width];
                    for ((o, &s), &b) in dst.iter_mut().zip(src).zip(&w.bias[c0..]) {
                        *o = s + b;
                    }
                }
                pool.give(buf);
            }
        }
        pool.give(xt);
    }
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y + sum_k x[k][r] * w[k][c0 + c]` computed plainly.
    fn naive_update<const R: usize>(
        rows: &[u32],
        x: &[f32],
        w: &[f32],
        d_out: usize,
        [c0, cols]: [usize; 2],
        y: &mut [f32],
        ld: usize,
    ) {
        for r in 0..R {
            for c in 0..cols {
                let mut v = y[r * ld + c] as f64;
                for &k in rows {
                    let k = k as usize;
                    v += x[k * R + r] as f64 * w[k * d_out + c0 + c] as f64;
                }
                y[r * ld + c] = v as f32;
            }
        }
    }

    fn check_rows_update<const R: usize>(simd: Simd) {
        let (d_in, d_out) = (23, 45);
        let w: Vec<f32> = (0..d_in * d_out)
            .map(|i| ((i * 31) % 17) as f32 - 8.0)
            .collect();
        let layer = LinearWeights::from_in_out(w.clone(), d_in, d_out, vec![0.0; d_out]);
        let x: Vec<f32> = (0..d_in * R).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        // row counts that leave every remainder of the four streams; column spans with and
        // without a partial last vector (8 and 16 wide)
        for n_rows in [1, 2, 3, 4, 5, 7, 18] {
            let rows: Vec<u32> = (0..d_in as u32)
                .filter(|k| k % 4 != 2)
                .take(n_rows)
                .collect();
            for (c0, cols, ld) in [(3, 37, 48), (0, 45, 45), (5, 16, 16), (1, 8, 20), (2, 3, 3)] {
                let mut want = vec![0.5; (R - 1) * ld + cols];
                let mut got = want.clone();
                naive_update::<R>(&rows, &x, &w, d_out, [c0, cols], &mut want, ld);
                rows_update::<R>(simd, &rows, &x, &layer, [c0, cols], &mut got, ld);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-3,
                        "{simd} R={R} rows {n_rows} cols {c0}+{cols}: [{i}] {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_update_matches_the_naive_sum_at_every_level() {
        for simd in Simd::supported_levels() {
            check_rows_update::<1>(simd);
            check_rows_update::<ROWS>(simd);
        }
    }

    #[test]
    fn linear_matches_the_naive_product_with_and_without_zero_inputs() {
        for simd in Simd::supported_levels() {
            for (batch, d_in, d_out) in [
                (1, 37, 21),
                (3, 64, 8),
                (8, 5, 17),
                (11, 100, 40),
                (1, 4, 3),
                (2, 9, 1000),
                (17, 30, 12),
            ] {
                let w: Vec<f32> = (0..d_in * d_out)
                    .map(|i| ((i * 7919) % 97) as f32 / 48.0 - 1.0)
                    .collect();
                let bias: Vec<f32> = (0..d_out).map(|i| i as f32 * 0.1 - 1.0).collect();
                let layer = LinearWeights::from_in_out(w.clone(), d_in, d_out, bias.clone())
                    .with_simd(simd);
                assert_eq!(layer.simd(), simd);
                // dense inputs, then inputs with most values (and whole rows) exactly zero
                for zeros in [false, true] {
                    let x: Vec<f32> = (0..batch * d_in)
                        .map(|i| {
                            let v = ((i * 104729) % 89) as f32 / 44.0 - 1.0;
                            if zeros && (i % d_in) % 3 != 1 { 0.0 } else { v }
                        })
                        .collect();
                    for relu in [false, true] {
                        let y = linear(&x, batch, &layer, relu, &Pool::new());
                        for b in 0..batch {
                            for o in 0..d_out {
                                let mut want: f32 = (0..d_in)
                                    .map(|k| x[b * d_in + k] * w[k * d_out + o])
                                    .sum::<f32>()
                                    + bias[o];
                                if relu {
                                    want = want.max(0.0);
                                }
                                let got = y[b * d_out + o];
                                assert!(
                                    (got - want).abs() < 1e-4,
                                    "{simd} {batch}x{d_in}x{d_out} zeros {zeros} [{b},{o}]: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

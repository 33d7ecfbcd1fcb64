//! Single-precision matrix products on row-major slices, split across the rayon pool by us.
//!
//! The `gemm` crate's own threading leaves one of two cores idle for many convolution shapes
//! (`m=784, k=4608, n=512`: 103 GFLOP/s with `Parallelism::Rayon(2)` against 200 GFLOP/s when
//! the rows are split in two and each half runs single-threaded), so every call here runs the
//! crate single-threaded on disjoint row or column blocks.

use rayon::prelude::*;

/// A strided matrix view: element `(i, j)` is `data[offset + i * stride + j * col_stride]`
/// (row-major where `col_stride` is 1, transposed where `stride` is 1).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Index of element `(0, 0)`.
    pub offset: usize,
    /// Distance between rows.
    pub stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major view of `data` starting at `offset` with row stride `stride`.
    pub fn new(data: &'a [f32], offset: usize, stride: usize) -> Self {
        Self {
            data,
            offset,
            stride,
            col_stride: 1,
        }
    }

    /// The transpose of the dense row-major `[_, cols]` matrix `data`.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            stride: 1,
            col_stride: cols,
        }
    }

    /// The same view from row `row` on.
    pub fn from_row(self, row: usize) -> Self {
        Self {
            offset: self.offset + row * self.stride,
            ..self
        }
    }

    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = self.offset + (rows - 1) * self.stride + (cols - 1) * self.col_stride;
            assert!(
                last < self.data.len(),
                "{what}: {rows}x{cols} view (offset {}, strides {}/{}) overruns {} elements",
                self.offset,
                self.stride,
                self.col_stride,
                self.data.len()
            );
        }
    }
}

/// `c[m, n] = a[m, k] · b[k, n]` on one thread. `c` is row-major with row stride `ldc`,
/// starting at `c[0]`.
///
/// # Panics
/// When a view does not fit its slice.
pub fn sgemm_serial(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
) {
    sgemm_serial_into(m, n, k, a, b, c, ldc, false);
}

/// [`sgemm_serial`], adding the product to `c` instead where `accumulate` is set.
///
/// # Panics
/// When a view does not fit its slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_serial_into(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    a.check(m, k, "lhs");
    b.check(k, n, "rhs");
    assert!((m - 1) * ldc + n <= c.len(), "dst: {m}x{n} overruns");
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the three views were checked to lie inside their slices, `c` is borrowed mutably
    // and does not alias `a` or `b` (distinct borrows), and the strides are positive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.stride as isize,
            b.data.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `c[m, n] = a[m, k] · b[k, n]` (`c` dense, row stride `n`), split across the rayon pool: by
/// rows when there are enough of them, otherwise by column blocks (batch-1 fully connected
/// layers and small feature maps).
pub fn sgemm(m: usize, n: usize, k: usize, a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32]) {
    let threads = rayon::current_num_threads().max(1);
    assert!(c.len() >= m * n, "dst: {m}x{n} overruns");
    let c = &mut c[..m * n];
    if threads == 1 || (m * n * k) < 1 << 18 {
        sgemm_serial(m, n, k, a, b, c, n);
    } else if m >= 64 * threads {
        let rows = m.div_ceil(threads).next_multiple_of(8);
        c.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, c_block)| {
                let r0 = i * rows;
                sgemm_serial(c_block.len() / n, n, k, a.from_row(r0), b, c_block, n);
            });
    } else {
        let cols = column_block(n, threads);
        let blocks = n.div_ceil(cols);
        // Each task writes a disjoint column block of `c`; rows interleave, so the blocks are
        // computed into private buffers and copied back.
        let parts: Vec<Vec<f32>> = (0..blocks)
            .into_par_iter()
            .map(|j| {
                let c0 = j * cols;
                let w = cols.min(n - c0);
                let mut part = vec![0.0; m * w];
                let b_block = MatRef {
                    offset: b.offset + c0 * b.col_stride,
                    ..b
                };
                sgemm_serial(m, w, k, a, b_block, &mut part, w);
                part
            })
            .collect();
        for (j, part) in parts.iter().enumerate() {
            let c0 = j * cols;
            let w = cols.min(n - c0);
            for (row, src) in c.chunks_mut(n).zip(part.chunks(w)) {
                row[c0..c0 + w].copy_from_slice(src);
            }
        }
    }
}

/// The instructions the `gemm` crate's kernels use on the running CPU, for reports: it
/// dispatches on its own, to AVX2 + FMA kernels where x86-64 has FMA (its AVX-512 kernels need its
/// `x86-v4` feature, which this crate leaves off), NEON on aarch64, scalar code elsewhere.
pub fn crate_simd() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            "avx2"
        } else {
            "scalar"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// Width of the column blocks for `threads` workers: a multiple of 16, about two blocks per
/// worker so that uneven blocks balance.
fn column_block(n: usize, threads: usize) -> usize {
    n.div_ceil(2 * threads).next_multiple_of(16).min(n).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn split_products_match_the_naive_product() {
        for (m, n, k) in [
            (1, 300, 70),
            (8, 1000, 33),
            (300, 40, 20),
            (5, 7, 0),
            (129, 130, 65),
        ] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let mut c = vec![f32::NAN; m * n];
            sgemm(
                m,
                n,
                k,
                MatRef::new(&a, 0, k),
                MatRef::new(&b, 0, n),
                &mut c,
            );
            let want = naive(m, n, k, &a, &b);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "{m}x{n}x{k}: {x} vs {y}");
            }
        }
    }
}

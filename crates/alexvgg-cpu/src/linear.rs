//! Fully connected layers at inference batch sizes.
//!
//! At batch 1-8 a fully connected layer is a stream over its weights (AlexNet's fc6 is 151 MB,
//! VGG16's 411 MB) with a few multiply-adds per weight. A general GEMM packs those weights into
//! its panel format on every call — one more pass over hundreds of megabytes — so the engine
//! packs them once, when it is built, into column panels of [`PANEL`] outputs
//! (`[d_out / 8][d_in][8]`), and its kernel reads each panel front to back exactly once per
//! call, whatever the batch: the panel (`d_in x 8` values, 295 KB for AlexNet's fc6) stays in
//! the core's L2 cache while every group of [`ROWS`] input rows is multiplied by it.

use rayon::prelude::*;

use crate::multiversion;
use crate::pool::Pool;

/// Outputs per weight panel (one 256-bit vector).
pub const PANEL: usize = 8;
/// Input rows multiplied together against one panel.
pub const ROWS: usize = 8;
/// Concurrent read streams per panel at batch 1.
const STREAMS: usize = 4;

/// A fully connected layer's weights in column panels.
#[derive(Clone, Debug)]
pub struct PackedLinear {
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// `[ceil(d_out / 8)][d_in][8]`, the last panel zero-padded.
    panels: Vec<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
}

impl PackedLinear {
    /// Packs a `[d_in, d_out]` row-major weight (burn's and TensorFlow's layout), consuming it:
    /// rows are moved from the end and the source is shrunk as it goes, so that packing does not
    /// hold two full copies of a large layer at once.
    ///
    /// # Panics
    /// When the sizes disagree.
    pub fn from_in_out(mut weight: Vec<f32>, d_in: usize, d_out: usize, bias: Vec<f32>) -> Self {
        assert_eq!(weight.len(), d_in * d_out, "linear weight size");
        assert_eq!(bias.len(), d_out, "linear bias size");
        let panels_n = d_out.div_ceil(PANEL);
        // Zero-filled allocations are mapped lazily: pages count once written.
        let mut panels = vec![0.0f32; panels_n * d_in * PANEL];
        // Blocks of rows from the end: a block (4 MB; 1 MB blocks were measured 25% slower on
        // VGG16's fc6) is written as one run per panel; then the source is shrunk past it, so
        // that packing never holds two full copies of a large layer. Most of what remains is
        // the kernel's first-touch page faults on the panels (about 2 us per 4 KB page here).
        let block = ((1 << 20) / d_out.max(1)).clamp(1, PANEL * 64);
        let mut end = d_in;
        let mut shrunk_at = weight.len();
        while end > 0 {
            let start = end.saturating_sub(block);
            let source = &weight[start * d_out..end * d_out];
            panels
                .par_chunks_mut(d_in * PANEL)
                .enumerate()
                .for_each(|(p, panel)| {
                    let cols = PANEL.min(d_out - p * PANEL);
                    let dst = &mut panel[start * PANEL..end * PANEL];
                    for (row, out) in source.chunks_exact(d_out).zip(dst.chunks_exact_mut(PANEL)) {
                        let src = &row[p * PANEL..p * PANEL + cols];
                        if let (Ok(out), Ok(src)) = (
                            <&mut [f32; PANEL]>::try_from(&mut *out),
                            <&[f32; PANEL]>::try_from(src),
                        ) {
                            *out = *src;
                        } else {
                            out[..cols].copy_from_slice(src);
                        }
                    }
                });
            weight.truncate(start * d_out);
            // give the packed rows back every 16 MB (each shrink is a remap of the allocation)
            if shrunk_at - weight.len() >= (16 << 20) / 4 {
                weight.shrink_to_fit();
                shrunk_at = weight.len();
            }
            end = start;
        }
        Self {
            d_in,
            d_out,
            panels,
            bias,
        }
    }
}

/// One panel times one group of `ROWS` rows: `xt` is `[d_in][ROWS]` (the rows transposed),
/// `panel` is `[d_in][PANEL]`; returns `[ROWS][PANEL]`.
fn panel_rows(xt: &[f32], panel: &[f32]) -> [[f32; PANEL]; ROWS] {
    assert_eq!(
        xt.len() / ROWS,
        panel.len() / PANEL,
        "panel and rows disagree"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present (checked just above); lengths checked above.
        return unsafe { panel_rows_avx2(xt, panel) };
    }
    let mut acc = [[0.0f32; PANEL]; ROWS];
    for (xk, wk) in xt.chunks_exact(ROWS).zip(panel.chunks_exact(PANEL)) {
        for (a, &x) in acc.iter_mut().zip(xk) {
            for (s, &w) in a.iter_mut().zip(wk) {
                *s += x * w;
            }
        }
    }
    acc
}

/// [`panel_rows`] with eight 256-bit accumulators held in registers.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `xt.len() / ROWS == panel.len() / PANEL`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_rows_avx2(xt: &[f32], panel: &[f32]) -> [[f32; PANEL]; ROWS] {
    use std::arch::x86_64::*;
    let k_len = panel.len() / PANEL;
    let mut acc = [_mm256_setzero_ps(); ROWS];
    let (x, w) = (xt.as_ptr(), panel.as_ptr());
    for k in 0..k_len {
        // SAFETY: k < k_len, so the 8 values at w + 8k and x + 8k are inside the slices.
        unsafe {
            let wk = _mm256_loadu_ps(w.add(k * PANEL));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*x.add(k * ROWS + r)), wk, *a);
            }
        }
    }
    let mut out = [[0.0f32; PANEL]; ROWS];
    for (o, a) in out.iter_mut().zip(acc) {
        // SAFETY: `o` holds exactly 8 floats.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), a) };
    }
    out
}

multiversion! {
    /// One panel times one row: `x` is `[d_in]`, `panel` `[d_in][PANEL]`.
    fn panel_row(x: &[f32], panel: &[f32]) -> [f32; PANEL] {
        // The panel is read as four streams, one per quarter of its rows, each with its own
        // partial sum: more reads in flight than one front-to-back stream (measured 5-15% more
        // bandwidth on AlexNet's fc6 at batch 1), and four independent add chains.
        let seg = x.len() / STREAMS;
        let mut acc = [[0.0f32; PANEL]; STREAMS];
        for i in 0..seg {
            for (n, a) in acc.iter_mut().enumerate() {
                let k = n * seg + i;
                let xv = x[k];
                for (s, &w) in a.iter_mut().zip(&panel[k * PANEL..(k + 1) * PANEL]) {
                    *s += xv * w;
                }
            }
        }
        for (k, &xv) in x.iter().enumerate().skip(seg * STREAMS) {
            for (s, &w) in acc[0].iter_mut().zip(&panel[k * PANEL..(k + 1) * PANEL]) {
                *s += xv * w;
            }
        }
        let mut out = [0.0f32; PANEL];
        for a in &acc {
            for (o, v) in out.iter_mut().zip(a) {
                *o += v;
            }
        }
        out
    }
}

/// `y = x W + b`, then ReLU if asked.
///
/// # Shapes
/// - `x`: `[batch, d_in]` row-major
/// - output: `[batch, d_out]` row-major
pub fn linear(x: &[f32], batch: usize, w: &PackedLinear, relu: bool, pool: &Pool) -> Vec<f32> {
    let (d_in, d_out) = (w.d_in, w.d_out);
    assert_eq!(x.len(), batch * d_in, "linear input size");
    let groups = batch.div_ceil(ROWS);
    // Rows transposed per group: xt[g][k][r] (zero rows pad the last group).
    // zero rows pad the last group
    let mut xt = pool.vec(if batch > 1 { groups * d_in * ROWS } else { 0 });
    if batch > 1 {
        for (b, row) in x.chunks(d_in).enumerate() {
            let (g, r) = (b / ROWS, b % ROWS);
            let dst = &mut xt[g * d_in * ROWS..(g + 1) * d_in * ROWS];
            for (k, &v) in row.iter().enumerate() {
                dst[k * ROWS + r] = v;
            }
        }
    }
    let panels_n = d_out.div_ceil(PANEL);
    // Results panel-major: out_p[p][b][PANEL].
    let mut out_p = pool.scratch(panels_n * batch * PANEL);
    out_p
        .par_chunks_mut(batch * PANEL)
        .enumerate()
        .for_each(|(p, dst)| {
            let panel = &w.panels[p * d_in * PANEL..(p + 1) * d_in * PANEL];
            if batch == 1 {
                dst.copy_from_slice(&panel_row(x, panel));
                return;
            }
            for g in 0..groups {
                let acc = panel_rows(&xt[g * d_in * ROWS..(g + 1) * d_in * ROWS], panel);
                for (r, a) in acc.iter().enumerate() {
                    let b = g * ROWS + r;
                    if b < batch {
                        dst[b * PANEL..(b + 1) * PANEL].copy_from_slice(a);
                    }
                }
            }
        });
    let mut y = pool.overwrite(batch * d_out);
    for (b, row) in y.chunks_mut(d_out).enumerate() {
        for (p, cols) in row.chunks_mut(PANEL).enumerate() {
            let src = &out_p[(p * batch + b) * PANEL..];
            for ((o, &s), &bias) in cols.iter_mut().zip(src).zip(&w.bias[p * PANEL..]) {
                let v = s + bias;
                *o = if relu { v.max(0.0) } else { v };
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_linear_matches_the_naive_product() {
        for (batch, d_in, d_out) in [
            (1, 37, 21),
            (3, 64, 8),
            (8, 5, 17),
            (11, 100, 40),
            (1, 4, 3),
        ] {
            let w: Vec<f32> = (0..d_in * d_out)
                .map(|i| ((i * 7919) % 97) as f32 / 48.0 - 1.0)
                .collect();
            let x: Vec<f32> = (0..batch * d_in)
                .map(|i| ((i * 104729) % 89) as f32 / 44.0 - 1.0)
                .collect();
            let bias: Vec<f32> = (0..d_out).map(|i| i as f32 * 0.1 - 1.0).collect();
            let packed = PackedLinear::from_in_out(w.clone(), d_in, d_out, bias.clone());
            for relu in [false, true] {
                let y = linear(&x, batch, &packed, relu, &Pool::new());
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
                            "{batch}x{d_in}x{d_out} [{b},{o}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

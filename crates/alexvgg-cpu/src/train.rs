//! The backward passes of the engine's layers on channels-last buffers: what
//! [`crate::autodiff`] runs under burn's autodiff when a network is trained on a CPU backend.
//!
//! - Convolution, gradient of the input: for stride 1, a convolution of the output gradient
//!   with the filters flipped and their input/output channels swapped, padded by
//!   `kernel - 1 - padding` ([`input_grad_weights`]); it runs on the forward kernels
//!   (Winograd / direct) through [`crate::ConvLayer`].
//! - Convolution, gradient of the weights: `dW = dYᵀ · patches`, one GEMM per block of output
//!   pixels accumulated per thread, so the patch matrix of the whole batch is never built
//!   ([`conv_weight_grad`]); the bias gradient is the sum of the output gradient.
//! - Max pooling: the forward pass records the position of each maximum
//!   ([`max_pool_argmax`]); the backward pass adds each output gradient there.
//! - LRN: the closed form from the forward inputs ([`lrn_backward`]).
//! - Batch normalization (training mode): [`batch_norm_train`] keeps the normalized input,
//!   [`batch_norm_backward`] is burn's closed form.
//! - Fully connected: `dW = xᵀ · dY` and `dX = dY · Wᵀ` ([`linear_backward`]), products on
//!   strided views of the row-major buffers, split by rows across the cores (`gemm_rows`).

use rayon::prelude::*;

use crate::gemm::{MatRef, sgemm_serial, sgemm_serial_into};
use crate::kernels::{ConvGeometry, Nhwc, im2col};

/// Parts every reduction is split into, whatever the number of threads: each part sums its
/// range in order and the parts are added in order, so a gradient comes out bit-identical from
/// run to run (what `finetune --resume` promises).
const PARTS: usize = 8;

/// `0..n` as [`PARTS`] contiguous ranges (some empty), in parallel.
fn fixed_parts(n: usize) -> impl IndexedParallelIterator<Item = std::ops::Range<usize>> {
    let per = n.div_ceil(PARTS).max(1);
    (0..PARTS)
        .into_par_iter()
        .map(move |p| (p * per).min(n)..((p + 1) * per).min(n))
}

/// The element-wise sums of `parts`, added in their order.
fn sum_in_order(parts: Vec<(Vec<f32>, Vec<f32>)>) -> (Vec<f32>, Vec<f32>) {
    let mut parts = parts.into_iter();
    let (mut a, mut b) = parts.next().unwrap_or_default();
    for (a2, b2) in parts {
        a.iter_mut().zip(&a2).for_each(|(s, v)| *s += v);
        b.iter_mut().zip(&b2).for_each(|(s, v)| *s += v);
    }
    (a, b)
}

/// Output pixels per block of the weight gradient: enough rows for a deep GEMM, few enough
/// that a block's patches (`rows x kh*kw*cin_g`) stay a few megabytes.
fn pixel_block(k: usize) -> usize {
    ((1 << 20) / k.max(1)).clamp(64, 2048)
}

/// The filters of the input gradient of a stride-1 convolution: `[cin, cout / groups, kh, kw]`
/// (same groups), each filter flipped in both axes, input and output channels swapped within
/// each group.
pub fn input_grad_weights(
    weight: &[f32],
    [cout, cin_g, kh, kw]: [usize; 4],
    groups: usize,
) -> Vec<f32> {
    let cout_g = cout / groups;
    let mut out = vec![0.0; weight.len()];
    for g in 0..groups {
        for co in 0..cout_g {
            for ci in 0..cin_g {
                let src = (((g * cout_g + co) * cin_g) + ci) * kh * kw;
                let dst = (((g * cin_g + ci) * cout_g) + co) * kh * kw;
                for y in 0..kh {
                    for x in 0..kw {
                        out[dst + y * kw + x] = weight[src + (kh - 1 - y) * kw + (kw - 1 - x)];
                    }
                }
            }
        }
    }
    out
}

/// The padding `[top, left, bottom, right]` of the input-gradient convolution of a stride-1
/// convolution with kernel `[kh, kw]` and padding `padding` (same order).
pub fn input_grad_padding([kh, kw]: [usize; 2], [t, l, b, r]: [usize; 4]) -> [usize; 4] {
    [kh - 1 - t, kw - 1 - l, kh - 1 - b, kw - 1 - r]
}

/// Whether every value is finite (no NaN, no infinity), scanned in parallel.
pub fn all_finite(v: &[f32]) -> bool {
    v.par_chunks(1 << 16)
        .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}

/// ReLU that keeps NaN (as burn's does), so a diverged network shows in its loss.
#[inline]
pub fn relu_keep_nan(v: f32) -> f32 {
    if v < 0.0 { 0.0 } else { v }
}

/// Whether a ReLU passes output `v` on to the gradient: above zero, or NaN (burn's mask is
/// `output <= 0 → 0`).
#[inline]
pub fn relu_passes(v: f32) -> bool {
    v > 0.0 || v.is_nan()
}

/// Zeroes `dy` where the ReLU did not pass its input (`passed[i]`: output `i` was above zero;
/// burn's and PyTorch's ReLU gradient).
pub fn relu_mask(dy: &mut [f32], passed: &[bool]) {
    dy.par_chunks_mut(1 << 14)
        .zip(passed.par_chunks(1 << 14))
        .for_each(|(d, passed)| {
            for (d, &p) in d.iter_mut().zip(passed) {
                if !p {
                    *d = 0.0;
                }
            }
        });
}

/// `c[m, n] += aᵀ · b` with `a` a `[k, m]` block of `dy` (row stride `lda`) and `b` a dense
/// `[k, n]` matrix, on this thread.
fn accumulate_at_b(m: usize, n: usize, k: usize, a: &[f32], lda: usize, b: &[f32], c: &mut [f32]) {
    let a = MatRef::transposed(a, lda);
    sgemm_serial_into(m, n, k, a, MatRef::new(b, 0, n), c, n, true);
}

/// Gradients of a convolution's weight (`[cout, cin / groups, kh, kw]`, burn's layout) and
/// bias (`[cout]`) from its input `x` and the gradient `dy` of its output (ReLU already
/// applied), for geometry `g`.
pub fn conv_weight_grad(
    x: &Nhwc,
    dy: &Nhwc,
    [cout, cin_g, kh, kw]: [usize; 4],
    groups: usize,
    g: &ConvGeometry,
) -> (Vec<f32>, Vec<f32>) {
    let cout_g = cout / groups;
    let k = kh * kw * cin_g;
    let pixels = dy.batch * dy.height * dy.width;
    let block = pixel_block(k);
    let blocks = pixels.div_ceil(block);
    // fixed parts of the pixel blocks, each summed in block order, then the parts in order:
    // the same sums in the same order on every run
    let parts: Vec<(Vec<f32>, Vec<f32>)> = fixed_parts(blocks)
        .map(|range| {
            let mut acc = vec![0.0f32; groups * cout_g * k];
            let mut bias = vec![0.0f32; cout];
            let mut patches = vec![0.0f32; block * k];
            for b in range {
                let p0 = b * block;
                let rows = block.min(pixels - p0);
                let dy_rows = &dy.data[p0 * cout..(p0 + rows) * cout];
                for row in dy_rows.chunks(cout) {
                    bias.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                for group in 0..groups {
                    im2col(
                        x,
                        g,
                        p0,
                        rows,
                        group * cin_g,
                        cin_g,
                        &mut patches[..rows * k],
                    );
                    accumulate_at_b(
                        cout_g,
                        k,
                        rows,
                        &dy_rows[group * cout_g..],
                        cout,
                        &patches[..rows * k],
                        &mut acc[group * cout_g * k..][..cout_g * k],
                    );
                }
            }
            (acc, bias)
        })
        .collect();
    let (acc, bias) = sum_in_order(parts);
    // (ky, kx, ci) rows per output channel -> burn's (ci, ky, kx).
    let mut weight = vec![0.0; cout * k];
    for (o, src) in acc.chunks(k).enumerate() {
        let dst = &mut weight[o * k..][..k];
        for ky in 0..kh {
            for kx in 0..kw {
                for ci in 0..cin_g {
                    dst[(ci * kh + ky) * kw + kx] = src[(ky * kw + kx) * cin_g + ci];
                }
            }
        }
    }
    (weight, bias)
}

/// Max pooling that also returns, for every output value, the position `y * width + x` in its
/// image of the input value it took (the first maximum of the window in row-major order;
/// padding never wins).
pub fn max_pool_argmax(x: &Nhwc, g: &ConvGeometry) -> (Nhwc, Vec<u32>) {
    let c = x.channels;
    let [oh, ow] = g.output;
    let mut out = vec![0.0f32; x.batch * oh * ow * c];
    let mut arg = vec![0u32; out.len()];
    if c > 0 && ow > 0 {
        out.par_chunks_mut(ow * c)
            .zip(arg.par_chunks_mut(ow * c))
            .enumerate()
            .for_each(|(r, (orow, arow))| {
                let (n, oy) = (r / oh, r % oh);
                let y0 = (oy * g.stride[0]) as isize - g.padding[0] as isize;
                for ox in 0..ow {
                    let x0 = (ox * g.stride[1]) as isize - g.padding[1] as isize;
                    let best = &mut orow[ox * c..][..c];
                    let at = &mut arow[ox * c..][..c];
                    let ys = y0.max(0)..(y0 + g.kernel[0] as isize).min(x.height as isize);
                    let xs = x0.max(0)..(x0 + g.kernel[1] as isize).min(x.width as isize);
                    let mut first = true;
                    for iy in ys {
                        for ix in xs.clone() {
                            let pos = iy as usize * x.width + ix as usize;
                            let src = &x.data[(n * x.height * x.width + pos) * c..][..c];
                            if first {
                                best.copy_from_slice(src);
                                at.fill(pos as u32);
                                first = false;
                            } else {
                                // selects, not branches: the loop vectorizes
                                let pos = pos as u32;
                                for ((b, a), &v) in best.iter_mut().zip(at.iter_mut()).zip(src) {
                                    // a NaN wins and stays, as in burn
                                    let gt = v > *b || (v.is_nan() && !b.is_nan());
                                    *b = if gt { v } else { *b };
                                    *a = if gt { pos } else { *a };
                                }
                            }
                        }
                    }
                }
            });
    }
    (x.output(out, g.output, c), arg)
}

/// The input gradient of a max pool: each output gradient added at the position
/// [`max_pool_argmax`] recorded. `input` is the pool's input `[height, width]`.
pub fn max_pool_backward(dy: &Nhwc, arg: &[u32], [height, width]: [usize; 2]) -> Nhwc {
    let c = dy.channels;
    let per_out = dy.height * dy.width * c;
    let per_in = height * width * c;
    let mut dx = vec![0.0f32; dy.batch * per_in];
    if per_in > 0 && per_out > 0 {
        dx.par_chunks_mut(per_in)
            .zip(dy.data.par_chunks(per_out).zip(arg.par_chunks(per_out)))
            .for_each(|(dx, (dy, arg))| {
                for (g, a) in dy.chunks(c).zip(arg.chunks(c)) {
                    for (ch, (&g, &a)) in g.iter().zip(a).enumerate() {
                        dx[a as usize * c + ch] += g;
                    }
                }
            });
    }
    dy.output(dx, [height, width], c)
}

/// `d^-beta` (AlexNet's `beta = 0.75` from square roots, as the forward kernel computes it).
fn pow_neg(d: f32, beta: f32) -> f32 {
    if beta == 0.75 {
        let s = d.sqrt();
        1.0 / (s * s.sqrt())
    } else if beta == 0.5 {
        1.0 / d.sqrt()
    } else {
        d.powf(-beta)
    }
}

/// The input gradient of local response normalization in TensorFlow's parameters
/// (`y_c = x_c · d_c^-beta`, `d_c = bias + alpha · Σ_{|j-c|≤r} x_j²`):
/// `dx_j = dy_j · d_j^-beta − 2·alpha·beta · x_j · Σ_{|c-j|≤r} dy_c · x_c · d_c^(-beta-1)`.
///
/// Per pixel, the window sums are `2r + 1` shifted adds over a zero-padded channel vector
/// (loops the compiler vectorizes), not a running sum that could drift.
pub fn lrn_backward(x: &Nhwc, dy: &Nhwc, radius: usize, bias: f32, alpha: f32, beta: f32) -> Nhwc {
    let c = x.channels;
    let mut dx = vec![0.0f32; x.data.len()];
    if let Some(per_task) = 8192usize.checked_div(c) {
        let pixels_per_task = per_task.max(1);
        let coef = 2.0 * alpha * beta;
        dx.par_chunks_mut(pixels_per_task * c)
            .zip(x.data.par_chunks(pixels_per_task * c))
            .zip(dy.data.par_chunks(pixels_per_task * c))
            .for_each(|((dx, x), dy)| {
                // [r zeros, c values, r zeros]
                let mut padded = vec![0.0f32; c + 2 * radius];
                let mut sum = vec![0.0f32; c];
                let mut scale = vec![0.0f32; c];
                for ((dx, x), dy) in dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c)) {
                    for (p, v) in padded[radius..radius + c].iter_mut().zip(x) {
                        *p = v * v;
                    }
                    window_sums(&padded, &mut sum, radius);
                    for ((s, sc), (&x, &dy)) in sum.iter_mut().zip(&mut scale).zip(x.iter().zip(dy))
                    {
                        let d = bias + alpha * *s;
                        *sc = pow_neg(d, beta);
                        // the term of channel c in its neighbours' gradients
                        *s = dy * x * *sc / d;
                    }
                    padded[radius..radius + c].copy_from_slice(&sum);
                    window_sums(&padded, &mut sum, radius);
                    for (((dx, &t), &sc), (&x, &dy)) in
                        dx.iter_mut().zip(&sum).zip(&scale).zip(x.iter().zip(dy))
                    {
                        *dx = dy * sc - coef * x * t;
                    }
                }
            });
    }
    x.output(dx, [x.height, x.width], c)
}

/// `out[c] = Σ_{o ≤ 2r} padded[c + o]`: the windows of radius `r` over a vector padded with
/// `r` zeros at each end.
fn window_sums(padded: &[f32], out: &mut [f32], radius: usize) {
    let c = out.len();
    out.copy_from_slice(&padded[..c]);
    for o in 1..=2 * radius {
        for (s, &v) in out.iter_mut().zip(&padded[o..o + c]) {
            *s += v;
        }
    }
}

/// `c[m, n] = a[m, k] · b[k, n]` (`c` dense row-major), the rows of `c` split across the rayon
/// pool, each block one single-threaded product.
///
/// # Panics
/// When a view does not fit its slice.
pub(crate) fn gemm_rows(m: usize, n: usize, k: usize, a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32]) {
    assert!(c.len() >= m * n, "dst: {m}x{n} overruns");
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let rows = m.div_ceil(threads * 4).max(8);
    c[..m * n]
        .par_chunks_mut(rows * n)
        .enumerate()
        .for_each(|(block, c)| {
            sgemm_serial(c.len() / n, n, k, a.from_row(block * rows), b, c, n);
        });
}

/// `y = x W + b` (`W: [d_in, d_out]`, burn's layout), then a ReLU when `relu` is set.
///
/// # Shapes
/// - `x`: `[batch, d_in]` row-major
/// - output: `[batch, d_out]` row-major
pub fn linear_forward(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    [batch, d_in, d_out]: [usize; 3],
    relu: bool,
) -> Vec<f32> {
    assert!(x.len() == batch * d_in && weight.len() == d_in * d_out && bias.len() == d_out);
    // yᵀ = Wᵀ xᵀ: the long dimension (d_out) is the one split across the cores
    let mut yt = vec![0.0f32; d_out * batch];
    gemm_rows(
        d_out,
        batch,
        d_in,
        MatRef::transposed(weight, d_out),
        MatRef::transposed(x, d_in),
        &mut yt,
    );
    let mut y = transpose(&yt, d_out, batch);
    for row in y.chunks_mut(d_out.max(1)) {
        for (v, &b) in row.iter_mut().zip(bias) {
            let t = *v + b;
            *v = if relu { relu_keep_nan(t) } else { t };
        }
    }
    y
}

/// The transpose (`[cols, rows]`) of a dense row-major `[rows, cols]` matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    for (i, row) in m.chunks(cols.max(1)).take(rows).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * rows + i] = v;
        }
    }
    t
}

/// Gradients of a fully connected layer from its input `x` (`[batch, d_in]`), its weight
/// (`[d_in, d_out]`; needed for the input gradient) and the gradient `dy` of its output
/// (`[batch, d_out]`, ReLU already applied): `(dW, db, dx)`, each computed only when asked.
pub fn linear_backward(
    x: Option<&[f32]>,
    weight: Option<&[f32]>,
    dy: &[f32],
    [batch, d_in, d_out]: [usize; 3],
) -> (Option<Vec<f32>>, Vec<f32>, Option<Vec<f32>>) {
    let mut db = vec![0.0f32; d_out];
    for row in dy.chunks(d_out.max(1)) {
        db.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    let dw = x.map(|x| {
        let mut dw = vec![0.0f32; d_in * d_out];
        gemm_rows(
            d_in,
            d_out,
            batch,
            MatRef::transposed(x, d_in),
            MatRef::new(dy, 0, d_out),
            &mut dw,
        );
        dw
    });
    let dx = weight.map(|w| {
        // dxᵀ = W dyᵀ, split by rows of W
        let mut dxt = vec![0.0f32; d_in * batch];
        gemm_rows(
            d_in,
            batch,
            d_out,
            MatRef::new(w, 0, d_out),
            MatRef::transposed(dy, d_out),
            &mut dxt,
        );
        transpose(&dxt, d_in, batch)
    });
    (dw, db, dx)
}

/// Per-channel sums of `f(index, channel, value)` over every value of a channels-last buffer
/// (`index` into `data`), in `f64`, in [`PARTS`] fixed parts.
fn channel_sums(
    data: &[f32],
    channels: usize,
    f: impl Fn(usize, usize, f32) -> f64 + Sync,
) -> Vec<f64> {
    let c = channels.max(1);
    let pixels = data.len() / c;
    let parts: Vec<Vec<f64>> = fixed_parts(pixels)
        .map(|range| {
            let mut acc = vec![0.0f64; channels];
            for p in range {
                for (ch, (a, &v)) in acc.iter_mut().zip(&data[p * c..(p + 1) * c]).enumerate() {
                    *a += f(p * c + ch, ch, v);
                }
            }
            acc
        })
        .collect();
    parts
        .into_iter()
        .reduce(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(s, v)| *s += v);
            a
        })
        .unwrap_or_else(|| vec![0.0; channels])
}

/// Batch normalization in training mode on a channels-last buffer, as burn's
/// `batch_norm_train` computes it: the batch's per-channel mean and biased variance, `y = (x -
/// mean) / sqrt(var + eps) · gamma + beta`, then a ReLU when `relu` is set. Returns `y`, the
/// normalized input `x̂` (for the backward pass), the mean and the variance.
pub fn batch_norm_train(
    x: &Nhwc,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    relu: bool,
) -> (Nhwc, Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = x.channels;
    let count = (x.data.len() / c.max(1)).max(1) as f64;
    let mean: Vec<f64> = channel_sums(&x.data, c, |_, _, v| v as f64)
        .into_iter()
        .map(|s| s / count)
        .collect();
    let var: Vec<f64> = channel_sums(&x.data, c, |_, ch, v| (v as f64 - mean[ch]).powi(2))
        .into_iter()
        .map(|s| s / count)
        .collect();
    let (mean, var): (Vec<f32>, Vec<f32>) = (
        mean.iter().map(|&m| m as f32).collect(),
        var.iter().map(|&v| v as f32).collect(),
    );
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| 1.0 / (v + epsilon as f32).sqrt())
        .collect();
    let mut normalized = vec![0.0f32; x.data.len()];
    let mut y = vec![0.0f32; x.data.len()];
    let rows = (16384 / c.max(1)).max(1) * c.max(1);
    y.par_chunks_mut(rows)
        .zip(normalized.par_chunks_mut(rows))
        .zip(x.data.par_chunks(rows))
        .for_each(|((y, n), x)| {
            for ((y, n), x) in y.chunks_mut(c).zip(n.chunks_mut(c)).zip(x.chunks(c)) {
                for ch in 0..c {
                    let v = (x[ch] - mean[ch]) * inv_std[ch];
                    n[ch] = v;
                    let out = v * gamma[ch] + beta[ch];
                    y[ch] = if relu { relu_keep_nan(out) } else { out };
                }
            }
        });
    (x.output(y, [x.height, x.width], c), normalized, mean, var)
}

/// Gradients of [`batch_norm_train`] from the normalized input `x̂`, `gamma / sqrt(var + eps)`
/// per channel (`scale`) and the output gradient `dy` (ReLU already applied):
/// `(dx, dgamma, dbeta)`, with `dx = scale · (dy − mean(dy) − x̂ · mean(dy · x̂))` as burn's
/// `batch_norm_train_backward`.
pub fn batch_norm_backward(
    normalized: &[f32],
    scale: &[f32],
    dy: &Nhwc,
) -> (Nhwc, Vec<f32>, Vec<f32>) {
    let c = dy.channels;
    let count = (dy.data.len() / c.max(1)).max(1) as f64;
    let dbeta = channel_sums(&dy.data, c, |_, _, g| g as f64);
    let rows = (16384 / c.max(1)).max(1) * c.max(1);
    let dgamma = channel_sums(&dy.data, c, |i, _, g| g as f64 * normalized[i] as f64);
    let mean_g: Vec<f32> = dbeta.iter().map(|s| (s / count) as f32).collect();
    let mean_gn: Vec<f32> = dgamma.iter().map(|s| (s / count) as f32).collect();
    let mut dx = vec![0.0f32; dy.data.len()];
    dx.par_chunks_mut(rows)
        .zip(dy.data.par_chunks(rows).zip(normalized.par_chunks(rows)))
        .for_each(|(dx, (g, n))| {
            for ((dx, g), n) in dx.chunks_mut(c).zip(g.chunks(c)).zip(n.chunks(c)) {
                for ch in 0..c {
                    dx[ch] = scale[ch] * (g[ch] - mean_g[ch] - n[ch] * mean_gn[ch]);
                }
            }
        });
    (
        dy.output(dx, [dy.height, dy.width], c),
        dgamma.into_iter().map(|v| v as f32).collect(),
        dbeta.into_iter().map(|v| v as f32).collect(),
    )
}

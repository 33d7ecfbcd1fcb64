//! Inference memory, checked before a batch is allocated: `--batch-size 100000` is refused
//! with the memory it would need instead of aborting on the allocation.
//!
//! The estimate counts float32 values per image: the input twice (the host batch and its copy
//! for the engine or device) and the largest layer output twice (a layer's input and output
//! are alive together). Weights, workspaces and framework overheads come on top, so it is a
//! lower bound, meant to catch batch sizes that are off by orders of magnitude.

use alexvgg_models::LayerInfo;

/// The memory a batch may use when the machine's memory cannot be read: 64 GiB.
pub const FALLBACK_LIMIT: u64 = 64 << 30;

/// Bytes in a GiB, for messages.
const GIB: f64 = (1u64 << 30) as f64;
/// Bytes in a MiB, for messages.
const MIB: f64 = (1u64 << 20) as f64;

/// A batch that does not fit.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "a batch of {batch} images needs at least {:.1} GiB for its inputs and activations ({:.1} MiB per image), more than the {:.1} GiB of memory {where_}; at most {fit} images per batch fit",
    *needed as f64 / GIB, *per_image as f64 / MIB, *limit as f64 / GIB
)]
pub struct BatchTooLarge {
    /// Images asked for.
    pub batch: usize,
    /// Bytes one image needs.
    pub per_image: u64,
    /// Bytes the batch needs.
    pub needed: u128,
    /// Bytes available.
    pub limit: u64,
    /// Where the limit comes from.
    pub where_: &'static str,
    /// The largest batch that fits.
    pub fit: u64,
}

/// Bytes one image needs for inference with the network described by `rows` (its
/// per-layer table, input row first).
pub fn bytes_per_image(rows: &[LayerInfo]) -> u64 {
    let elements = |r: &LayerInfo| r.output.iter().map(|&d| d as u64).product::<u64>();
    let input = rows.first().map_or(0, elements);
    let largest = rows.iter().map(elements).max().unwrap_or(0);
    4u64.saturating_mul(2 * input + 2 * largest)
}

/// The machine's physical memory in bytes, where it can be read (`/proc/meminfo` on Linux).
pub fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit for a batch and where it comes from: the machine's physical memory, else
/// [`FALLBACK_LIMIT`].
pub fn batch_limit() -> (u64, &'static str) {
    match physical_memory() {
        Some(m) => (m, "this machine has"),
        None => (
            FALLBACK_LIMIT,
            "allowed when the machine's memory is unknown",
        ),
    }
}

/// Checks that `batch` images of `per_image` bytes fit in [`batch_limit`].
///
/// # Errors
/// [`BatchTooLarge`] with the memory needed and the largest batch that fits.
pub fn check_batch(batch: usize, per_image: u64) -> Result<(), BatchTooLarge> {
    let (limit, where_) = batch_limit();
    check_batch_within(batch, per_image, limit, where_)
}

/// [`check_batch`] against an explicit `limit`.
///
/// # Errors
/// [`BatchTooLarge`] with the memory needed and the largest batch that fits.
pub fn check_batch_within(
    batch: usize,
    per_image: u64,
    limit: u64,
    where_: &'static str,
) -> Result<(), BatchTooLarge> {
    let needed = batch as u128 * u128::from(per_image);
    if needed <= u128::from(limit) {
        return Ok(());
    }
    Err(BatchTooLarge {
        batch,
        per_image,
        needed,
        limit,
        where_,
        fit: limit / per_image.max(1),
    })
}

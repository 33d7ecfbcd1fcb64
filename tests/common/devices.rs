//! The devices tests run on: every backend compiled into the test build that answers here
//! (wgpu through lavapipe in CI). Included by the tests of the crates that choose devices
//! (`alexvgg-inference`, `alexvgg-train`, the root package).
#![allow(dead_code)]

use alexvgg_inference::device::{BACKENDS, make_device};
use burn::tensor::Device;

/// Every backend compiled into this test build that can run here, with the tolerance used for
/// it (relative to each reference tensor's largest magnitude). wgpu is included when an adapter
/// answers (lavapipe in CI); set ALEXVGG_TEST_SKIP_WGPU=1 to leave it out.
pub fn devices() -> Vec<(String, Device, f32)> {
    let mut out = Vec::new();
    for b in BACKENDS.iter().filter(|b| b.compiled()) {
        if b.name() == "wgpu" && std::env::var_os("ALEXVGG_TEST_SKIP_WGPU").is_some() {
            continue;
        }
        match make_device(Some(b.name())) {
            Ok((_, d)) => out.push((b.name().to_string(), d, 1e-4)),
            Err(e) => eprintln!("skipping {}: {e}", b.name()),
        }
    }
    out
}

/// The default CPU device.
pub fn cpu() -> Device {
    make_device(Some("cpu")).expect("a CPU backend").1
}

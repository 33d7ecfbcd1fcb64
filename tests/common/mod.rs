//! Shared helpers of the integration tests: fixtures, devices, tolerant comparison.
#![allow(dead_code)]

use std::path::PathBuf;

use std::collections::HashMap;

use alexvgg::device::{self, BACKENDS};
use alexvgg::import::{RawTensor, TensorMap, read_safetensors};
use alexvgg::models::Model;
use burn::tensor::{Device, Tensor, TensorData};

/// `tests/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// A safetensors fixture's tensors.
pub fn tensors(name: &str) -> TensorMap {
    read_safetensors(&fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Every backend compiled into this test build that can run here, with the tolerance used for
/// it (relative to each reference tensor's largest magnitude). wgpu is included when an adapter
/// answers (lavapipe in CI); set ALEXVGG_TEST_SKIP_WGPU=1 to leave it out.
pub fn devices() -> Vec<(String, Device, f32)> {
    let mut out = Vec::new();
    for b in BACKENDS.iter().filter(|b| b.compiled()) {
        if b.name() == "wgpu" && std::env::var_os("ALEXVGG_TEST_SKIP_WGPU").is_some() {
            continue;
        }
        match device::make_device(Some(b.name())) {
            Ok((_, d)) => out.push((b.name().to_string(), d, 1e-4)),
            Err(e) => eprintln!("skipping {}: {e}", b.name()),
        }
    }
    out
}

/// The default CPU device.
pub fn cpu() -> Device {
    device::make_device(Some("cpu")).expect("a CPU backend").1
}

/// Uploads a host tensor.
pub fn upload<const D: usize>(t: &RawTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

/// Host values of a tensor.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// Asserts `|got - want| <= tol * max(|want|)` element-wise (plus equal length), naming `what`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let (worst, at) = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| ((g - w).abs(), i))
        .fold((0f32, 0usize), |a, b| if b.0 > a.0 { b } else { a });
    assert!(
        worst <= tol * scale,
        "{what}: max abs error {worst:e} at {at} (got {}, want {}) exceeds {tol:e} x max|ref| {scale:e}",
        got[at],
        want[at]
    );
}

/// Runs `model` on the shared fixture input of side `side` and compares every activation
/// recorded in `STEM.activations.safetensors` (and the logits) within `tol`.
pub fn check_activations(
    model: &Model,
    stem: &str,
    side: usize,
    device: &Device,
    tol: f32,
    label: &str,
) {
    let inputs = tensors("inputs.safetensors");
    let acts = tensors(&format!("{stem}.activations.safetensors"));
    assert!(acts.len() >= 4, "{stem}: too few recorded activations");
    let input = upload::<4>(&inputs[&format!("input{side}")], device);
    let mut seen: HashMap<String, Tensor<4>> = HashMap::new();
    let logits = model.forward_observed(input, &mut |n, t| {
        seen.insert(n.to_string(), t.clone());
    });
    for (key, want) in &acts {
        let layer = key.trim_start_matches("act.");
        let got = seen
            .get(layer)
            .unwrap_or_else(|| panic!("{stem}: no activation named {layer}"));
        assert_eq!(
            got.dims().iter().product::<usize>(),
            want.len(),
            "{stem}/{layer}: shape {:?} vs reference {:?}",
            got.dims(),
            want.shape
        );
        assert_close(
            &format!("{label} {stem}/{layer}"),
            &values(got.clone()),
            &want.data,
            tol,
        );
    }
    let logits = values(logits);
    assert_close(
        &format!("{label} {stem}/logits"),
        &logits,
        &acts["act.fc8"].data,
        tol,
    );
    assert!(
        logits.iter().any(|v| *v < 0.0),
        "{stem}: logits are never negative (ReLU on logits?)"
    );
}

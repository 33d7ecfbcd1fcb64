//! Fixture readers shared by the tests of the crates that can read weight files (all but
//! `alexvgg-models`): include with `#[path = "../../../tests/common/fixtures.rs"] mod fixtures;`
//! beside `support.rs`.
#![allow(dead_code)]

use std::collections::HashMap;

use alexvgg_import::{RawTensor, TensorMap, read_safetensors};
use alexvgg_models::Model;
use burn::tensor::{Device, Tensor, TensorData};

use super::support::{assert_close, fixture, values};

/// A safetensors fixture's tensors.
pub fn tensors(name: &str) -> TensorMap {
    read_safetensors(&fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Uploads a host tensor.
pub fn upload<const D: usize>(t: &RawTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
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

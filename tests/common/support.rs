//! Test helpers shared by every crate of the workspace; the fixtures live in the root's
//! `tests/fixtures/`. Each crate's tests include this file with
//! `#[path = "../../../tests/common/support.rs"] mod support;` (the root's through
//! `tests/common/mod.rs`); it needs only `alexvgg-models` and burn, so that the models crate
//! can use it too. Readers of fixture files are in `fixtures.rs`.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Tensor;

/// `tests/fixtures/NAME` of the workspace.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("tests").join("fixtures").is_dir())
        .expect("the workspace's tests/fixtures")
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// A fresh temporary directory for one test (`alexvgg-TAG-PID`), emptied if it exists.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("alexvgg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Host values of a tensor.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    alexvgg_models::host_values(t).expect("f32 data")
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

//! Local response normalization: the note's example and TensorFlow's numbers on every backend,
//! and the benchmark's peers. The backend-independent tests are the models crate's
//! (`crates/alexvgg-models/tests/lrn.rs`).

mod common;

use alexvgg::models::LrnConfig;
use burn::tensor::{Distribution, Tensor};
use common::*;

#[test]
fn note_example_matches_the_worked_values_on_every_backend() {
    let fx = tensors("lrn.safetensors");
    for (name, device, _) in devices() {
        // x = 1..32 as NHWC [2,2,2,4]; the fixture stores it NCHW [2,4,2,2].
        let x = upload::<4>(&fx["x"], &device);
        let lrn = LrnConfig::new(2)
            .with_bias(0.0)
            .with_alpha(1.0)
            .with_beta(1.0)
            .init();
        let y = values(lrn.forward(x).permute([0, 2, 3, 1])); // back to NHWC order
        // the note's hand-computed values, NHWC flat indices (value - 1)
        for (value, expected) in [(26usize, 0.00923952f32), (17, 0.017453), (20, 0.018433)] {
            let got = y[value - 1];
            assert!(
                (got - expected).abs() <= 1e-6 * 10.0,
                "{name}: lrn({value}) = {got}, note says {expected}"
            );
        }
        // all 32 TensorFlow outputs to 1e-6 relative
        let want = values(upload::<4>(&fx["y"], &device).permute([0, 2, 3, 1]));
        for (i, (g, w)) in y.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs(),
                "{name}: element {i}: {g} vs TensorFlow {w}"
            );
        }
    }
}

#[test]
fn random_data_matches_tensorflow_for_alexnet_and_other_parameters() {
    let fx = tensors("lrn.safetensors");
    for (name, device, tol) in devices() {
        let x = upload::<4>(&fx["random_x"], &device);
        let alexnet = values(LrnConfig::alexnet().init().forward(x.clone()));
        assert_close(
            &format!("{name} alexnet lrn"),
            &alexnet,
            &fx["random_alexnet"].data,
            tol,
        );
        let other = LrnConfig::new(3)
            .with_bias(2.0)
            .with_alpha(1e-3)
            .with_beta(0.6)
            .init();
        assert_close(
            &format!("{name} r=3 lrn"),
            &values(other.forward(x)),
            &fx["random_r3_b2_a1e-3_beta0.6"].data,
            tol,
        );
    }
}

#[test]
fn the_implementations_compared_in_the_benchmark_compute_the_same_function() {
    // bench-lrn compares against a 2r+1-slice LRN; it must compute the same thing to be a fair peer.
    let device = cpu();
    let x = Tensor::<4>::random([1, 12, 4, 5], Distribution::Normal(0.0, 10.0), &device);
    for r in [1usize, 2, 4] {
        let ours = LrnConfig::new(r).with_alpha(2e-3).with_beta(0.75).init();
        assert_close(
            &format!("r={r}"),
            &values(alexvgg::bench::lrn_by_slices(x.clone(), r, 1.0, 2e-3, 0.75)),
            &values(ours.forward(x.clone())),
            1e-5,
        );
        assert_close(
            &format!("pool r={r}"),
            &values(alexvgg::bench::lrn_by_pool(x.clone(), r, 1.0, 2e-3, 0.75)),
            &values(ours.forward(x.clone())),
            1e-5,
        );
    }
}

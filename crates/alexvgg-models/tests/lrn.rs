//! Local response normalization: the shared reference values, burn's `LocalResponseNorm`
//! under the Caffe mapping, gradients.

mod common;

use alexvgg_models::{LrnConfig, ModelError};
use burn::nn::LocalResponseNormConfig;
use burn::tensor::{Distribution, Tensor};
use common::*;

#[test]
fn matches_the_shared_reference_file_when_present() {
    // ../shared/reference/lrn_seed_example.txt is checking data beside the repository, not part
    // of it; when it is there, our output must equal its 32 TensorFlow values too.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/lrn_seed_example.txt");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("{} not present; skipped", path.display());
        return;
    };
    let want: Vec<f32> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    assert_eq!(want.len(), 32);
    let device = cpu();
    let x = Tensor::<1, burn::tensor::Int>::arange(1..33, &device)
        .float()
        .reshape([2, 2, 2, 4])
        .permute([0, 3, 1, 2]);
    let lrn = LrnConfig::new(2)
        .with_bias(0.0)
        .with_alpha(1.0)
        .with_beta(1.0)
        .init();
    let y = values(lrn.forward(x).permute([0, 2, 3, 1]));
    for (g, w) in y.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-6 * w.abs(), "{g} vs {w}");
    }
}

#[test]
fn equals_burn_local_response_norm_under_the_caffe_mapping() {
    let device = cpu();
    let x = Tensor::<4>::random([2, 16, 5, 7], Distribution::Normal(0.0, 20.0), &device);
    for (size, alpha, beta, k) in [
        (5, 1e-4, 0.75, 1.0),
        (3, 1e-2, 0.5, 2.0),
        (7, 5e-3, 0.9, 0.5),
    ] {
        let ours = LrnConfig::from_caffe(size, alpha, beta, k).unwrap();
        assert_eq!(ours.size(), size);
        assert!((ours.caffe_alpha() - alpha).abs() < 1e-15);
        let burn = LocalResponseNormConfig::new(size)
            .with_alpha(alpha)
            .with_beta(beta)
            .with_k(k)
            .init();
        assert_close(
            &format!("size {size}"),
            &values(ours.init().forward(x.clone())),
            &values(burn.forward(x.clone())),
            1e-5,
        );
    }
    // the TF parameters of AlexNet are Caffe's (5, 1e-4, 0.75, 1)
    assert_eq!(LrnConfig::alexnet().size(), 5);
    assert!((LrnConfig::alexnet().caffe_alpha() - 1e-4).abs() < 1e-15);
    assert_eq!(
        LrnConfig::from_caffe(4, 1e-4, 0.75, 1.0),
        Err(ModelError::EvenLrnSize(4))
    );
}

#[test]
fn gradients_flow_and_match_finite_differences() {
    let device = cpu().autodiff();
    let base = Tensor::<4>::random([1, 6, 2, 3], Distribution::Normal(0.0, 3.0), &device);
    let x = base.clone().require_grad();
    let lrn = LrnConfig::new(1)
        .with_bias(1.0)
        .with_alpha(0.1)
        .with_beta(0.75)
        .init();
    let loss = lrn.forward(x.clone()).sum();
    let grads = loss.backward();
    let g = values(x.grad(&grads).expect("gradient reaches the input"));
    assert!(g.iter().any(|v| v.abs() > 1e-4), "gradient is not all zero");
    // central differences on a few elements
    let host = values(base.clone());
    let eval = |v: &[f32]| -> f64 {
        let t = Tensor::<4>::from_data(
            burn::tensor::TensorData::new(v.to_vec(), [1, 6, 2, 3]),
            &cpu(),
        );
        values(lrn.forward(t)).iter().map(|&y| y as f64).sum()
    };
    for i in [0usize, 7, 20, 35] {
        let h = 1e-2f32;
        let (mut up, mut down) = (host.clone(), host.clone());
        up[i] += h;
        down[i] -= h;
        let numeric = (eval(&up) - eval(&down)) / (2.0 * h as f64);
        assert!(
            (numeric - g[i] as f64).abs() < 2e-3 * (1.0 + numeric.abs()),
            "element {i}: analytic {} vs numeric {numeric}",
            g[i]
        );
    }
}

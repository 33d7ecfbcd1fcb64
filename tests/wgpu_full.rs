//! The real, full-size networks on wgpu (lavapipe in CI): fc6's weight (151 MB in AlexNet,
//! 411 MB in VGG16) exceeds the 128 MiB storage-binding limit and must run in column blocks.
//! Results are compared with the default CPU backend on the same weights.

mod common;

use alexvgg::device::make_device;
use alexvgg::import::{load_module, module_tensors};
use alexvgg::models::{AlexNetVariant, Architecture, Model, NetworkShape, VggDepth};
use burn::tensor::{Distribution, Tensor};
use common::*;

fn compare_on_wgpu(arch: Architecture) {
    let Ok((_, gpu)) = make_device(Some("wgpu")) else {
        eprintln!("no wgpu device in this build or on this machine; skipped");
        return;
    };
    if std::env::var_os("ALEXVGG_TEST_SKIP_WGPU").is_some() {
        return;
    }
    let cpu = cpu();
    let shape = NetworkShape::default();
    let reference = arch.init(&shape, &cpu).unwrap();
    let blocks = |m: &Model| match m {
        Model::AlexNet(a) => a.fc6.blocks.len(),
        Model::Vgg(v) => v.fc6.blocks.len(),
    };
    assert_eq!(blocks(&reference), 1, "CPU backends keep one block");
    let on_gpu = load_module(
        arch.init(&shape, &gpu).unwrap(),
        module_tensors(&reference).unwrap(),
        "cpu model",
        &arch.describe(),
    )
    .unwrap();
    assert!(blocks(&on_gpu) > 1, "fc6 is split on wgpu");
    let side = arch.input_size();
    let x = Tensor::<4>::random(
        [1, 3, side, side],
        Distribution::Uniform(-100.0, 100.0),
        &cpu,
    );
    let want = values(reference.forward(x.clone()));
    let got = values(on_gpu.forward(Tensor::from_data(x.into_data(), &gpu)));
    assert_close(&format!("{} on wgpu", arch.name()), &got, &want, 1e-3);
}

#[test]
fn full_size_alexnet_runs_on_wgpu() {
    compare_on_wgpu(Architecture::AlexNet(AlexNetVariant::Tf));
}

#[test]
fn full_size_vgg16_runs_on_wgpu() {
    compare_on_wgpu(Architecture::Vgg {
        depth: VggDepth::Vgg16,
        batch_norm: false,
    });
}

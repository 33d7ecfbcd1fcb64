//! Every network variant against its reference framework, layer by layer, on every backend.
//!
//! Fixtures come from `scripts/make_fixtures.py`: reduced-width networks (same kernels,
//! strides, groups, padding, LRN and input sizes) with seeded weights, run in TensorFlow (the
//! note's `tf` AlexNet, exactly as its script builds it) or PyTorch (the rest).

#[path = "../../../tests/common/devices.rs"]
mod devices;
#[path = "../../../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/common/support.rs"]
mod support;

use alexvgg_import::load_model;
use alexvgg_models::{AlexNetVariant, Architecture, VggDepth};
use devices::*;
use fixtures::*;
use support::*;

fn check(arch: Architecture, stem: &str, side: usize) {
    for (name, device, tol) in devices() {
        let (model, shape, _) =
            load_model(&fixture(&format!("{stem}.safetensors")), &arch, &device)
                .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(shape.num_classes, 10);
        check_activations(&model, stem, side, &device, tol, &name);
    }
}

#[test]
fn alexnet_tf_matches_tensorflow() {
    check(
        Architecture::AlexNet(AlexNetVariant::Tf),
        "alexnet_tf_w8",
        227,
    );
}

#[test]
fn alexnet_caffe_matches_pytorch() {
    check(
        Architecture::AlexNet(AlexNetVariant::Caffe),
        "alexnet_caffe_w8",
        227,
    );
}

#[test]
fn alexnet_torchvision_matches_pytorch() {
    check(
        Architecture::AlexNet(AlexNetVariant::Torchvision),
        "alexnet_torchvision_w8",
        224,
    );
}

#[test]
fn vgg16_matches_pytorch() {
    check(
        Architecture::Vgg {
            depth: VggDepth::Vgg16,
            batch_norm: false,
        },
        "vgg16_w16",
        224,
    );
}

#[test]
fn vgg11_bn_matches_pytorch() {
    check(
        Architecture::Vgg {
            depth: VggDepth::Vgg11,
            batch_norm: true,
        },
        "vgg11_bn_w16",
        224,
    );
}

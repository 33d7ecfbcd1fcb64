//! Grad-CAM and saliency maps against the reference frameworks (TensorFlow's GradientTape on
//! the note's AlexNet, PyTorch's autograd on VGG16; `tests/fixtures/explain.safetensors` from
//! `scripts/make_fixtures.py explain`) on every backend, and the errors of bad layers, classes
//! and inputs.

#[path = "../../../tests/common/devices.rs"]
mod devices;
#[path = "../../../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/common/support.rs"]
mod support;

use alexvgg_import::load_model;
use alexvgg_inference::explain::{ExplainError, Explainer, Method, Target};
use alexvgg_models::{AlexNetVariant, Architecture, BlockLinear, Model, VggDepth};
use burn::nn::{Initializer, LinearConfig};
use devices::*;
use fixtures::*;
use support::*;

const TF: Architecture = Architecture::AlexNet(AlexNetVariant::Tf);
const VGG16: Architecture = Architecture::Vgg {
    depth: VggDepth::Vgg16,
    batch_norm: false,
};

/// The cases of the fixture: (key, method, layer, target, images).
const CASES: [(&str, Method, &str, Target, usize); 8] = [
    (
        "alexnet_tf.gradcam.conv5.top1",
        Method::GradCam,
        "conv5",
        Target::Top1,
        2,
    ),
    (
        "alexnet_tf.gradcam.conv5.3",
        Method::GradCam,
        "conv5",
        Target::Class(3),
        2,
    ),
    (
        "alexnet_tf.gradcam.pool2.top1",
        Method::GradCam,
        "pool2",
        Target::Top1,
        2,
    ),
    (
        "alexnet_tf.saliency.input.top1",
        Method::Saliency,
        "",
        Target::Top1,
        1,
    ),
    (
        "vgg16.gradcam.conv5_3.top1",
        Method::GradCam,
        "conv5_3",
        Target::Top1,
        2,
    ),
    (
        "vgg16.gradcam.conv5_3.3",
        Method::GradCam,
        "conv5_3",
        Target::Class(3),
        2,
    ),
    (
        "vgg16.gradcam.pool3.top1",
        Method::GradCam,
        "pool3",
        Target::Top1,
        2,
    ),
    (
        "vgg16.saliency.input.3",
        Method::Saliency,
        "",
        Target::Class(3),
        1,
    ),
];

#[test]
fn maps_match_tensorflow_and_pytorch_on_every_backend() {
    let want = tensors("explain.safetensors");
    let inputs = tensors("inputs.safetensors");
    for (backend, device, tol) in devices() {
        let explainers = [
            ("alexnet_tf", TF, "alexnet_tf_w8", 227),
            ("vgg16", VGG16, "vgg16_w16", 224),
        ]
        .map(|(net, arch, stem, side)| {
            let file = fixture(&format!("{stem}.safetensors"));
            let (model, _, _) = load_model(&file, &arch, &device).unwrap();
            (net, Explainer::new(model, &device), side)
        });
        for (key, method, layer, target, n) in CASES {
            let (_, explainer, side) = explainers
                .iter()
                .find(|(net, _, _)| key.starts_with(&format!("{net}.")))
                .unwrap();
            let side = *side;
            let input = inputs[&format!("input{side}")].data[..n * 3 * side * side].to_vec();
            let layer = (!layer.is_empty()).then_some(layer);
            let got = explainer
                .explain(input, [n, 3, side, side], method, layer, target)
                .unwrap_or_else(|e| panic!("{backend} {key}: {e}"));
            let maps = &want[key];
            assert_eq!(got.len(), maps.shape[0], "{backend} {key}");
            let label = format!("{backend} {key}");
            for (i, e) in got.iter().enumerate() {
                assert_eq!(
                    [e.height, e.width],
                    [maps.shape[1], maps.shape[2]],
                    "{label}"
                );
                assert_eq!(
                    e.class as f32,
                    want[&format!("{key}.classes")].data[i],
                    "{label}"
                );
                let p = want[&format!("{key}.probability")].data[i];
                assert!(
                    (e.probability - p).abs() <= 1e-4,
                    "{label}: p {} vs {p}",
                    e.probability
                );
            }
            let flat: Vec<f32> = got.iter().flat_map(|e| e.map.iter().copied()).collect();
            assert_close(&label, &flat, &maps.data, tol);
            for e in &got {
                let max = e.map.iter().copied().fold(0f32, f32::max);
                assert_eq!(max, 1.0, "{label}: each map is divided by its maximum");
            }
        }
    }
}

#[test]
fn a_zero_gradient_gives_zero_maps() {
    let device = cpu();
    let (model, _, _) = load_model(&fixture("alexnet_tf_w8.safetensors"), &TF, &device).unwrap();
    // logits that do not depend on anything: fc8's weights and bias all zero
    let Model::AlexNet(mut net) = model else {
        unreachable!("an AlexNet")
    };
    net.fc8 = BlockLinear {
        blocks: vec![
            LinearConfig::new(64, 10)
                .with_initializer(Initializer::Zeros)
                .init(&device),
        ],
    };
    let explainer = Explainer::new(Model::AlexNet(net), &device);
    let input = tensors("inputs.safetensors")["input227"].data.clone();
    for method in Method::ALL {
        let got = explainer
            .explain(input.clone(), [2, 3, 227, 227], method, None, Target::Top1)
            .unwrap();
        for e in got {
            assert!(
                e.map.iter().all(|v| *v == 0.0),
                "{method:?}: {:?}",
                &e.map[..4]
            );
            assert!((e.probability - 0.1).abs() < 1e-6);
        }
    }
}

#[test]
fn bad_layers_classes_and_inputs_are_refused() {
    let device = cpu();
    let (model, _, _) = load_model(&fixture("alexnet_tf_w8.safetensors"), &TF, &device).unwrap();
    let explainer = Explainer::new(model, &device);
    assert_eq!(explainer.default_layer().as_deref(), Some("conv5"));
    assert_eq!(
        explainer.layer(Method::GradCam, None).unwrap().as_deref(),
        Some("conv5")
    );
    assert_eq!(explainer.layer(Method::Saliency, None).unwrap(), None);
    let input = || vec![0f32; 3 * 227 * 227];
    let dims = [1, 3, 227, 227];
    let explain = |method, layer, target| explainer.explain(input(), dims, method, layer, target);

    let err = explain(Method::GradCam, Some("conv9"), Target::Top1).unwrap_err();
    assert!(matches!(err, ExplainError::UnknownLayer { .. }), "{err}");
    assert!(err.to_string().contains("conv1, lrn1, pool1"), "{err}");
    let err = explain(Method::GradCam, Some("fc6"), Target::Top1).unwrap_err();
    assert!(matches!(err, ExplainError::NotSpatial { .. }), "{err}");
    assert!(err.to_string().contains("without spatial size"), "{err}");
    let err = explain(Method::Saliency, Some("conv5"), Target::Top1).unwrap_err();
    assert!(matches!(err, ExplainError::LayerForSaliency(_)), "{err}");
    let err = explain(Method::GradCam, None, Target::Class(10)).unwrap_err();
    assert!(
        matches!(
            err,
            ExplainError::ClassOutOfRange {
                class: 10,
                classes: 10
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("0 to 9"), "{err}");
    let err = explainer
        .explain(
            vec![0.0; 3 * 224 * 224],
            [1, 3, 224, 224],
            Method::GradCam,
            None,
            Target::Top1,
        )
        .unwrap_err();
    assert!(
        matches!(err, ExplainError::InputSize { expected: 227, .. }),
        "{err}"
    );
    assert!(explain(Method::GradCam, Some("lrn1"), Target::Class(9)).is_ok());
    assert!(
        explainer
            .explain(
                Vec::new(),
                [0, 3, 227, 227],
                Method::Saliency,
                None,
                Target::Top1
            )
            .unwrap()
            .is_empty()
    );
}

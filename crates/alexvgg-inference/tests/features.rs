//! Features of named layers against the reference framework's recorded activations, on every
//! backend and on the CPU engine; pooling; a headless pass on an input the classifier cannot
//! take.

#[path = "../../../tests/common/devices.rs"]
mod devices;
#[path = "../../../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/common/support.rs"]
mod support;

use alexvgg_import::load_model;
use alexvgg_inference::device::Backend;
use alexvgg_inference::features::{FeaturesError, SpatialPool, check_input, extract};
use alexvgg_inference::runner::{ConvChoice, EngineKind, Runner};
use alexvgg_models::{AlexNetVariant, Architecture};
use devices::*;
use fixtures::*;
use support::*;

const TF: Architecture = Architecture::AlexNet(AlexNetVariant::Tf);

fn layers(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every runner: the burn model on each backend, and the CPU engine.
fn runners(arch: Architecture, stem: &str) -> Vec<(String, Runner)> {
    let file = fixture(&format!("{stem}.safetensors"));
    let mut out = Vec::new();
    for (name, device, _) in devices() {
        let (model, _, _) = load_model(&file, &arch, &device).unwrap();
        let backend = if name == "wgpu" {
            Backend::Wgpu
        } else {
            Backend::Flex
        };
        let runner = Runner::new(model, &device, backend, EngineKind::Burn, ConvChoice::Auto);
        out.push((format!("burn on {name}"), runner.unwrap()));
    }
    let device = cpu();
    let (model, _, _) = load_model(&file, &arch, &device).unwrap();
    let engine = Runner::new(
        model,
        &device,
        Backend::Flex,
        EngineKind::Kernels,
        ConvChoice::Auto,
    );
    out.push(("cpu engine".to_string(), engine.unwrap()));
    out
}

#[test]
fn named_layers_match_tensorflow_on_every_runner() {
    let input = &tensors("inputs.safetensors")["input227"];
    let acts = tensors("alexnet_tf_w8.activations.safetensors");
    let dims = [2, 3, 227, 227];
    for (label, runner) in runners(TF, "alexnet_tf_w8") {
        // asked out of network order: returned in the order asked
        let got = extract(
            &runner,
            input.data.clone(),
            dims,
            &layers(&["fc7", "conv2", "pool5"]),
            None,
        )
        .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(got.len(), 3);
        for f in &got {
            let want = &acts[&format!("act.{}", f.layer)];
            assert_eq!(f.shape, want.shape, "{label} {}", f.layer);
            assert_close(&format!("{label} {}", f.layer), &f.data, &want.data, 1e-4);
        }
        assert_eq!(got[0].layer, "fc7");
        // global average pooling of pool5: the mean of each recorded 6x6 plane
        let pooled = extract(
            &runner,
            input.data.clone(),
            dims,
            &layers(&["pool5"]),
            Some(SpatialPool::Avg),
        )
        .unwrap()
        .remove(0);
        let want: Vec<f32> = acts["act.pool5"]
            .data
            .chunks(36)
            .map(|p| p.iter().sum::<f32>() / 36.0)
            .collect();
        assert_eq!(pooled.shape, vec![2, 32]);
        assert_close(&format!("{label} pooled pool5"), &pooled.data, &want, 1e-4);
        let err =
            extract(&runner, input.data.clone(), dims, &layers(&["conv9"]), None).unwrap_err();
        assert!(
            matches!(err, FeaturesError::UnknownLayer { .. }),
            "{label}: {err}"
        );
        assert!(err.to_string().contains("conv5"), "{label}: {err}");
    }
}

#[test]
fn a_headless_pass_takes_inputs_the_classifier_cannot() {
    // 131x131: every convolution and pool of the note's AlexNet fits, fc6 does not
    let side = 131;
    let (model, _, _) = load_model(&fixture("alexnet_tf_w8.safetensors"), &TF, &cpu()).unwrap();
    assert!(check_input(&model, &layers(&["conv5"]), side).is_ok());
    assert!(check_input(&model, &layers(&["conv5", "fc7"]), side).is_err());
    assert!(
        check_input(&model, &layers(&["conv5"]), 20).is_err(),
        "pool2 does not fit a 20x20 input"
    );
    let dims = [1, 3, side, side];
    let input: Vec<f32> = (0..3 * side * side)
        .map(|i| ((i * 7919) % 255) as f32 - 128.0)
        .collect();
    let mut results = Vec::new();
    for (label, runner) in runners(TF, "alexnet_tf_w8") {
        let f = extract(
            &runner,
            input.clone(),
            dims,
            &layers(&["conv5"]),
            Some(SpatialPool::Max),
        )
        .unwrap_or_else(|e| panic!("{label}: {e}"))
        .remove(0);
        assert_eq!(f.shape, vec![1, 32], "{label}");
        assert!(
            f.data.iter().all(|v| *v >= 0.0),
            "{label}: conv5 is after its ReLU"
        );
        results.push((label, f.data));
    }
    let (first, want) = &results[0];
    for (label, got) in &results[1..] {
        assert_close(&format!("{label} vs {first}"), got, want, 1e-4);
    }
}

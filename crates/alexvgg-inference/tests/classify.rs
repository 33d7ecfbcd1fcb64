//! End to end: image files through each preprocessing preset and the network, against the same
//! pipeline written with PIL/numpy and the reference frameworks (scripts/make_fixtures.py).

#[path = "../../../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/common/support.rs"]
mod support;

use std::path::PathBuf;

use alexvgg_import::load_model;
use alexvgg_inference::classify::{collect_images, prepare, probabilities, top_k};
use alexvgg_inference::preprocess::{Preset, load_image};
use alexvgg_inference::runner::{ConvChoice, EngineKind, Runner};
use alexvgg_models::{AlexNetVariant, Architecture, VggDepth};
use fixtures::*;
use support::*;

fn image(name: &str) -> PathBuf {
    fixture("images").join(name)
}

#[test]
fn every_preset_matches_the_python_reference() {
    let want = tensors("end_to_end.safetensors");
    assert!(want.len() >= 20, "{} reference entries", want.len());
    let (backend, device) = alexvgg_inference::device::make_device(Some("cpu")).unwrap();
    let nets = [
        (
            Preset::Caffe,
            Architecture::AlexNet(AlexNetVariant::Tf),
            "alexnet_tf_w8.py2.npy",
        ),
        (
            Preset::Note,
            Architecture::AlexNet(AlexNetVariant::Tf),
            "alexnet_tf_w8.py2.npy",
        ),
        (
            Preset::Torchvision,
            Architecture::AlexNet(AlexNetVariant::Torchvision),
            "alexnet_torchvision_w8.safetensors",
        ),
        (
            Preset::Frossard,
            Architecture::Vgg {
                depth: VggDepth::Vgg16,
                batch_norm: false,
            },
            "vgg16_w16.npz",
        ),
    ];
    let mut checked = 0;
    // both inference paths: the burn model and the CPU engine
    for (kind, (preset, arch, weights)) in [EngineKind::Burn, EngineKind::Kernels]
        .into_iter()
        .flat_map(|k| nets.iter().map(move |n| (k, *n)))
    {
        let (model, _, _) = load_model(&fixture(weights), &arch, &device).unwrap();
        let runner = Runner::new(model, &device, backend, kind, ConvChoice::Auto).unwrap();
        let side = arch.input_size();
        for (key, reference) in want
            .iter()
            .filter(|(k, _)| k.ends_with(&format!(".{}", preset.name())))
        {
            let file = key.trim_end_matches(&format!(".{}", preset.name()));
            let prepared = prepare(&[image(file)], preset, side)
                .pop()
                .unwrap()
                .unwrap();
            let probs = probabilities(&runner, &[prepared], side)
                .unwrap()
                .pop()
                .unwrap();
            for (i, (g, w)) in probs.iter().zip(&reference.data).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4,
                    "{kind:?} {key}: class {i} probability {g} vs reference {w}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * want.len());
}

#[test]
fn exif_orientation_is_applied_and_bad_files_are_named() {
    let upright = load_image(&image("cat_exif6.jpg")).unwrap();
    let plain = load_image(&image("cat_rgb.png")).unwrap();
    assert_eq!((plain.width(), plain.height()), (181, 120));
    assert_eq!(
        (upright.width(), upright.height()),
        (120, 181),
        "EXIF orientation 6 rotates the image"
    );
    let err = load_image(&image("broken.png")).unwrap_err();
    assert!(err.to_string().contains("broken.png"), "{err}");
}

#[test]
fn folders_are_walked_in_order_and_top_k_is_sorted() {
    let files = collect_images(&[fixture("images")]);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(
        names.contains(&"cat_exif6.jpg".to_string()) && names.contains(&"broken.png".to_string())
    );
    let classes = alexvgg_inference::labels::imagenet();
    let probs: Vec<f32> = (0..1000)
        .map(|i| if i == 356 { 0.5 } else { 0.5 / 999.0 })
        .collect();
    let top = top_k(&probs, 3, &classes);
    assert_eq!(top[0].label, "weasel");
    assert_eq!(top[0].synset.as_deref(), Some("n02441942"));
    assert!(top[1].probability <= top[0].probability);
}

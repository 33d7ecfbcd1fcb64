//! End to end: image files through each preprocessing preset and the network, against the same
//! pipeline written with PIL/numpy and the reference frameworks (scripts/make_fixtures.py).

mod common;

use std::path::PathBuf;
use std::process::Command;

use alexvgg::classify::{collect_images, prepare, probabilities, top_k};
use alexvgg::import::load_model;
use alexvgg::models::{AlexNetVariant, Architecture, VggDepth};
use alexvgg::preprocess::{Preset, load_image};
use alexvgg::runner::{ConvChoice, EngineKind, Runner};
use common::*;

fn image(name: &str) -> PathBuf {
    fixture("images").join(name)
}

#[test]
fn every_preset_matches_the_python_reference() {
    let want = tensors("end_to_end.safetensors");
    assert!(want.len() >= 20, "{} reference entries", want.len());
    let (backend, device) = alexvgg::device::make_device(Some("cpu")).unwrap();
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
    let classes = alexvgg::labels::imagenet();
    let probs: Vec<f32> = (0..1000)
        .map(|i| if i == 356 { 0.5 } else { 0.5 / 999.0 })
        .collect();
    let top = top_k(&probs, 3, &classes);
    assert_eq!(top[0].label, "weasel");
    assert_eq!(top[0].synset.as_deref(), Some("n02441942"));
    assert!(top[1].probability <= top[0].probability);
}

fn alexvgg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_alexvgg"))
        .args(args)
        .env(
            "ALEXVGG_CACHE",
            std::env::temp_dir().join("alexvgg-test-cache-empty"),
        )
        .env("ALEXVGG_MIRROR", "http://127.0.0.1:9/")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_classifies_a_folder_reports_bad_files_and_exits_non_zero() {
    let weights = fixture("alexnet_tf_w8.py2.npy");
    let labels = fixture("labels10.txt");
    let (code, out, err) = alexvgg(&[
        "classify",
        "--weights",
        weights.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--top-k",
        "3",
        "--json",
        fixture("images").to_str().unwrap(),
    ]);
    assert_eq!(
        code, 1,
        "a broken file makes the exit status non-zero\n{err}"
    );
    assert!(err.contains("broken.png"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7, "every readable image is classified:\n{out}");
    for l in &lines {
        assert_eq!(l["top_k"].as_array().unwrap().len(), 3);
        assert_eq!(l["preprocess"], "caffe");
        assert_eq!(l["model"], "alexnet-tf");
    }
    // --fail-fast stops at the first bad file
    let (code, _, err) = alexvgg(&[
        "classify",
        "--weights",
        weights.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--fail-fast",
        image("broken.png").to_str().unwrap(),
        image("cat_rgb.png").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--fail-fast"), "{err}");
}

#[test]
fn cli_errors_are_clear_and_never_panics() {
    let weights = fixture("alexnet_tf_w8.py2.npy");
    let w = weights.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["classify", "--weights", w, "--device", "tpu", "x.png"],
            "unknown device 'tpu'",
        ),
        (vec!["classify", "--weights", w, "x.png"], "pass --labels"),
        (
            vec!["classify", "--weights", "no-such-weights", "x.png"],
            "neither an existing file nor a known weights name",
        ),
        (
            vec!["classify", "--model", "vgg16", "--weights", w, "x.png"],
            "looks like AlexNet",
        ),
        (
            vec!["classify", "--weights", w, "--preprocess", "magic", "x.png"],
            "unknown --preprocess 'magic'",
        ),
        (
            vec!["classify", "--batch-size", "0", "x.png"],
            "--batch-size",
        ),
        (vec!["classify", "x.png"], "downloading bvlc_alexnet"),
        (
            vec!["layers", "--model", "alexnet", "--variant", "keras"],
            "unknown AlexNet variant 'keras'",
        ),
        (vec!["inspect", "Cargo.toml"], "Cargo.toml"),
        (vec!["fetch", "nosuch"], "known: bvlc_alexnet"),
        (vec!["bench", "--batch-size", "x"], "invalid value 'x'"),
        (
            vec!["bench", "--conv", "fft"],
            "invalid value 'fft' for '--conv",
        ),
        (
            vec!["classify", "--engine", "onnx", "x.png"],
            "invalid value 'onnx' for '--engine",
        ),
        (
            vec!["bench", "--train", "--engine", "kernels"],
            "--engine kernels is inference only",
        ),
    ];
    for (args, expected) in cases {
        let (code, _, err) = alexvgg(&args);
        assert_ne!(code, 0, "{args:?} succeeded");
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    }
}

#[test]
fn inspect_reports_the_stored_element_types() {
    let dtypes = |file: &str| -> Vec<(String, String)> {
        let (code, out, err) = alexvgg(&["inspect", "--json", fixture(file).to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_string(),
                    t["dtype"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let layouts = dtypes("layouts.npz");
    for (name, dtype) in [
        ("big_endian", "float32 big-endian"),
        ("fortran_f64", "float64"),
        ("half", "float16"),
    ] {
        assert!(
            layouts.contains(&(name.to_string(), dtype.to_string())),
            "{name} should be {dtype}: {layouts:?}"
        );
    }
    assert!(
        dtypes("vgg16_w16.safetensors")
            .iter()
            .all(|(_, d)| d == "float32")
    );
}

#[test]
fn fetch_lists_the_known_weights() {
    let (code, out, err) = alexvgg(&["fetch", "--list"]);
    assert_eq!(code, 0, "{err}");
    for name in [
        "bvlc_alexnet",
        "bvlc_alexnet_caffe",
        "vgg16_frossard",
        "vgg16_caffe",
        "alexnet_torchvision",
        "vgg16_torchvision",
    ] {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
    assert!(
        out.contains("sha1 9116a64c0fbe4459d18f4bb6b56d647b63920377"),
        "{out}"
    );
    assert!(out.contains("checked by structure"), "{out}");
}

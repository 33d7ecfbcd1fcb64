//! The weight importer: original file layouts, conversion, and clear errors for bad files.
//!
//! Fixtures are the workspace's `tests/fixtures/`.

#[path = "../../../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/common/support.rs"]
mod support;

use alexvgg_import::numpy::unpickle;
use alexvgg_import::{
    Format, ImportError, load_model, load_module, read_burnpack, read_for, read_tensors,
    write_burnpack,
};
use alexvgg_models::{AlexNetVariant, Architecture, NetworkShape, VggDepth};
use burn::tensor::Device;
use fixtures::*;
use support::*;

/// Models are built on burn's flex CPU backend.
fn cpu() -> Device {
    Device::flex()
}

const TF: Architecture = Architecture::AlexNet(AlexNetVariant::Tf);
const VGG16: Architecture = Architecture::Vgg {
    depth: VggDepth::Vgg16,
    batch_norm: false,
};

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("alexvgg-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn bvlc_alexnet_npy_as_python2_wrote_it() {
    let path = fixture("alexnet_tf_w8.py2.npy");
    let (format, map) = read_tensors(&path).unwrap();
    assert_eq!(format, Format::Npy);
    // caffe-tensorflow layout: conv2 is HWIO with input channels split by the 2 groups
    assert_eq!(map["conv2_W"].shape, vec![5, 5, 6, 32]);
    assert_eq!(map["fc6_W"].shape, vec![32 * 36, 64]);
    let device = cpu();
    let (model, shape, _) = load_model(&path, &TF, &device).unwrap();
    assert_eq!(
        shape,
        NetworkShape {
            num_classes: 10,
            hidden: 64,
            width_divisor: 8
        }
    );
    check_activations(&model, "alexnet_tf_w8", 227, &device, 1e-4, "py2 npy");
}

#[test]
fn npy_as_current_numpy_writes_it() {
    let device = cpu();
    let (model, _, format) = load_model(&fixture("alexnet_tf_w8.py3.npy"), &TF, &device).unwrap();
    assert_eq!(format, Format::Npy);
    check_activations(&model, "alexnet_tf_w8", 227, &device, 1e-4, "py3 npy");
}

#[test]
fn frossard_vgg16_npz() {
    let device = cpu();
    let (model, _, format) = load_model(&fixture("vgg16_w16.npz"), &VGG16, &device).unwrap();
    assert_eq!(format, Format::Npz);
    check_activations(&model, "vgg16_w16", 224, &device, 1e-4, "npz");
}

#[test]
fn convert_once_then_load_the_native_file() {
    let device = cpu();
    let (model, shape, _) = load_model(&fixture("alexnet_tf_w8.py2.npy"), &TF, &device).unwrap();
    let out = tmp("alexnet_tf.bpk");
    write_burnpack(&model, &TF, &shape, &out).unwrap();
    let (arch, stored, _) = read_burnpack(&out).unwrap();
    assert_eq!(arch, Some(TF));
    assert_eq!(stored, Some(shape));
    let (loaded, _, format) = load_model(&out, &TF, &device).unwrap();
    assert_eq!(format, Format::Burnpack);
    check_activations(&loaded, "alexnet_tf_w8", 227, &device, 1e-4, "burnpack");
    // `convert` writes straight from the file's tensors, checked against the network first
    let out2 = tmp("alexnet_tf_direct.bpk");
    let (format, shape2) =
        alexvgg_import::convert(&fixture("alexnet_tf_w8.py3.npy"), &TF, &out2, &device).unwrap();
    assert_eq!((format, shape2), (Format::Npy, shape));
    let (loaded, _, _) = load_model(&out2, &TF, &device).unwrap();
    check_activations(
        &loaded,
        "alexnet_tf_w8",
        224 + 3,
        &device,
        1e-4,
        "converted",
    );
    assert!(
        alexvgg_import::convert(
            &fixture("alexnet_tf_w8.py3.npy"),
            &VGG16,
            &tmp("no.bpk"),
            &device
        )
        .is_err()
    );
    assert!(
        !tmp("no.bpk").exists() && !tmp("no.partial").exists(),
        "no output after a failed conversion"
    );
    // a converted file remembers its network
    let err = load_model(&out, &VGG16, &device).unwrap_err();
    assert!(matches!(err, ImportError::WrongNetwork { .. }), "{err}");
}

#[test]
fn a_file_for_another_network_says_so() {
    let err = read_for(&fixture("vgg16_w16.safetensors"), &TF).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("looks like VGG") && msg.contains("AlexNet (tf)"),
        "{msg}"
    );
    let err = read_for(&fixture("alexnet_torchvision_w8.safetensors"), &TF).unwrap_err();
    assert!(err.to_string().contains("torchvision"), "{err}");
    let err = read_for(&fixture("alexnet_tf_w8.py2.npy"), &VGG16).unwrap_err();
    assert!(err.to_string().contains("AlexNet"), "{err}");
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_listed() {
    let path = fixture("alexnet_caffe_w8.safetensors");
    let caffe = Architecture::AlexNet(AlexNetVariant::Caffe);
    let (_, mut map) = read_for(&path, &caffe).unwrap();
    map.remove("convs.2.conv.bias");
    map.get_mut("fc7.weight").unwrap().shape = vec![32, 128];
    map.insert("extra.weight".into(), map["convs.0.conv.bias"].clone());
    let model = caffe
        .init(
            &NetworkShape {
                num_classes: 10,
                hidden: 64,
                width_divisor: 8,
            },
            &cpu(),
        )
        .unwrap();
    let msg = load_module(model, map, "test", "AlexNet (caffe)")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing: convs.2.conv.bias [48]"), "{msg}");
    assert!(
        msg.contains("shape mismatch: fc7.weight: expected [64, 64], found [32, 128]"),
        "{msg}"
    );
    assert!(msg.contains("unexpected: extra.weight"), "{msg}");
}

#[test]
fn truncated_and_corrupt_files_are_errors_not_panics() {
    for name in [
        "alexnet_tf_w8.py2.npy",
        "alexnet_tf_w8.py3.npy",
        "vgg16_w16.npz",
        "alexnet_caffe_w8.safetensors",
        "alexnet_torchvision_w8.pth",
        "vgg11_bn_w16.legacy.pth",
        "alexnet_caffe_w8.caffemodel",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for cut in [12usize, 100, bytes.len() / 2, bytes.len() - 3] {
            let path = tmp(&format!("cut{cut}-{name}"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let arch = match name {
                n if n.contains("caffe") => Architecture::AlexNet(AlexNetVariant::Caffe),
                n if n.contains("torchvision") => {
                    Architecture::AlexNet(AlexNetVariant::Torchvision)
                }
                n if n.contains("bn") => Architecture::Vgg {
                    depth: VggDepth::Vgg11,
                    batch_norm: true,
                },
                n if n.starts_with("vgg") => VGG16,
                _ => TF,
            };
            match load_model(&path, &arch, &cpu()) {
                Ok(_) => panic!("{name} cut at {cut} loaded"),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
    let path = tmp("garbage.bin");
    std::fs::write(&path, b"this is not a weight file at all").unwrap();
    let err = read_tensors(&path).unwrap_err();
    assert!(err.to_string().contains("garbage.bin"), "{err}");
    let err = read_tensors(&tmp("does-not-exist.npy")).unwrap_err();
    assert!(matches!(err, ImportError::Io { .. }), "{err}");
}

#[test]
fn pickles_may_only_build_arrays() {
    // protocol 2: GLOBAL 'os system', then REDUCE — must be refused before anything runs
    let evil = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
    let err = unpickle(evil, "evil.npy").unwrap_err();
    assert!(
        matches!(&err, ImportError::ForbiddenGlobal { global, .. } if global == "os.system"),
        "{err}"
    );
    // protocol 4 STACK_GLOBAL with builtins.eval
    let evil4 = b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94.";
    let err = unpickle(evil4, "evil.npy").unwrap_err();
    assert!(err.to_string().contains("builtins.eval"), "{err}");
}

#[test]
fn torchvision_pth_zip_and_legacy_formats() {
    let device = cpu();
    let tv = Architecture::AlexNet(AlexNetVariant::Torchvision);
    let (model, _, format) =
        load_model(&fixture("alexnet_torchvision_w8.pth"), &tv, &device).unwrap();
    assert_eq!(format, Format::Pytorch);
    check_activations(
        &model,
        "alexnet_torchvision_w8",
        224,
        &device,
        1e-4,
        "pth zip",
    );
    let bn = Architecture::Vgg {
        depth: VggDepth::Vgg11,
        batch_norm: true,
    };
    let (model, _, format) = load_model(&fixture("vgg11_bn_w16.legacy.pth"), &bn, &device).unwrap();
    assert_eq!(format, Format::Pytorch);
    check_activations(&model, "vgg11_bn_w16", 224, &device, 1e-4, "pth legacy");
    // the LRN AlexNet cannot take torchvision's weights
    let err = load_model(&fixture("alexnet_torchvision_w8.pth"), &TF, &device).unwrap_err();
    assert!(matches!(err, ImportError::WrongNetwork { .. }), "{err}");
}

#[test]
fn timm_vgg16_with_a_convolutional_classifier() {
    let device = cpu();
    let (_, map) = read_tensors(&fixture("vgg16_w16.timm.safetensors")).unwrap();
    assert_eq!(map["pre_logits.fc1.weight"].shape, vec![64, 32, 7, 7]);
    let (model, _, _) =
        load_model(&fixture("vgg16_w16.timm.safetensors"), &VGG16, &device).unwrap();
    check_activations(&model, "vgg16_w16", 224, &device, 1e-4, "timm");
}

#[test]
fn numpy_layouts_big_endian_fortran_half_and_codecs_pickles() {
    let map = alexvgg_import::read_npz(&fixture("layouts.npz")).unwrap();
    assert_eq!(map["big_endian"].data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(map["fortran_f64"].shape, vec![2, 3]);
    assert_eq!(
        map["fortran_f64"].data,
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        "C order after Fortran"
    );
    assert_eq!(map["half"].data, vec![0.0, 1.0, 2.0, 3.0]);
    let map = alexvgg_import::read_npy(&fixture("codecs_proto2.npy")).unwrap();
    assert_eq!(map["conv1_W"].shape, vec![2, 3, 1, 4]);
    assert_eq!(
        map["conv1_W"].data,
        (0..24).map(|v| v as f32).collect::<Vec<_>>()
    );
    assert_eq!(map["conv1_b"].data, vec![1.5, -2.0]);
}

#[test]
fn caffemodels_in_v2_and_v1_layouts() {
    let device = cpu();
    let caffe = Architecture::AlexNet(AlexNetVariant::Caffe);
    let (model, _, format) =
        load_model(&fixture("alexnet_caffe_w8.caffemodel"), &caffe, &device).unwrap();
    assert_eq!(format, Format::Caffemodel);
    check_activations(
        &model,
        "alexnet_caffe_w8",
        227,
        &device,
        1e-4,
        "caffemodel v2",
    );
    let (_, map) = read_tensors(&fixture("vgg16_w16.v1.caffemodel")).unwrap();
    assert_eq!(
        map["fc6.weight"].shape,
        vec![64, 32 * 49],
        "legacy (1, 1, out, in) becomes [out, in]"
    );
    assert_eq!(map["conv1_1.bias"].shape, vec![4]);
    let (model, _, _) = load_model(&fixture("vgg16_w16.v1.caffemodel"), &VGG16, &device).unwrap();
    check_activations(&model, "vgg16_w16", 224, &device, 1e-4, "caffemodel v1");
    let err = load_model(&fixture("vgg16_w16.v1.caffemodel"), &caffe, &device).unwrap_err();
    assert!(err.to_string().contains("looks like VGG"), "{err}");
}

#[test]
fn self_referencing_pickles_are_refused_not_leaked() {
    // found by the `pickle` fuzz target: a dict memoised, fetched back and stored into itself
    let cyclic = b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.";
    let err = unpickle(cyclic, "cycle.npy").unwrap_err();
    assert!(err.to_string().contains("recursive container"), "{err}");
    let list_cycle = b"\x80\x02]q\x00h\x00a.";
    assert!(unpickle(list_cycle, "cycle.npy").is_err());
}

#[test]
fn the_note_s_npy_and_the_caffe_release_hold_the_same_tensors() {
    // bvlc_alexnet.npy is bvlc_alexnet.caffemodel converted by caffe-tensorflow (conv HWIO,
    // fc [in, out], fc6 rows (h, w, c)); the fixtures hold the same seeded weights both ways
    let device = cpu();
    let tf = Architecture::AlexNet(AlexNetVariant::Tf);
    let (from_npy, _, npy) = load_model(&fixture("alexnet_tf_w8.py2.npy"), &tf, &device).unwrap();
    let (from_caffe, _, caffe) =
        load_model(&fixture("alexnet_tf_w8.caffemodel"), &tf, &device).unwrap();
    assert_eq!((npy, caffe), (Format::Npy, Format::Caffemodel));
    let a = alexvgg_import::module_tensors(&from_npy).unwrap();
    let b = alexvgg_import::module_tensors(&from_caffe).unwrap();
    assert_eq!(a.len(), 16);
    assert_eq!(a, b, "bit-identical tensors");
}

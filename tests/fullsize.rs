//! Full-size weight files in every format, written by the real tools, loaded into the
//! full-size networks and compared with TensorFlow's and PyTorch's outputs.
//!
//! Slow and large (about 3.5 GB of files, generated once), so ignored by default:
//!
//! ```sh
//! cargo test --release --test fullsize -- --ignored --nocapture
//! ```
//! The files go to `$ALEXVGG_FULLSIZE_DIR` (default `target/fullsize`); when missing they are
//! made with `scripts/make_fullsize.py`, run by `$ALEXVGG_PYTHON` (default `python3`, which
//! needs torch, torchvision, tensorflow-cpu, safetensors, protobuf, pillow, scikit-image).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use alexvgg::cpu::{Activation, Engine};
use alexvgg::import::{RawTensor, TensorMap, convert, load_model, read_safetensors};
use alexvgg::models::{AlexNetVariant, Architecture, VggDepth};
use burn::tensor::{Tensor, TensorData};
use common::{assert_close, cpu, values};

fn files() -> PathBuf {
    let dir = std::env::var_os("ALEXVGG_FULLSIZE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fullsize"));
    if !dir.join("done").is_file() {
        let python = std::env::var("ALEXVGG_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/make_fullsize.py");
        eprintln!(
            "generating full-size files in {} with {python}",
            dir.display()
        );
        let status = std::process::Command::new(&python)
            .arg(&script)
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| panic!("running {python}: {e}"));
        assert!(status.success(), "{} failed", script.display());
    }
    dir
}

fn read(dir: &std::path::Path, name: &str) -> TensorMap {
    read_safetensors(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
#[ignore = "generates 3.5 GB of full-size weight files; see the module docs"]
fn every_full_size_format_loads_and_matches_the_reference() {
    let dir = files();
    let inputs = read(&dir, "inputs.safetensors");
    let tf = Architecture::AlexNet(AlexNetVariant::Tf);
    let caffe = Architecture::AlexNet(AlexNetVariant::Caffe);
    let tv = Architecture::AlexNet(AlexNetVariant::Torchvision);
    let vgg16 = Architecture::Vgg {
        depth: VggDepth::Vgg16,
        batch_norm: false,
    };
    let cases = [
        ("bvlc_alexnet.npy", tf, "alexnet_tf_w1"),
        ("bvlc_alexnet.py3.npy", tf, "alexnet_tf_w1"),
        ("bvlc_alexnet.caffemodel", caffe, "alexnet_caffe_w1"),
        ("alexnet-owt.pth", tv, "alexnet_torchvision_w1"),
        ("vgg16_weights.npz", vgg16, "vgg16_w1"),
        ("vgg16.pth", vgg16, "vgg16_w1"),
        ("vgg16.tv_in1k.safetensors", vgg16, "vgg16_w1"),
        ("VGG_ILSVRC_16_layers.caffemodel", vgg16, "vgg16_w1"),
    ];
    let device = cpu();
    for (file, arch, stem) in cases {
        let path = dir.join(file);
        let acts = read(&dir, &format!("{stem}.activations.safetensors"));
        let side = arch.input_size();
        let input: &RawTensor = &inputs[&format!("input{side}")];
        let check = |model: &alexvgg::models::Model, what: &str| {
            let x = Tensor::<4>::from_data(
                TensorData::new(input.data.clone(), input.shape.clone()),
                &device,
            );
            let mut fc7 = Vec::new();
            let logits = model.forward_observed(x, &mut |name, t| {
                if name == "fc7" {
                    fc7 = values(t.clone());
                }
            });
            assert_eq!(logits.dims()[1], 1000);
            assert_close(&format!("{what}: fc7"), &fc7, &acts["act.fc7"].data, 1e-4);
            assert_close(
                &format!("{what}: logits"),
                &values(logits),
                &acts["act.fc8"].data,
                1e-4,
            );
        };
        let started = Instant::now();
        let (model, shape, format) =
            load_model(&path, &arch, &device).unwrap_or_else(|e| panic!("{file}: {e}"));
        let loaded = started.elapsed().as_secs_f64();
        assert_eq!(
            (shape.num_classes, shape.hidden, shape.width_divisor),
            (1000, 4096, 1)
        );
        check(&model, file);
        // the CPU engine compiled from the same model (Winograd at full width)
        let engine = Engine::from_model(model).unwrap_or_else(|e| panic!("{file}: {e}"));
        let dims: [usize; 4] = input.shape.clone().try_into().unwrap();
        let mut fc7 = Vec::new();
        let logits = engine
            .forward_observed(&input.data, dims, &mut |name, act| {
                if let ("fc7", Activation::Vector { data, .. }) = (name, act) {
                    fc7 = data.to_vec();
                }
            })
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_close(
            &format!("{file} engine: fc7"),
            &fc7,
            &acts["act.fc7"].data,
            1e-4,
        );
        assert_close(
            &format!("{file} engine: logits"),
            &logits,
            &acts["act.fc8"].data,
            1e-4,
        );
        drop(engine);
        // converted once, the native file gives the same network
        let bpk = dir.join(format!("{file}.bpk"));
        convert(&path, &arch, &bpk, &device).unwrap_or_else(|e| panic!("{file}: {e}"));
        let started = Instant::now();
        let (model, _, _) = load_model(&bpk, &arch, &device).unwrap();
        let loaded_bpk = started.elapsed().as_secs_f64();
        check(&model, &format!("{file} converted"));
        std::fs::remove_file(&bpk).unwrap();
        eprintln!(
            "{file:<34} {:<12} {} matches; loaded in {loaded:.2} s, converted .bpk in {loaded_bpk:.2} s",
            format.name(),
            arch.describe()
        );
    }
}

//! Classify an image with the library API in a screenful.
//!
//! ```sh
//! cargo run --release --example classify -- WEIGHTS IMAGE [LABELS]
//! # e.g. the note's AlexNet with bvlc_alexnet.npy:
//! cargo run --release --example classify -- ~/.cache/alexvgg/bvlc_alexnet.npy examples/images/chelsea.png
//! ```

use std::path::PathBuf;

use alexvgg::classify::{prepare, probabilities, top_k};
use alexvgg::device::make_device;
use alexvgg::import::load_model;
use alexvgg::labels::{imagenet, read_labels};
use alexvgg::models::{AlexNetVariant, Architecture};
use alexvgg::preprocess::Preset;
use alexvgg::runner::{ConvChoice, EngineKind, Runner};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, image, rest @ ..] = &args[..] else {
        anyhow::bail!("usage: classify WEIGHTS IMAGE [LABELS]");
    };
    let (backend, device) = make_device(None)?; // ALEXVGG_DEVICE or the default CPU backend
    let arch = Architecture::AlexNet(AlexNetVariant::Tf);
    let (model, _, _) = load_model(&PathBuf::from(weights), &arch, &device)?;
    // the CPU engine on CPU backends, the burn model on wgpu
    let runner = Runner::new(model, &device, backend, EngineKind::Auto, ConvChoice::Auto)?;
    let classes = match rest.first() {
        Some(path) => read_labels(path.as_ref())?,
        None => imagenet(),
    };
    // Caffe-trained weights: BGR, 0..255, minus the BGR mean; shorter side 256, centre crop 227.
    let input = prepare(&[PathBuf::from(image)], Preset::Caffe, arch.input_size()).remove(0)?;
    let probs = probabilities(&runner, &[input], arch.input_size())?.remove(0);
    for p in top_k(&probs, 5, &classes) {
        println!("{:<40} {:.4}", p.label, p.probability);
    }
    Ok(())
}

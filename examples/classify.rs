//! Classify images with the library crates alone (no CLI package needed in your own crate:
//! depend on `alexvgg-inference` and `alexvgg-models`).
//!
//! ```sh
//! cargo run --release --example classify -- WEIGHTS IMAGE...
//! # WEIGHTS: a known name (fetched on first use), a weight file, or a fine-tuning directory:
//! cargo run --release --example classify -- bvlc_alexnet examples/images/chelsea.png
//! cargo run --release --example classify -- tests/fixtures/alexnet_tf_w8.py2.npy examples/images/chelsea.png
//! ```

use std::path::PathBuf;

use alexvgg_inference::classify::{prepare, probabilities, top_k};
use alexvgg_inference::device::make_device;
use alexvgg_inference::pretrained::Pretrained;
use alexvgg_inference::runner::Runner;
use alexvgg_models::{AlexNetVariant, Architecture};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, images @ ..] = &args[..] else {
        return Err("usage: classify WEIGHTS IMAGE...".into());
    };
    let (backend, device) = make_device(None)?; // ALEXVGG_DEVICE or the default CPU backend
    // the weights bring their network (files: the note's AlexNet), preprocessing and classes
    let p = Pretrained::load(
        Some(weights),
        Architecture::AlexNet(AlexNetVariant::Tf),
        &device,
    )?;
    // class names: the weights' own; a file with another number of classes gets numbered ones
    let classes = p.labels(None).unwrap_or_default();
    let (side, preset) = (p.arch.input_size(), p.preset);
    // the CPU engine on CPU backends, the burn model on wgpu
    let runner = Runner::auto(p.model, &device, backend)?;
    let paths: Vec<PathBuf> = images.iter().map(PathBuf::from).collect();
    for (path, input) in paths.iter().zip(prepare(&paths, preset, side)) {
        let probs = probabilities(&runner, &[input?], side)?.remove(0);
        println!("{} ({})", path.display(), preset.name());
        for t in top_k(&probs, 5, &classes) {
            println!("  {:<40} {:.4}", t.label, t.probability);
        }
    }
    Ok(())
}

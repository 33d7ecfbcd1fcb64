//! Fine-tune with the library API: write a synthetic image folder, train a reduced-width AlexNet
//! on it, and classify one of its images with the result.
//!
//! ```sh
//! cargo run --release --example finetune            # a few seconds on two cores
//! cargo run --release --example finetune -- WEIGHTS  # start from a weight file instead
//! ```
//! The command-line equivalent is `alexvgg make-dataset` + `alexvgg finetune` (see README).

use alexvgg_inference::classify::{prepare, probabilities, top_k};
use alexvgg_inference::device::make_device;
use alexvgg_inference::preprocess::Augment;
use alexvgg_inference::pretrained::Pretrained;
use alexvgg_inference::runner::Runner;
use alexvgg_models::{AlexNetVariant, Architecture};
use alexvgg_train::data::ValSource;
use alexvgg_train::synth::make_dataset;
use alexvgg_train::{Event, Freeze, LrSchedule, OptimizerKind, OptimizerSettings, RunConfig, run};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let weights = std::env::args().nth(1); // None: random initialisation
    let dir = std::env::temp_dir().join("alexvgg-finetune-example");
    let _ = std::fs::remove_dir_all(&dir);
    make_dataset(&dir.join("data"), 4, 40, 64, 0)?;

    let scratch = weights.is_none();
    let config = RunConfig {
        architecture: Architecture::AlexNet(AlexNetVariant::Tf),
        weights,
        data: dir.join("data"),
        val: ValSource::Split(0.25),
        epochs: 6,
        batch_size: 16,
        lr: 2e-3,
        optimizer: OptimizerSettings {
            kind: OptimizerKind::Adam,
            momentum: 0.0,
            weight_decay: 1e-4,
        },
        schedule: LrSchedule::Cosine { min_lr: 1e-5 },
        freeze: Freeze::None,
        seed: 0,
        augment: Some(Augment {
            scale: (0.5, 1.0),
            ..Augment::default()
        }),
        dropout: Some(0.1),
        preprocess: None,
        // a reduced network when training from scratch: 1/8 of the channels, fc6/fc7 of 64
        hidden: scratch.then_some(64),
        width_divisor: scratch.then_some(8),
        checkpoint_every: 0,
    };
    let (backend, device) = make_device(None)?;
    let out = dir.join("run");
    run(Some(&config), &out, &device, &mut |e| {
        if let Event::Epoch(m) = e {
            println!(
                "epoch {}: train loss {:.3}, val top-1 {:.0}%, {:.0} images/s",
                m.epoch,
                m.train_loss,
                100.0 * m.val_top1,
                m.images_per_s
            );
        }
    })?;

    // the output directory is a model: architecture, preprocessing and class names included
    let tuned = Pretrained::load(out.to_str(), config.architecture, &device)?;
    let classes = tuned.labels(None)?;
    let (side, preset) = (tuned.arch.input_size(), tuned.preset);
    let runner = Runner::auto(tuned.model, &device, backend)?;
    let image = dir.join("data/blue_triangle/0000.png");
    let input = prepare(std::slice::from_ref(&image), preset, side).remove(0)?;
    let probs = probabilities(&runner, &[input], side)?.remove(0);
    println!("{}:", image.display());
    for p in top_k(&probs, 2, &classes) {
        println!("  {:<16} {:.3}", p.label, p.probability);
    }
    Ok(())
}

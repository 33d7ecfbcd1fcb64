//! Fine-tune with the library API: write a synthetic image folder, train a reduced-width AlexNet
//! on it, and classify one of its images with the result.
//!
//! ```sh
//! cargo run --release --example finetune            # a few seconds on two cores
//! cargo run --release --example finetune -- WEIGHTS  # start from a weight file instead
//! ```
//! The command-line equivalent is `alexvgg make-dataset` + `alexvgg finetune` (see README).

use alexvgg::classify::{prepare, probabilities, top_k};
use alexvgg::device::make_device;
use alexvgg::finetune::data::ValSource;
use alexvgg::finetune::synth::make_dataset;
use alexvgg::finetune::{
    Event, Freeze, LrSchedule, OptimizerKind, OptimizerSettings, RunConfig, open_finetuned, run,
};
use alexvgg::import::load_model;
use alexvgg::labels::Class;
use alexvgg::preprocess::Augment;
use alexvgg::runner::{ConvChoice, EngineKind, Runner};

fn main() -> anyhow::Result<()> {
    let weights = std::env::args().nth(1); // None: random initialisation
    let dir = std::env::temp_dir().join("alexvgg-finetune-example");
    let _ = std::fs::remove_dir_all(&dir);
    make_dataset(&dir.join("data"), 4, 40, 64, 0)?;

    let scratch = weights.is_none();
    let config = RunConfig {
        architecture: "alexnet-tf".to_string(),
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
    let tuned = open_finetuned(&out)?.expect("a fine-tuning output directory");
    let (model, _, _) = load_model(&tuned.weights, &tuned.arch, &device)?;
    let runner = Runner::new(model, &device, backend, EngineKind::Auto, ConvChoice::Auto)?;
    let image = dir.join("data/blue_triangle/0000.png");
    let side = tuned.arch.input_size();
    let input = prepare(std::slice::from_ref(&image), tuned.preset, side).remove(0)?;
    let probs = probabilities(&runner, &[input], side)?.remove(0);
    let classes: Vec<Class> = tuned
        .classes
        .iter()
        .map(|c| Class {
            synset: None,
            label: c.clone(),
        })
        .collect();
    println!("{}:", image.display());
    for p in top_k(&probs, 2, &classes) {
        println!("  {:<16} {:.3}", p.label, p.probability);
    }
    Ok(())
}

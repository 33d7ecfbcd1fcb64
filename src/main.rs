//! The `alexvgg` command line: one module per subcommand in `cli/`, the work in the library
//! crates.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::bench::{BenchArgs, BenchLrnArgs};
use cli::classify::ClassifyArgs;
use cli::convert::ConvertArgs;
use cli::explain::ExplainArgs;
use cli::features::FeaturesArgs;
use cli::fetch::FetchArgs;
use cli::finetune::FinetuneArgs;
use cli::inspect::InspectArgs;
use cli::layers::LayersArgs;
use cli::make_dataset::MakeDatasetArgs;
use cli::params::ParamsArgs;
use cli::plot::PlotArgs;
use cli::tune::TuneArgs;
use cli::visualize::VisualizeArgs;

/// AlexNet (LRN, grouped convolutions) and VGG on burn, with the original weights.
#[derive(Parser)]
#[command(name = "alexvgg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the per-layer table (output size, window, groups, parameters, multiply-adds).
    Layers(LayersArgs),
    /// List every parameter tensor with its burn shape and the note's TensorFlow name/shape.
    Params(ParamsArgs),
    /// Classify images (files or folders) with pretrained weights; prints the top-k classes.
    Classify(ClassifyArgs),
    /// Write the activations of named layers for images (`.npy` / `.safetensors`).
    Features(Box<FeaturesArgs>),
    /// Pictures: the first layer's filters, or one image's activation maps at a layer.
    Visualize(VisualizeArgs),
    /// Why the network chose a class: Grad-CAM or saliency maps over the images (PNG), and
    /// the raw maps (`.npy`).
    Explain(Box<ExplainArgs>),
    /// Time forward passes on a device.
    Bench(BenchArgs),
    /// Time local response normalization: ours (one pass), burn's, and 2r+1 slices, by radius.
    BenchLrn(BenchLrnArgs),
    /// Time every kernel that can compute each convolution of a network on this machine
    /// (batch 1 and 8) and record the fastest for the CPU engine.
    Tune(TuneArgs),
    /// Convert a weight file once into burn's native format (fast to load).
    Convert(ConvertArgs),
    /// Fine-tune on an image folder (one sub-folder per class): new head, frozen layers,
    /// augmentation, checkpoints, metrics; `--resume` continues an interrupted run.
    Finetune(Box<FinetuneArgs>),
    /// Redraw a fine-tuning run's training curves (loss and top-1 per epoch) as a PNG.
    Plot(PlotArgs),
    /// Write a synthetic image folder (classes of distinct shapes, textures and colours).
    MakeDataset(MakeDatasetArgs),
    /// Download known weights into the cache (resuming an interrupted download), verify them
    /// and convert them to burnpack; `--list` prints the table of known weights.
    Fetch(FetchArgs),
    /// List the tensors of a weight file (name, dtype, shape) without building a model.
    Inspect(InspectArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // help and version go to stdout with success; every usage error exits 1, like
            // every other error of this program
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Layers(a) => cli::layers::run(a),
        Command::Params(a) => cli::params::run(a),
        Command::Classify(a) => cli::classify::run(a),
        Command::Features(a) => cli::features::run(*a),
        Command::Visualize(a) => cli::visualize::run(a),
        Command::Explain(a) => cli::explain::run(*a),
        Command::Bench(a) => cli::bench::run(a),
        Command::BenchLrn(a) => cli::bench::run_lrn(a),
        Command::Tune(a) => cli::tune::run(a),
        Command::Convert(a) => cli::convert::run(a),
        Command::Finetune(a) => cli::finetune::run(*a),
        Command::Plot(a) => cli::plot::run(a),
        Command::MakeDataset(a) => cli::make_dataset::run(a),
        Command::Fetch(a) => cli::fetch::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
    };
    // what is still buffered must reach its reader too (a full disk shows here at the latest)
    let result = result.and_then(|()| cli::flush_stdout());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // the reader stopped reading (`| head -1`): nothing more to say, and no failure
        Err(e) if e.downcast_ref::<cli::StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

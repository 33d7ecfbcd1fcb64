//! The alexvgg inference library: everything between a weight file and a prediction, without
//! a command line.
//!
//! - [`device`]: the one place that turns a device choice into a burn `Device`;
//! - [`preprocess`]: the preprocessing presets that belong to each set of weights;
//! - [`labels`]: ImageNet's classes, or a labels file;
//! - [`weights`]: the table of known weights (network, preprocessing, classes, sources) and
//!   the verified download cache (`download` feature, on by default);
//! - [`pretrained`]: one call from a weights name, file or fine-tuning directory to a ready
//!   model with its preprocessing and class list;
//! - [`runner`]: one way to run inference (the `alexvgg-cpu` engine on CPUs, burn elsewhere);
//! - [`classify`]: image files and folders in, top-k classes out;
//! - [`features`]: named activations of any layers, pooled or not;
//! - [`pictures`]: the first layer's filters and a layer's activation maps as image grids;
//! - [`explain`]: Grad-CAM and saliency maps (burn's autodiff) of a prediction;
//! - [`overlay`]: an explanation's picture (heat map over the image, colour bar, class);
//! - [`plot`]: a fine-tuning run's training curves (loss and top-1 per epoch) as a PNG;
//! - [`tables`]: the per-layer and parameter tables;
//! - [`memory`]: inference batches checked against the machine's memory before allocation;
//! - [`files`]: checks before writing a converted weight file;
//! - [`bench`]: honest inference benchmarks;
//! - [`rng`]: the small seeded generator benchmarks and training share.
//!
//! ```no_run
//! use alexvgg_inference::{classify, device, pretrained::Pretrained, runner::Runner};
//! use alexvgg_models::{AlexNetVariant, Architecture};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (backend, dev) = device::make_device(Some("cpu"))?;
//! // a known name brings its network, preprocessing and classes (fetched on first use)
//! let arch = Architecture::AlexNet(AlexNetVariant::Tf);
//! let p = Pretrained::load(Some("bvlc_alexnet"), arch, &dev)?;
//! let classes = p.labels(None)?;
//! let (side, preset) = (p.arch.input_size(), p.preset);
//! let runner = Runner::auto(p.model, &dev, backend)?;
//! let images = classify::collect_images(&["examples/images".into()]);
//! for (path, image) in images.iter().zip(classify::prepare(&images, preset, side)) {
//!     let probs = classify::probabilities(&runner, &[image?], side)?;
//!     let top = classify::top_k(&probs[0], 5, &classes);
//!     println!("{}: {} ({:.3})", path.display(), top[0].label, top[0].probability);
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod bench;
pub mod classify;
pub mod device;
pub mod explain;
pub mod features;
pub mod files;
pub mod finetuned;
pub mod labels;
pub mod memory;
pub mod overlay;
pub mod pictures;
pub mod plot;
pub mod preprocess;
pub mod pretrained;
pub mod rng;
pub mod runner;
pub mod tables;
pub mod tuning;
pub mod weights;

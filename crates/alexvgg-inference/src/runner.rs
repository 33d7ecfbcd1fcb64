//! One way to run inference: the CPU engine of `alexvgg-cpu` on CPU devices, the burn model
//! elsewhere (and wherever asked for).

use alexvgg_cpu::{ConvAlgorithm, Engine, EngineError, EngineOptions};
use alexvgg_models::{Model, ModelError, host_values};
use burn::tensor::{Device, Tensor, TensorData};

use crate::device::Backend;

/// Which implementation runs the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// `kernels` on CPU backends (flex, ndarray), `burn` on wgpu.
    Auto,
    /// The burn model on the chosen backend.
    Burn,
    /// `alexvgg-cpu`: NHWC kernels with packed weights (CPU only; ignores the backend).
    Kernels,
}

/// How the CPU engine computes its convolutions (see [`ConvAlgorithm`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvChoice {
    /// Winograd where it pays, the direct kernel elsewhere.
    #[default]
    Auto,
    /// im2col + GEMM everywhere.
    Im2col,
    /// Winograd F(4x4, 3x3) / F(2x2, 5x5) for every stride-1 3x3 / 5x5 convolution.
    Winograd,
    /// Winograd F(2x2, 3x3) / F(2x2, 5x5) for every stride-1 3x3 / 5x5 convolution.
    WinogradSmall,
    /// The direct kernel (no patch matrix) for every convolution.
    Direct,
}

impl EngineKind {
    /// Every choice, in the order help lists them.
    pub const ALL: [EngineKind; 3] = [EngineKind::Auto, EngineKind::Burn, EngineKind::Kernels];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Auto => "auto",
            EngineKind::Burn => "burn",
            EngineKind::Kernels => "kernels",
        }
    }
}

impl ConvChoice {
    /// Every choice, in the order help lists them.
    pub const ALL: [ConvChoice; 5] = [
        ConvChoice::Auto,
        ConvChoice::Im2col,
        ConvChoice::Winograd,
        ConvChoice::WinogradSmall,
        ConvChoice::Direct,
    ];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ConvChoice::Auto => "auto",
            ConvChoice::Im2col => "im2col",
            ConvChoice::Winograd => "winograd",
            ConvChoice::WinogradSmall => "winograd-small",
            ConvChoice::Direct => "direct",
        }
    }
}

impl From<ConvChoice> for EngineOptions {
    fn from(c: ConvChoice) -> Self {
        EngineOptions {
            conv: match c {
                ConvChoice::Auto => ConvAlgorithm::Auto,
                ConvChoice::Im2col => ConvAlgorithm::Im2col,
                ConvChoice::Winograd => ConvAlgorithm::Winograd,
                ConvChoice::WinogradSmall => ConvAlgorithm::WinogradSmallTiles,
                ConvChoice::Direct => ConvAlgorithm::Direct,
            },
            input_size: None,
        }
    }
}

/// Errors of [`Runner`].
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The CPU engine was asked for on a GPU device.
    #[error("the CPU engine runs on the CPU only; the device is {0} (use the burn engine or auto)")]
    KernelsOnGpu(String),
    /// The CPU engine could not compile or run the model.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The burn model's output could not be read back.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Logits that are not `num_classes` values per image, with at least one class.
    #[error(
        "the network produced {values} logits for {batch} images, not one or more classes per image (an fc8 with 0 outputs?)"
    )]
    NoClasses {
        /// Logits produced.
        values: usize,
        /// Images in the batch.
        batch: usize,
    },
}

/// A network ready for inference.
#[derive(Debug)]
pub enum Runner {
    /// The burn model on its device.
    Burn {
        /// The model.
        model: Box<Model>,
        /// Its device.
        device: Device,
    },
    /// The compiled CPU engine (holds the only copy of the weights).
    Kernels(Engine),
}

impl Runner {
    /// Prepares `model` (already on `device`, of `backend`) for inference with `kind`; the CPU
    /// engine consumes the model and computes convolutions as `conv` says.
    ///
    /// # Errors
    /// [`RunnerError::KernelsOnGpu`] for `kernels` on wgpu, [`RunnerError::Engine`] when the
    /// model cannot be compiled.
    pub fn new(
        model: Model,
        device: &Device,
        backend: Backend,
        kind: EngineKind,
        conv: ConvChoice,
    ) -> Result<Self, RunnerError> {
        let cpu = backend != Backend::Wgpu;
        match (kind, cpu) {
            (EngineKind::Burn, _) | (EngineKind::Auto, false) => Ok(Runner::Burn {
                model: Box::new(model),
                device: device.clone(),
            }),
            (EngineKind::Kernels, false) => Err(RunnerError::KernelsOnGpu(backend.name().into())),
            (EngineKind::Auto | EngineKind::Kernels, true) => {
                Ok(Runner::Kernels(Engine::with_options(model, &conv.into())?))
            }
        }
    }

    /// [`new`](Self::new) with the automatic choices: the CPU engine on CPU backends with its
    /// own convolution choice, burn on wgpu.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn auto(model: Model, device: &Device, backend: Backend) -> Result<Self, RunnerError> {
        Self::new(model, device, backend, EngineKind::Auto, ConvChoice::Auto)
    }

    /// Short description for reports: `burn` or `alexvgg-cpu kernels`.
    pub fn describe(&self) -> &'static str {
        match self {
            Runner::Burn { .. } => "burn",
            Runner::Kernels(_) => "alexvgg-cpu kernels",
        }
    }

    /// Class logits.
    ///
    /// # Errors
    /// [`RunnerError::Engine`] for an input the engine's network cannot take (the burn model
    /// panics on those; callers check sizes first).
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]` row-major, as `dims`
    /// - output: `[batch, num_classes]` row-major
    pub fn logits(&self, input: Vec<f32>, dims: [usize; 4]) -> Result<Vec<f32>, RunnerError> {
        match self {
            Runner::Kernels(engine) => Ok(engine.forward(&input, dims)?),
            Runner::Burn { model, device } => {
                let x = Tensor::<4>::from_data(TensorData::new(input, dims), device);
                Ok(host_values(model.forward(x))?)
            }
        }
    }

    /// Softmax probabilities, one vector per image.
    ///
    /// # Errors
    /// As [`logits`](Self::logits); [`RunnerError::NoClasses`] for a network without classes.
    ///
    /// # Shapes
    /// - `input`: `[batch, 3, H, W]` row-major, as `dims`
    /// - output: `batch` vectors of `num_classes`
    pub fn probabilities(
        &self,
        input: Vec<f32>,
        dims: [usize; 4],
    ) -> Result<Vec<Vec<f32>>, RunnerError> {
        let batch = dims[0];
        let logits = self.logits(input, dims)?;
        if batch == 0 {
            return Ok(Vec::new());
        }
        let classes = logits.len() / batch;
        if classes == 0 || classes * batch != logits.len() {
            return Err(RunnerError::NoClasses {
                values: logits.len(),
                batch,
            });
        }
        Ok(logits.chunks(classes).map(softmax_row).collect())
    }
}

/// Numerically stable softmax of one row.
fn softmax_row(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| (e / sum) as f32).collect()
}

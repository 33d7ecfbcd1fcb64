//! One way to run inference: the CPU engine of `alexvgg-cpu` on CPU devices, the burn model
//! elsewhere (and wherever asked for).

use alexvgg_cpu::{ConvAlgorithm, Engine, EngineError, EngineOptions, LayerKernel, Simd};
use alexvgg_models::{Model, ModelError, host_values};
use burn::tensor::{Device, Tensor, TensorData};

use crate::device::Backend;

/// Which implementation runs the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// `kernels` on CPU backends (flex, ndarray) where the CPU has the engine's vector kernels
    /// (AVX2 + FMA or better) or its portable kernels were measured faster than burn
    /// ([`PORTABLE_ENGINE_BEATS_BURN`]); `burn` otherwise and on wgpu (see
    /// [`EngineKind::resolve`]).
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

/// Whether the engine's portable kernels (no AVX2) were measured faster than burn's CPU path,
/// which makes `auto` pick them on CPUs without AVX2 too. Measured with `ALEXVGG_SIMD=portable`
/// on the AMD EPYC development machine (2026-12-02, `docs/benchmarks.md`): 2.2-3.7x faster than
/// `--engine burn` on flex for AlexNet and VGG16 at batch 1 and 8. The `gemm` crate, under both,
/// kept its AVX2 kernels there; on a CPU without them both fall back to its scalar kernels, and
/// the engine's Winograd convolutions still do 2.25-4x fewer multiplications. Set this to
/// `false` if a CPU without AVX2 measures otherwise: `auto` then picks burn there.
pub const PORTABLE_ENGINE_BEATS_BURN: bool = true;

impl EngineKind {
    /// Every choice, in the order help lists them.
    pub const ALL: [EngineKind; 3] = [EngineKind::Auto, EngineKind::Burn, EngineKind::Kernels];

    /// What runs for this choice on a CPU backend (`cpu`) or not, with the engine's kernels at
    /// SIMD level `simd`: `auto` is the engine on CPU backends where `simd` has its vector
    /// kernels (or where the portable engine was measured faster than burn:
    /// [`PORTABLE_ENGINE_BEATS_BURN`]), burn otherwise; `burn` and `kernels` are themselves.
    pub fn resolve(self, cpu: bool, simd: Simd) -> EngineKind {
        match self {
            EngineKind::Auto if cpu && (simd.vector_kernels() || PORTABLE_ENGINE_BEATS_BURN) => {
                EngineKind::Kernels
            }
            EngineKind::Auto => EngineKind::Burn,
            other => other,
        }
    }

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
            simd: None,
            tuning: None,
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
        Self::with_simd(model, device, backend, kind, conv, Simd::current())
    }

    /// [`new`](Self::new) with the engine's kernels at SIMD level `simd` (for `auto`'s choice
    /// too, see [`EngineKind::resolve`]) instead of [`Simd::current`].
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_simd(
        model: Model,
        device: &Device,
        backend: Backend,
        kind: EngineKind,
        conv: ConvChoice,
        simd: Simd,
    ) -> Result<Self, RunnerError> {
        let cpu = backend != Backend::Wgpu;
        match (kind.resolve(cpu, simd), cpu) {
            (EngineKind::Kernels, false) => Err(RunnerError::KernelsOnGpu(backend.name().into())),
            (EngineKind::Kernels, true) => {
                // the machine's recorded kernel choices, for the automatic algorithm
                let tuning = (conv == ConvChoice::Auto)
                    .then(|| crate::tuning::active(simd.min(Simd::best())))
                    .flatten();
                let options = EngineOptions {
                    simd: Some(simd),
                    tuning,
                    ..conv.into()
                };
                Ok(Runner::Kernels(Engine::with_options(model, &options)?))
            }
            _ => Ok(Runner::Burn {
                model: Box::new(model),
                device: device.clone(),
            }),
        }
    }

    /// [`new`](Self::new) with the automatic choices: the CPU engine on CPU backends where the
    /// CPU has its vector kernels, with its own convolution choice; burn elsewhere.
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

    /// The kernel of each layer of the CPU engine (`None` for burn, whose backend chooses).
    pub fn layer_kernels(&self) -> Option<Vec<LayerKernel>> {
        match self {
            Runner::Kernels(engine) => Some(engine.layer_kernels()),
            Runner::Burn { .. } => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_engine_only_where_its_vector_kernels_run() {
        // CPU backends: the engine at AVX2 and AVX-512, burn at the portable level (SIMD
        // detection forced off, as on aarch64 or x86 without AVX2) unless measured faster
        for simd in [Simd::Avx2, Simd::Avx512] {
            assert_eq!(EngineKind::Auto.resolve(true, simd), EngineKind::Kernels);
        }
        let portable = if PORTABLE_ENGINE_BEATS_BURN {
            EngineKind::Kernels
        } else {
            EngineKind::Burn
        };
        assert_eq!(EngineKind::Auto.resolve(true, Simd::Portable), portable);
        for simd in Simd::ALL {
            // wgpu: burn, whatever the CPU
            assert_eq!(EngineKind::Auto.resolve(false, simd), EngineKind::Burn);
            // explicit choices are kept
            for cpu in [false, true] {
                assert_eq!(EngineKind::Burn.resolve(cpu, simd), EngineKind::Burn);
                assert_eq!(EngineKind::Kernels.resolve(cpu, simd), EngineKind::Kernels);
            }
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn runner_auto_follows_the_forced_simd_level() {
        use alexvgg_models::{AlexNetVariant, Architecture, NetworkShape};
        let device = Device::flex();
        let shape = NetworkShape {
            num_classes: 3,
            hidden: 8,
            width_divisor: 16,
        };
        let model = || {
            Architecture::AlexNet(AlexNetVariant::Caffe)
                .init(&shape, &device)
                .unwrap()
        };
        let auto = |simd| {
            Runner::with_simd(
                model(),
                &device,
                Backend::Flex,
                EngineKind::Auto,
                ConvChoice::Auto,
                simd,
            )
            .unwrap()
        };
        let portable = auto(Simd::Portable);
        assert_eq!(
            matches!(portable, Runner::Kernels(_)),
            PORTABLE_ENGINE_BEATS_BURN
        );
        // --engine kernels still runs the (portable) engine when asked for
        let forced = Runner::with_simd(
            model(),
            &device,
            Backend::Flex,
            EngineKind::Kernels,
            ConvChoice::Auto,
            Simd::Portable,
        )
        .unwrap();
        match &forced {
            Runner::Kernels(engine) => assert_eq!(engine.simd(), Simd::Portable),
            Runner::Burn { .. } => panic!("--engine kernels ran burn"),
        }
        let kernels = forced.layer_kernels().unwrap();
        assert!(
            kernels
                .iter()
                .any(|k| k.description == "fc-stream portable")
        );
        if Simd::Avx2.supported() {
            let best = auto(Simd::best());
            assert!(matches!(best, Runner::Kernels(_)));
        }
    }
}

//! A CPU inference engine for the networks of `alexvgg-models`.
//!
//! burn's CPU backends run these networks 1.5-2x slower than ONNX Runtime on the same machine
//! (see the README's benchmark table): every convolution converts NCHW to NHWC and back, builds
//! its im2col matrix, and leaves one of two cores idle in the GEMM for many layer shapes. This
//! crate compiles a [`Model`](alexvgg_models::Model) once into a list of kernel calls on
//! channels-last buffers: convolution filters transformed or packed once for their kernel
//! ([`direct`], [`winograd`], [`kernels`]), BatchNorm folded into the convolutions, bias and
//! ReLU fused, fully connected layers streaming their weights and skipping rows whose inputs
//! are zero ([`linear`]), and the work split across the rayon pool by us (see [`gemm`]).
//!
//! The hand-written kernels come in portable, AVX2 and AVX-512 variants, one [`Simd`] level
//! chosen at run time for the whole engine (detected once; `ALEXVGG_SIMD=portable|avx2|avx512`
//! overrides it, [`EngineOptions::simd`] per engine; see [`simd`]), and
//! [`Engine::layer_kernels`] says which kernel and variant computes each layer.
//!
//! The model code stays backend-agnostic; the engine is a separate inference path with the same
//! parity tests as the burn model (`tests/engine.rs` at the workspace root). For training,
//! [`autodiff`] puts the same kernels under burn's autodiff as custom operations with
//! hand-written backward passes ([`train`]), which the models use through
//! `alexvgg_models::kernels::with_kernels` (`tests/train_ops.rs`: gradients against PyTorch).
//!
//! ```no_run
//! use alexvgg_cpu::Engine;
//! use alexvgg_models::{AlexNetConfig, AlexNetVariant, Model};
//! use burn::tensor::Device;
//!
//! let model = Model::AlexNet(AlexNetConfig::new(AlexNetVariant::Tf).init(&Device::default()));
//! let engine = Engine::from_model(model).unwrap();
//! let logits = engine.forward(&vec![0.0; 3 * 227 * 227], [1, 3, 227, 227]).unwrap();
//! assert_eq!(logits.len(), 1000);
//! ```

#![warn(missing_docs)]

#[cfg(any(feature = "flex", feature = "ndarray"))]
pub mod autodiff;
pub mod direct;
pub mod gemm;
pub mod kernels;
pub mod linear;
mod plan;
pub mod pool;
pub mod simd;
pub mod train;
pub mod tune;
pub mod winograd;

pub use plan::{
    Activation, ConvAlgorithm, ConvLayer, Engine, EngineError, EngineOptions, LayerKernel,
};
pub use simd::{CpuInfo, Simd};

//! One network with its optimizer: optimisation steps and evaluation.

use std::path::Path;
use std::sync::Arc;

use alexvgg_import::ModulePath;
use alexvgg_models::kernels::{LayerKernels, with_kernels};
use alexvgg_models::{Architecture, Model, host_values};
use burn::module::{Module, ModuleMapper, Param, ParamGroup, ParamId};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

use alexvgg_inference::features;
use alexvgg_inference::runner::{ConvChoice, EngineKind, Runner};

use crate::config::{Freeze, OptimizerKind, OptimizerSettings};
use crate::error::FinetuneError;
use crate::sgd::FusedSgd;

/// Loss and accuracy of one training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy over the batch (before the update).
    pub loss: f64,
    /// Images whose top-1 prediction was right (before the update).
    pub correct: usize,
    /// Images in the batch.
    pub images: usize,
}

/// Summed loss and accuracy counts over evaluated images.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalStats {
    /// Sum of per-image cross-entropy.
    pub loss_sum: f64,
    /// Right top-1 predictions.
    pub top1: usize,
    /// Right top-5 predictions (top-k with k = min(5, classes)).
    pub top5: usize,
    /// Images evaluated.
    pub images: usize,
}

impl EvalStats {
    /// Adds another batch's counts.
    pub fn add(&mut self, other: EvalStats) {
        self.loss_sum += other.loss_sum;
        self.top1 += other.top1;
        self.top5 += other.top5;
        self.images += other.images;
    }
}

/// A network being trained, with its optimizer state.
///
/// Parameter ids are derived from module paths (not burn's random ids), so that optimizer state
/// saved by one process applies to the model another process loads: this is what makes
/// `--resume` exact.
pub struct Trainer {
    model: Option<Model>,
    optim: ModuleOptimizer,
    loss: CrossEntropyLoss,
    device: Device,
    side: usize,
    frozen: Vec<String>,
    trainable: Vec<String>,
    arch: Architecture,
    prefix: Option<FrozenPrefix>,
    /// Kernels standing in for burn's convolutions, LRN and max pools in the trained layers
    /// (the CPU engine's, with hand-written backward passes, on CPU backends); `None`: burn's.
    kernels: Option<Arc<dyn LayerKernels>>,
}

/// The frozen layers at the front of the network, run forward only, outside autodiff: no tape,
/// no saved activations, and on CPU backends the CPU engine's kernels. The trained layers start
/// from its output ([`Model::forward_from`]).
struct FrozenPrefix {
    /// The activation the trained layers start from.
    layer: String,
    /// The network in inference form (its frozen weights never change) computing `layer`.
    runner: Runner,
}

/// The activation a frozen prefix of `arch` ends at when `frozen` (parameter module paths)
/// are the frozen parameters: the last activation before the first trained layer, when every
/// layer up to it is in the convolutional part (no dropout, whose training-mode behaviour the
/// inference form would drop) and the network has no BatchNorm (whose frozen statistics stay
/// with the burn path). `None` where no such prefix exists.
pub(crate) fn frozen_boundary(
    arch: &Architecture,
    model: &Model,
    frozen: &[String],
) -> Option<String> {
    if frozen.is_empty()
        || matches!(
            arch,
            Architecture::Vgg {
                batch_norm: true,
                ..
            }
        )
    {
        return None;
    }
    // the first layer with a trained parameter: every layer before it is frozen
    let layers = alexvgg_import::param_layers(arch);
    let first_trained = layers
        .iter()
        .find(|(_, path)| !frozen.iter().any(|f| f.starts_with(&format!("{path}."))))?;
    let name = first_trained.0.as_str();
    if !(name.starts_with("conv") || name == "fc6") {
        return None;
    }
    let names = model.activation_names();
    let at = names.iter().position(|n| n == name)?;
    if at == 0 {
        return None;
    }
    Some(names[at - 1].clone())
}

/// Gives every parameter an id derived from its path and notes which are frozen.
struct Prepare<'a> {
    path: ModulePath,
    frozen_prefixes: &'a [String],
    frozen: Vec<(String, ParamId)>,
    trainable: Vec<String>,
}

impl ModuleMapper for Prepare<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.key();
        // FNV-1a of the path: stable across processes and runs
        let id = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        param.id = ParamId::from(id);
        if self
            .frozen_prefixes
            .iter()
            .any(|p| key.starts_with(&format!("{p}.")))
        {
            self.frozen.push((key, param.id));
        } else {
            self.trainable.push(key);
        }
        param
    }
}

impl Trainer {
    /// Prepares `model` (already on `device`'s autodiff form, with its new head) for training:
    /// path-derived parameter ids, the layers `freeze` names frozen, and the optimizer.
    ///
    /// # Errors
    /// [`FinetuneError::Setting`] for a freeze setting that names no layer of `arch`.
    pub fn new(
        model: Model,
        arch: &Architecture,
        optimizer: &OptimizerSettings,
        freeze: &Freeze,
        device: &Device,
    ) -> Result<Self, FinetuneError> {
        let prefixes = freeze.prefixes(arch)?;
        let mut prep = Prepare {
            path: ModulePath::default(),
            frozen_prefixes: &prefixes,
            frozen: Vec::new(),
            trainable: Vec::new(),
        };
        let model = model.map(&mut prep);
        let model = if prefixes.is_empty() {
            model
        } else {
            // by path, so that BatchNorm's training flag (running statistics) is frozen too,
            // not only the tensors; the trailing dot keeps `features.1.` off `features.10.`
            let ids: Vec<ParamId> = prep.frozen.iter().map(|(_, id)| *id).collect();
            let group =
                ParamGroup::from_any_predicates(prefixes.iter().map(|p| format!("{p}.")).collect())
                    .fuse(&ParamGroup::from_ids(ids));
            model.freeze_group(group)
        };
        Ok(Self {
            model: Some(model),
            optim: build_optimizer(optimizer),
            loss: CrossEntropyLossConfig::new().init(device),
            device: device.clone(),
            side: arch.input_size(),
            frozen: prep.frozen.into_iter().map(|(k, _)| k).collect(),
            trainable: prep.trainable,
            arch: *arch,
            prefix: None,
            kernels: None,
        })
    }

    /// Chooses what computes a step with `engine`. `auto` on a CPU backend: the trained
    /// convolutions (with their ReLU), LRN and max pools run the CPU engine's kernels with
    /// hand-written backward passes (`alexvgg_cpu::autodiff`), and the frozen layers at the
    /// front of the network (see [`frozen_boundary`]) run forward only on the CPU engine,
    /// outside autodiff: they keep no activations and get no backward pass. `auto` on wgpu:
    /// burn's layers, the frozen prefix in burn's inference form. `burn`: burn's layers
    /// throughout, everything under autodiff (the plain path, for A/B).
    ///
    /// # Errors
    /// [`FinetuneError::FrozenPrefix`] when the CPU engine cannot compile the network.
    pub fn with_engine(mut self, engine: EngineKind) -> Result<Self, FinetuneError> {
        self.prefix = None;
        self.kernels = None;
        if engine == EngineKind::Burn {
            return Ok(self);
        }
        let inner = self.device.clone().without_autodiff();
        let backend = alexvgg_inference::device::backend_of(&inner);
        #[cfg(any(feature = "flex", feature = "ndarray"))]
        if matches!(
            backend,
            alexvgg_inference::device::Backend::Flex | alexvgg_inference::device::Backend::NdArray
        ) {
            self.kernels = Some(alexvgg_cpu::autodiff::CpuKernels::new().shared());
        }
        let Some(layer) = frozen_boundary(&self.arch, self.model(), &self.frozen) else {
            return Ok(self);
        };
        let runner = Runner::new(
            self.model().valid(),
            &inner,
            backend,
            engine,
            ConvChoice::Auto,
        )
        .map_err(|e| FinetuneError::FrozenPrefix(e.to_string()))?;
        self.prefix = Some(FrozenPrefix { layer, runner });
        Ok(self)
    }

    /// What computes the trained layers' convolutions, LRN and max pools: the CPU engine's
    /// training kernels or burn's (see [`with_engine`](Self::with_engine)).
    pub fn layer_kernels(&self) -> &'static str {
        if self.kernels.is_some() {
            "alexvgg-cpu training kernels"
        } else {
            "burn"
        }
    }

    /// Where the frozen prefix ends and what runs it (`None`: everything runs under autodiff).
    pub fn frozen_prefix(&self) -> Option<(&str, &'static str)> {
        self.prefix
            .as_ref()
            .map(|p| (p.layer.as_str(), p.runner.describe()))
    }

    /// The frozen prefix's output for a batch, as a tensor on `device`.
    ///
    /// # Shapes
    /// - `inputs`: `[n, 3, side, side]`
    /// - output: the boundary activation, `[n, C, h, w]` (`[n, C, 1, 1]` for a vector)
    fn prefix_activation(
        &self,
        prefix: &FrozenPrefix,
        inputs: Vec<f32>,
        n: usize,
        device: &Device,
    ) -> Result<Tensor<4>, FinetuneError> {
        let dims = [n, 3, self.side, self.side];
        let layers = [prefix.layer.clone()];
        let mut found = features::extract(&prefix.runner, inputs, dims, &layers, None)
            .map_err(|e| FinetuneError::FrozenPrefix(e.to_string()))?;
        let f = found
            .pop()
            .ok_or_else(|| FinetuneError::FrozenPrefix(format!("no {} computed", prefix.layer)))?;
        let shape: [usize; 4] = match f.shape[..] {
            [b, c, h, w] => [b, c, h, w],
            [b, c] => [b, c, 1, 1],
            _ => {
                return Err(FinetuneError::FrozenPrefix(format!(
                    "{} has shape {:?}",
                    prefix.layer, f.shape
                )));
            }
        };
        Ok(Tensor::<4>::from_data(
            TensorData::new(f.data, shape),
            device,
        ))
    }

    /// The network.
    pub fn model(&self) -> &Model {
        self.model.as_ref().expect("model present between steps")
    }

    /// The network, ending training.
    pub fn into_model(mut self) -> Model {
        self.model.take().expect("model present between steps")
    }

    /// Module paths of the frozen parameters.
    pub fn frozen(&self) -> &[String] {
        &self.frozen
    }

    /// Module paths of the parameters being trained.
    pub fn trainable(&self) -> &[String] {
        &self.trainable
    }

    fn batch(&self, inputs: Vec<f32>, labels: &[usize]) -> (Tensor<4>, Tensor<1, Int>) {
        let n = labels.len();
        let x = Tensor::<4>::from_data(
            TensorData::new(inputs, [n, 3, self.side, self.side]),
            &self.device,
        );
        (x, self.labels(labels))
    }

    fn labels(&self, labels: &[usize]) -> Tensor<1, Int> {
        Tensor::<1, Int>::from_data(
            TensorData::new(labels.iter().map(|&l| l as i64).collect(), [labels.len()]),
            &self.device,
        )
    }

    /// One optimisation step on a batch: forward, mean cross-entropy, backward, update with
    /// learning rate `lr`.
    ///
    /// # Shapes
    /// - `inputs`: `[n, 3, side, side]` values, channels first (`side` = the architecture's
    ///   input size)
    /// - `labels`: `[n]` class indices
    ///
    /// # Errors
    /// [`FinetuneError::HostValues`] when the logits cannot be read back, and
    /// [`FinetuneError::Diverged`] when the loss is not finite (NaN or infinite); in both cases
    /// the model is kept as it was, not updated.
    pub fn step(
        &mut self,
        inputs: Vec<f32>,
        labels: &[usize],
        lr: f64,
    ) -> Result<StepStats, FinetuneError> {
        let model = self.model.take().expect("model present between steps");
        let kernels = self.kernels.clone();
        let logits = with_kernels(kernels, || match &self.prefix {
            Some(prefix) => self
                .prefix_activation(prefix, inputs, labels.len(), &self.device)
                .and_then(|a| {
                    model
                        .forward_from(&prefix.layer, a)
                        .map_err(FinetuneError::Model)
                }),
            None => Ok(model.forward(self.batch(inputs, labels).0)),
        });
        let logits = match logits {
            Ok(logits) => logits,
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        let y = self.labels(labels);
        let scores = match host_values(logits.clone().detach()) {
            Ok(scores) => scores,
            Err(e) => {
                self.model = Some(model);
                return Err(FinetuneError::HostValues(e));
            }
        };
        let loss = self.loss.forward(logits, y);
        let loss_value = loss.clone().detach().into_scalar::<f32>() as f64;
        if !loss_value.is_finite() {
            // a diverged network: keep it as it was, the caller decides what to do
            self.model = Some(model);
            return Err(FinetuneError::Diverged {
                at: String::new(),
                what: format!("the loss is {loss_value} (the step was not applied)"),
                kept: String::new(),
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optim.step(lr, model, grads));
        let classes = scores.len() / labels.len().max(1);
        Ok(StepStats {
            loss: loss_value,
            correct: count_top_k(&scores, classes, labels, 1),
            images: labels.len(),
        })
    }

    /// Loss and top-1/top-5 counts on a batch, without dropout and without gradients.
    ///
    /// # Shapes
    /// - `inputs`: `[n, 3, side, side]`
    /// - `labels`: `[n]`
    ///
    /// # Errors
    /// [`FinetuneError::HostValues`] when the logits cannot be read back.
    pub fn evaluate(
        &self,
        eval_model: &Model,
        inputs: Vec<f32>,
        labels: &[usize],
    ) -> Result<EvalStats, FinetuneError> {
        let n = labels.len();
        let device = self.device.clone().without_autodiff();
        let logits = match &self.prefix {
            Some(prefix) => {
                let a = self.prefix_activation(prefix, inputs, n, &device)?;
                eval_model.forward_from(&prefix.layer, a)?
            }
            None => eval_model.forward(Tensor::<4>::from_data(
                TensorData::new(inputs, [n, 3, self.side, self.side]),
                &device,
            )),
        };
        let scores = host_values(logits).map_err(FinetuneError::HostValues)?;
        let classes = scores.len() / n.max(1);
        let loss_sum = scores
            .chunks(classes)
            .zip(labels)
            .map(|(row, &l)| {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max
                    + row
                        .iter()
                        .map(|&v| (v as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                lse - row[l] as f64
            })
            .sum();
        Ok(EvalStats {
            loss_sum,
            top1: count_top_k(&scores, classes, labels, 1),
            top5: count_top_k(&scores, classes, labels, 5.min(classes)),
            images: n,
        })
    }

    /// The network for evaluation: no autodiff, dropout off.
    pub fn eval_model(&self) -> Model {
        self.model().valid()
    }

    /// Writes the optimizer state (momenta, Adam moments) to `path`, atomically.
    ///
    /// # Errors
    /// [`FinetuneError::Checkpoint`] when it cannot be written.
    pub fn save_optimizer(&self, path: &Path) -> Result<(), FinetuneError> {
        let tmp = path.with_extension("partial");
        self.optim
            .save(&tmp)
            .map_err(|e| FinetuneError::Checkpoint {
                path: tmp.clone(),
                reason: e.to_string(),
            })?;
        // burn may add its extension; accept either name
        let written = if tmp.exists() {
            tmp
        } else {
            tmp.with_extension("partial.bpk")
        };
        std::fs::rename(&written, path).map_err(|e| FinetuneError::io(path, e))
    }

    /// Restores optimizer state written by [`save_optimizer`](Self::save_optimizer).
    ///
    /// # Errors
    /// [`FinetuneError::Checkpoint`] when it cannot be read.
    pub fn load_optimizer(&mut self, path: &Path) -> Result<(), FinetuneError> {
        let optim = std::mem::replace(&mut self.optim, SgdConfig::new().init());
        self.optim = optim.load(path).map_err(|e| FinetuneError::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(())
    }
}

fn build_optimizer(s: &OptimizerSettings) -> ModuleOptimizer {
    let decay = (s.weight_decay > 0.0).then(|| WeightDecayConfig::new(s.weight_decay as f32));
    match s.kind {
        // one in-place pass per parameter on CPU backends (burn's SGD allocates a buffer per
        // operation); PyTorch's (and Caffe's) dampening 0, where burn's default is 0.1
        OptimizerKind::Sgd => ModuleOptimizer::from(FusedSgd {
            momentum: (s.momentum > 0.0).then_some(s.momentum as f32),
            dampening: 0.0,
            weight_decay: (s.weight_decay > 0.0).then_some(s.weight_decay as f32),
        }),
        // PyTorch's default epsilon (burn's is 1e-5)
        OptimizerKind::Adam => AdamConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(decay)
            .init(),
    }
}

/// How many rows of `scores` (`classes` wide) have their label among the `k` highest. A row
/// with a NaN or infinite score is no prediction and never counts as right.
fn count_top_k(scores: &[f32], classes: usize, labels: &[usize], k: usize) -> usize {
    scores
        .chunks(classes.max(1))
        .zip(labels)
        .filter(|(row, l)| {
            if row.iter().any(|v| !v.is_finite()) {
                return false;
            }
            let mine = row[**l];
            // ties count against us: strictly greater scores, or equal ones at lower index
            let above = row
                .iter()
                .enumerate()
                .filter(|&(i, &v)| v > mine || (v == mine && i < **l))
                .count();
            above < k
        })
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn top_k_counts() {
        let scores = [0.1, 0.5, 0.2, /* row 2 */ 0.9, 0.0, 0.3];
        assert_eq!(super::count_top_k(&scores, 3, &[1, 2], 1), 1);
        assert_eq!(super::count_top_k(&scores, 3, &[1, 2], 2), 2);
        assert_eq!(super::count_top_k(&scores, 3, &[0, 1], 2), 0);
        assert_eq!(super::count_top_k(&scores, 3, &[0, 0], 2), 1);
    }

    #[test]
    fn non_finite_scores_never_count_as_right() {
        // every comparison with NaN is false: these rows used to count as right at any k
        let nan = f32::NAN;
        let scores = [
            nan,
            nan,
            nan,
            /* row 2 */ 0.1,
            nan,
            0.3,
            /* row 3 */ f32::INFINITY,
            0.0,
            0.0,
        ];
        for k in 1..=3 {
            assert_eq!(super::count_top_k(&scores, 3, &[1, 2, 0], k), 0, "k = {k}");
        }
    }
}

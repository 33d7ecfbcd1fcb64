//! SGD with momentum and weight decay as one in-place pass over each parameter on CPU backends.
//!
//! burn's SGD applies weight decay, momentum and the step as separate tensor operations, each
//! allocating a fresh buffer the size of the parameter: for AlexNet's fc6 (151 MB) and VGG16's
//! (411 MB) that is several page-faulted allocations per step, which took most of a
//! frozen-features step (see `docs/benchmarks.md`). On flex and ndarray this optimizer takes
//! the parameter, its gradient and its velocity out as host buffers (flex hands a tensor's own
//! buffer over when nothing else holds it) and updates them in one pass, in the same `f32`
//! operations and order as burn's SGD; on other backends (wgpu) it runs burn's formula as
//! tensor operations. The state is stored under the same names as burn's SGD state
//! (`momentum.velocity`), so optimizer files written before are read back unchanged.

use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource, join_path};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use alexvgg_inference::device::{Backend, backend_of};

/// SGD as PyTorch (and Caffe) define it: `g = grad + wd·w`; `v = g` at the first step, then
/// `v = μ·v + (1 − dampening)·g`; `w = w − lr·v` (no momentum: `w = w − lr·g`).
#[derive(Clone, Debug)]
pub struct FusedSgd {
    /// Momentum `μ` (`None`: plain SGD).
    pub momentum: Option<f32>,
    /// Dampening of the momentum.
    pub dampening: f32,
    /// L2 weight decay added to the gradient (`None`: none).
    pub weight_decay: Option<f32>,
}

/// The state of one parameter: its velocity, where momentum is on.
#[derive(Clone)]
pub struct FusedSgdState<const D: usize> {
    /// The velocity (burn's `SgdState::momentum`).
    pub momentum: Option<Velocity<D>>,
}

/// A parameter's velocity (burn's `MomentumState`).
#[derive(Clone)]
pub struct Velocity<const D: usize> {
    /// `v`, the parameter's shape.
    pub velocity: Tensor<D>,
}

/// Recorded as burn's `SgdState` is: the velocity under `PREFIX.momentum.velocity` (burn's
/// derive is for its own crate; this is what it writes for `SgdState`).
impl<const D: usize> RecordState for FusedSgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(m) = &self.momentum {
            out.push_tensor(
                &join_path(prefix, "momentum"),
                "velocity",
                m.velocity.clone().into_data(),
            );
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let momentum = src
            .take_tensor(&join_path(prefix, "momentum"), "velocity")
            .map(|data| Velocity {
                velocity: Tensor::from_data(data, device),
            });
        Some(Self { momentum })
    }
}

impl FusedSgd {
    /// The update as burn's tensor operations (devices whose buffers are not host memory).
    fn step_tensors<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        mut grad: Tensor<D>,
        velocity: Option<Tensor<D>>,
    ) -> (Tensor<D>, Option<Tensor<D>>) {
        if let Some(wd) = self.weight_decay {
            grad = tensor.clone().mul_scalar(wd).add(grad);
        }
        let velocity = self.momentum.map(|mu| match velocity {
            Some(v) => grad
                .clone()
                .mul_scalar(1.0 - self.dampening)
                .add(v.mul_scalar(mu)),
            None => grad.clone(),
        });
        let delta = velocity.clone().unwrap_or(grad).mul_scalar(lr);
        (tensor - delta, velocity)
    }

    /// The update in one pass over host buffers.
    fn step_host<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        velocity: Option<Tensor<D>>,
    ) -> (Tensor<D>, Option<Tensor<D>>) {
        let device = tensor.device();
        let mut w = tensor.into_data().convert::<f32>();
        let g = grad.into_data().convert::<f32>();
        let first = velocity.is_none();
        let mut v = match (self.momentum, velocity) {
            (Some(_), Some(v)) => Some(v.into_data().convert::<f32>()),
            // the first step's velocity is the gradient itself, written by the pass below
            (Some(_), None) => Some(TensorData::new(
                vec![0.0f32; g.num_elements()],
                g.shape().clone(),
            )),
            (None, _) => None,
        };
        let lr = lr as f32;
        let (wd, damp) = (self.weight_decay, 1.0 - self.dampening);
        {
            let ws = w.as_mut_slice::<f32>().expect("f32 parameter");
            let gs = g.as_slice::<f32>().expect("f32 gradient");
            const CHUNK: usize = 1 << 14;
            match (&mut v, self.momentum) {
                (Some(v), Some(mu)) => {
                    let vs = v.as_mut_slice::<f32>().expect("f32 velocity");
                    ws.par_chunks_mut(CHUNK)
                        .zip(vs.par_chunks_mut(CHUNK))
                        .zip(gs.par_chunks(CHUNK))
                        .for_each(|((w, v), g)| {
                            for ((w, v), &g) in w.iter_mut().zip(v.iter_mut()).zip(g) {
                                // the same f32 operations, in the same order, as burn's SGD
                                let g = match wd {
                                    Some(wd) => *w * wd + g,
                                    None => g,
                                };
                                if !first {
                                    *v = g * damp + *v * mu;
                                } else {
                                    *v = g;
                                }
                                *w -= *v * lr;
                            }
                        });
                }
                _ => {
                    ws.par_chunks_mut(CHUNK)
                        .zip(gs.par_chunks(CHUNK))
                        .for_each(|(w, g)| {
                            for (w, &g) in w.iter_mut().zip(g) {
                                let g = match wd {
                                    Some(wd) => *w * wd + g,
                                    None => g,
                                };
                                *w -= g * lr;
                            }
                        });
                }
            }
        }
        let tensor = Tensor::<D>::from_data(w, &device);
        (tensor, v.map(|v| Tensor::<D>::from_data(v, &device)))
    }
}

impl Optimizer for FusedSgd {
    type State<const D: usize> = FusedSgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let velocity = state.and_then(|s| s.momentum).map(|m| m.velocity);
        let host = matches!(
            backend_of(&tensor.device()),
            Backend::Flex | Backend::NdArray
        );
        let (tensor, velocity) = if host {
            self.step_host(lr, tensor, grad, velocity)
        } else {
            self.step_tensors(lr, tensor, grad, velocity)
        };
        let state = FusedSgdState {
            momentum: velocity.map(|velocity| Velocity { velocity }),
        };
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.map(|m| Velocity {
            velocity: m.velocity.to_device(device),
        });
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
    use burn::tensor::{Distribution, TensorData};

    fn cpu() -> Device {
        alexvgg_inference::device::make_device(Some("cpu"))
            .unwrap()
            .1
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn the_host_pass_computes_what_the_tensor_operations_do() {
        let device = cpu();
        let shape = [37, 129];
        let rand = || Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        for (momentum, weight_decay) in [
            (Some(0.9), Some(5e-4)),
            (None, Some(1e-2)),
            (Some(0.5), None),
        ] {
            let sgd = FusedSgd {
                momentum,
                dampening: 0.0,
                weight_decay,
            };
            let mut wh = rand();
            // an independent copy: the host pass takes its parameter's buffer over
            let mut wt = Tensor::<2>::from_data(wh.to_data(), &device);
            let (mut vh, mut vt) = (None, None);
            for step in 0..3 {
                let g = rand();
                let (w1, v1) = sgd.step_host(0.01, wh, g.clone(), vh);
                let (w2, v2) = sgd.step_tensors(0.01, wt, g, vt);
                assert_eq!(
                    values(w1.clone()),
                    values(w2.clone()),
                    "{momentum:?} {weight_decay:?} step {step}"
                );
                assert_eq!(v1.is_some(), momentum.is_some());
                (wh, wt, vh, vt) = (w1, w2, v1, v2);
            }
        }
    }

    /// A module with one linear layer, its loss's gradients for a fixed input.
    fn grads(layer: &Linear, device: &Device) -> GradientsParams {
        let x = Tensor::<2>::from_data(
            TensorData::new((0..24).map(|i| i as f32 / 10.0 - 1.0).collect(), [4, 6]),
            device,
        );
        let loss = layer.forward(x).powi_scalar(2).sum();
        GradientsParams::from_grads(loss.backward(), layer)
    }

    #[test]
    fn state_written_by_burn_s_sgd_is_read_back_and_continued_identically() {
        let device = cpu().autodiff();
        let dir = std::env::temp_dir().join(format!("alexvgg-sgd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let layer: Linear = LinearConfig::new(6, 3).init(&device);
        let burn_sgd = || {
            SgdConfig::new()
                .with_momentum(Some(
                    MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
                ))
                .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
                .init()
        };
        let fused = || {
            ModuleOptimizer::from(FusedSgd {
                momentum: Some(0.9),
                dampening: 0.0,
                weight_decay: Some(5e-4),
            })
        };
        // two steps with burn's SGD, its state saved as an earlier run's optimizer file
        let mut optim = burn_sgd();
        let mut layer = layer;
        for _ in 0..2 {
            let g = grads(&layer, &device);
            layer = optim.step(0.05, layer, g);
        }
        let file = dir.join("optimizer.bpk");
        optim.save(&file).unwrap();
        // a third step continued by burn's SGD and by this one, each from that file
        let written = if file.exists() {
            file.clone()
        } else {
            file.with_extension("bpk.bpk")
        };
        let step = |optim: ModuleOptimizer| {
            let mut optim = optim.load(&written).unwrap();
            let g = grads(&layer, &device);
            let next = optim.step(0.05, layer.clone(), g);
            values(next.weight.val())
        };
        let (a, b) = (step(burn_sgd()), step(fused()));
        assert_eq!(a, b);
        let _ = std::fs::remove_dir_all(dir);
    }
}

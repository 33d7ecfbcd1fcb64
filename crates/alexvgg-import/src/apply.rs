//! Puts a [`TensorMap`] keyed by burn module paths into a module, all or nothing.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};

use crate::{ImportError, TensorMap};

struct Loader {
    path: Vec<String>,
    /// Whether each entered container added a path segment (enum variants do not).
    pushed: Vec<bool>,
    tensors: TensorMap,
    missing: Vec<String>,
    mismatched: Vec<String>,
    /// Paths already reported (blocks of a misshapen whole tensor).
    handled: Vec<String>,
}

impl ModuleMapper for Loader {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        // `Model::AlexNet(..)` enters the variant `AlexNet`; file keys never carry it.
        let push = !container_type.starts_with("Enum:");
        if push {
            self.path.push(name.to_string());
        }
        self.pushed.push(push);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        if self.pushed.pop() == Some(true) {
            self.path.pop();
        }
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.join(".");
        let expected = param.lazy_shape().to_vec();
        match self.tensors.remove(&key) {
            None => {
                if !self.handled.contains(&key) {
                    self.missing.push(format!("{key} {expected:?}"));
                }
                param
            }
            Some(t) if t.shape != expected => {
                self.mismatched
                    .push(format!("{key}: expected {expected:?}, found {:?}", t.shape));
                param
            }
            Some(t) => {
                let device = param.lazy_device();
                let id = param.id;
                let tensor = Tensor::<D>::from_data(TensorData::new(t.data, t.shape), &device);
                param.transform_for_load(tensor, id)
            }
        }
    }
}

/// Loads every tensor of `tensors` (keys are burn module paths such as `convs.0.conv.weight`,
/// layouts already burn's) into `module`.
///
/// # Errors
/// [`ImportError::Mismatch`] listing each missing key, unexpected key and shape mismatch; the
/// module is then dropped, never returned half-loaded.
pub fn load_module<M: Module>(
    module: M,
    mut tensors: TensorMap,
    file: &str,
    model: &str,
) -> Result<M, ImportError> {
    // fc layers may be split into column blocks for GPU binding limits: cut the whole tensors.
    let (mismatched, handled) =
        crate::blocks::split_for_module(&crate::native::raw_param_shapes(&module), &mut tensors);
    let mut loader = Loader {
        path: Vec::new(),
        pushed: Vec::new(),
        tensors,
        missing: Vec::new(),
        mismatched,
        handled,
    };
    let module = module.map(&mut loader);
    let mut details = String::new();
    for m in &loader.mismatched {
        details.push_str(&format!("\n  shape mismatch: {m}"));
    }
    for m in &loader.missing {
        details.push_str(&format!("\n  missing: {m}"));
    }
    for (key, t) in &loader.tensors {
        details.push_str(&format!("\n  unexpected: {key} {:?}", t.shape));
    }
    if details.is_empty() {
        Ok(module)
    } else {
        Err(ImportError::Mismatch {
            file: file.to_string(),
            model: model.to_string(),
            details,
        })
    }
}

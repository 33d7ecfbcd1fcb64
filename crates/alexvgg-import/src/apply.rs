//! Puts a [`TensorMap`] keyed by burn module paths into a module, all or nothing.

use alexvgg_models::ModulePath;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};

use crate::blocks::split_for_module;
use crate::native::raw_param_shapes;
use crate::{ImportError, TensorMap};

struct Loader {
    path: ModulePath,
    tensors: TensorMap,
}

impl ModuleMapper for Loader {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // Every key and shape was checked before mapping started.
        match self.tensors.remove(&self.path.key()) {
            Some(t) => {
                let device = param.lazy_device();
                let id = param.id;
                let tensor = Tensor::<D>::from_data(TensorData::new(t.data, t.shape), &device);
                param.transform_for_load(tensor, id)
            }
            None => param,
        }
    }
}

/// Splits fully connected tensors into the module's column blocks and lists, one per line,
/// every shape mismatch, missing key and unexpected key.
fn fit(module_params: &[(String, Vec<usize>)], tensors: &mut TensorMap) -> String {
    let (mismatched, handled) = split_for_module(module_params, tensors);
    let mut details = String::new();
    for m in &mismatched {
        details.push_str(&format!("\n  shape mismatch: {m}"));
    }
    for (key, expected) in module_params {
        match tensors.get(key) {
            Some(t) if &t.shape != expected => {
                details.push_str(&format!(
                    "\n  shape mismatch: {key}: expected {expected:?}, found {:?}",
                    t.shape
                ));
            }
            None if !handled.contains(key) => {
                details.push_str(&format!("\n  missing: {key} {expected:?}"))
            }
            _ => {}
        }
    }
    for (key, t) in tensors.iter() {
        if !module_params.iter().any(|(k, _)| k == key) {
            details.push_str(&format!(
                "\n  unexpected: {} {:?}",
                crate::escape(key),
                t.shape
            ));
        }
    }
    details
}

fn mismatch(file: &str, model: &str, details: String) -> ImportError {
    ImportError::Mismatch {
        file: file.to_string(),
        model: model.to_string(),
        details,
    }
}

/// Loads every tensor of `tensors` (keys are burn module paths such as `convs.0.conv.weight`,
/// layouts already burn's; fully connected layers under their whole names like `fc6.weight`)
/// into `module`.
///
/// # Errors
/// [`ImportError::Mismatch`] listing each missing key, unexpected key and shape mismatch,
/// found before any parameter is touched: the module is never returned half-loaded.
pub fn load_module<M: Module>(
    module: M,
    mut tensors: TensorMap,
    file: &str,
    model: &str,
) -> Result<M, ImportError> {
    let details = fit(&raw_param_shapes(&module), &mut tensors);
    if !details.is_empty() {
        return Err(mismatch(file, model, details));
    }
    let mut loader = Loader {
        path: ModulePath::default(),
        tensors,
    };
    Ok(module.map(&mut loader))
}

/// Checks that `tensors` fit `module` exactly, without loading them (the module's parameters
/// may stay uninitialised), and hands them back unchanged.
///
/// # Errors
/// As [`load_module`].
pub fn check_fits<M: Module>(
    module: &M,
    tensors: TensorMap,
    file: &str,
    model: &str,
) -> Result<TensorMap, ImportError> {
    let mut tensors = tensors;
    let details = fit(&raw_param_shapes(module), &mut tensors);
    if details.is_empty() {
        Ok(crate::blocks::merge(tensors))
    } else {
        Err(mismatch(file, model, details))
    }
}

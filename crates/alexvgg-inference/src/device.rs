//! The one place that turns a `--device` choice into a burn [`Device`].

use burn::tensor::Device;

/// Environment variable read when no `--device` is given.
pub const DEVICE_ENV: &str = "ALEXVGG_DEVICE";

/// A backend compiled into this build, and how to ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// burn's pure-Rust CPU backend `flex` (the default CPU backend: fastest here, see README).
    Flex,
    /// burn-ndarray (deprecated upstream in favour of flex).
    NdArray,
    /// wgpu (Vulkan/Metal/DX12/WebGPU through WGSL shaders).
    Wgpu,
}

impl Backend {
    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::NdArray => "ndarray",
            Backend::Wgpu => "wgpu",
        }
    }

    /// Whether this build includes the backend.
    pub fn compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::NdArray => cfg!(feature = "ndarray"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
        }
    }
}

/// Every backend this crate knows, compiled in or not.
pub const BACKENDS: [Backend; 3] = [Backend::Flex, Backend::NdArray, Backend::Wgpu];

/// Errors choosing a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// A backend this build does not include.
    #[error(
        "backend '{asked}' is not compiled into this build (available: {available}); rebuild with `--features {asked}`"
    )]
    NotCompiled {
        /// What was asked for.
        asked: String,
        /// Backends compiled in.
        available: String,
    },
    /// An unknown device string.
    #[error(
        "unknown device '{0}' (expected cpu, flex, ndarray, wgpu, wgpu:N, wgpu:integrated, wgpu:cpu)"
    )]
    Unknown(String),
    /// wgpu found no adapter.
    #[error(
        "no wgpu adapter for '{asked}': {reason} (on a machine without a GPU install Mesa's lavapipe, Debian package mesa-vulkan-drivers, or use --device cpu)"
    )]
    NoAdapter {
        /// What was asked for.
        asked: String,
        /// The runtime's complaint.
        reason: String,
    },
}

/// The backends compiled into this build, as a comma-separated list.
pub fn available() -> String {
    BACKENDS
        .iter()
        .filter(|b| b.compiled())
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The default CPU backend of this build: flex when compiled in, else ndarray.
pub fn default_cpu() -> Option<Backend> {
    [Backend::Flex, Backend::NdArray]
        .into_iter()
        .find(|b| b.compiled())
}

/// Parses a device choice: `cpu` (the default CPU backend), `flex`, `ndarray`, `wgpu`
/// (best adapter), `wgpu:N` (discrete GPU N), `wgpu:integrated[:N]`, `wgpu:cpu`.
/// `None` or an empty string reads [`DEVICE_ENV`], then falls back to `cpu`.
///
/// wgpu devices are probed with a tiny computation so that a machine without an adapter gets
/// [`DeviceError::NoAdapter`] here instead of a panic deep inside a forward pass.
///
/// # Errors
/// [`DeviceError`] for unknown strings, backends not compiled in and missing adapters.
pub fn make_device(choice: Option<&str>) -> Result<(Backend, Device), DeviceError> {
    let env = std::env::var(DEVICE_ENV).ok();
    let choice = choice
        .filter(|c| !c.is_empty())
        .or(env.as_deref().filter(|c| !c.is_empty()))
        .unwrap_or("cpu");
    let mut parts = choice.splitn(2, ':');
    let head = parts.next().unwrap_or_default();
    let rest = parts.next();
    let backend = match head {
        "cpu" if rest.is_none() => default_cpu().ok_or_else(|| not_compiled("cpu"))?,
        "flex" if rest.is_none() => Backend::Flex,
        "ndarray" if rest.is_none() => Backend::NdArray,
        "wgpu" => Backend::Wgpu,
        _ => return Err(DeviceError::Unknown(choice.to_string())),
    };
    if !backend.compiled() {
        return Err(not_compiled(backend.name()));
    }
    let device = build(backend, rest).ok_or_else(|| DeviceError::Unknown(choice.to_string()))?;
    if backend == Backend::Wgpu {
        probe(&device).map_err(|reason| DeviceError::NoAdapter {
            asked: choice.to_string(),
            reason,
        })?;
    }
    Ok((backend, device))
}

fn not_compiled(asked: &str) -> DeviceError {
    DeviceError::NotCompiled {
        asked: asked.to_string(),
        available: available(),
    }
}

#[allow(unused_variables)]
fn build(backend: Backend, rest: Option<&str>) -> Option<Device> {
    match backend {
        #[cfg(feature = "flex")]
        Backend::Flex => Some(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        Backend::NdArray => Some(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => {
            use burn::tensor::DeviceKind;
            let kind = match rest.map(|r| r.split(':').collect::<Vec<_>>()).as_deref() {
                None => DeviceKind::DefaultDevice,
                Some(["cpu"]) => DeviceKind::Cpu,
                Some(["integrated"]) => DeviceKind::IntegratedGpu(0),
                Some(["integrated", n]) => DeviceKind::IntegratedGpu(n.parse().ok()?),
                Some([n]) => DeviceKind::DiscreteGpu(n.parse().ok()?),
                _ => return None,
            };
            Some(Device::wgpu(kind))
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Runs one small computation on `device`, turning a runtime panic (no adapter) into an error.
fn probe(device: &Device) -> Result<(), String> {
    let device = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(move || {
        let x = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &device);
        x.sum().into_scalar::<f32>()
    });
    std::panic::set_hook(hook);
    match result {
        Ok(3.0) => Ok(()),
        Ok(v) => Err(format!("probe computed {v} instead of 3")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the runtime panicked".to_string())),
    }
}

/// The backend `device` belongs to (with or without autodiff): flex and ndarray by their one
/// CPU device, wgpu otherwise.
pub fn backend_of(device: &Device) -> Backend {
    #[cfg_attr(
        not(any(feature = "flex", feature = "ndarray")),
        allow(unused_variables)
    )]
    let inner = device.clone().without_autodiff();
    #[cfg(feature = "flex")]
    if inner == Device::flex() {
        return Backend::Flex;
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if inner == Device::ndarray() {
        return Backend::NdArray;
    }
    Backend::Wgpu
}

/// A short description of a device for benchmark and log output: the backend, burn's device,
/// and for wgpu the adapter's own name (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)` for lavapipe).
pub fn describe(backend: Backend, device: &Device) -> String {
    match adapter_name(backend, device) {
        Some(name) => format!("{} ({device:?}, adapter '{name}')", backend.name()),
        None => format!("{} ({device:?})", backend.name()),
    }
}

/// The adapter's name as the driver reports it (wgpu only).
#[allow(unused_variables)]
pub fn adapter_name(backend: Backend, device: &Device) -> Option<String> {
    #[cfg(feature = "wgpu")]
    if backend == Backend::Wgpu {
        return device.identity().map(|i| i.name);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_backends_are_errors() {
        assert!(matches!(
            make_device(Some("tpu")),
            Err(DeviceError::Unknown(_))
        ));
        assert!(matches!(
            make_device(Some("flex:3")),
            Err(DeviceError::Unknown(_))
        ));
        for b in BACKENDS {
            if !b.compiled() {
                let err = make_device(Some(b.name())).unwrap_err();
                assert!(err.to_string().contains("--features"), "{err}");
            }
        }
    }

    #[test]
    fn a_device_tells_its_backend_with_or_without_autodiff() {
        for b in BACKENDS.into_iter().filter(|b| b.compiled()) {
            // wgpu needs an adapter; where there is none there is no device to ask
            if let Ok((backend, device)) = make_device(Some(b.name())) {
                assert_eq!(backend_of(&device), backend);
                assert_eq!(backend_of(&device.autodiff()), backend);
            }
        }
    }

    #[test]
    fn cpu_is_the_default_cpu_backend() {
        let (backend, _) = make_device(Some("cpu")).unwrap();
        assert_eq!(Some(backend), default_cpu());
    }
}

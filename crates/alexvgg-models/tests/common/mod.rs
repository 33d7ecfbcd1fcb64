//! Helpers of this crate's integration tests: the workspace-wide `tests/common/support.rs`
//! (which needs only this crate and burn) and burn's flex CPU device.
#![allow(dead_code, unused_imports)]

#[path = "../../../../tests/common/support.rs"]
mod support;

pub use support::*;

use burn::tensor::Device;

/// burn's flex CPU backend.
pub fn cpu() -> Device {
    Device::flex()
}

//! Shared helpers of the root package's integration tests: the workspace-wide helpers of
//! `support.rs` and `fixtures.rs`, and the devices of `devices.rs`.
#![allow(dead_code, unused_imports)]

#[path = "binary.rs"]
mod binary;
#[path = "devices.rs"]
mod devices;
#[path = "fixtures.rs"]
mod fixtures;
#[path = "support.rs"]
mod support;

pub use binary::*;
pub use devices::*;
pub use fixtures::*;
pub use support::*;

//! Running the `alexvgg` binary in the root package's tests: an empty cache and a mirror that
//! refuses connections, so no test ever downloads.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The binary, with the test environment set.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alexvgg"));
    cmd.env(
        "ALEXVGG_CACHE",
        std::env::temp_dir().join("alexvgg-test-cache-empty"),
    )
    .env("ALEXVGG_MIRROR", "http://127.0.0.1:9/");
    cmd
}

/// Runs `alexvgg ARGS` in `cwd` (or here): exit code, stdout, stderr.
pub fn alexvgg_in(cwd: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = command();
    cmd.args(args);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `alexvgg ARGS`: exit code, stdout, stderr.
pub fn alexvgg(args: &[&str]) -> (i32, String, String) {
    alexvgg_in(None, args)
}

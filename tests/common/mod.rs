//! Helpers for the end-to-end tests: run the real `mf` binary. Everything that does not need the
//! binary (generators, trees, Panda3D tools, nginx, the fault proxy, FUSE plumbing) lives in mf-test-support and is
//! re-exported here so the test files keep one import.
#![allow(dead_code, unused_imports)]

pub use mf_test_support::panda3d::{craft_multifile, multify, multify_bin, panda3d_py, panda3d_python};
pub use mf_test_support::{
    copy_tree, faults, fuse, nginx, noise, read_tree, sample_assets, stored_extents, stored_span, write_tree,
    x86_executable,
};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `mf` binary cargo built for these tests.
pub fn mf_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mf"))
}

/// Runs `mf` with `args` in `dir`.
pub fn mf_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(mf_bin()).args(args).current_dir(dir).output().expect("mf runs")
}

/// Runs `mf` and asserts success, returning stdout.
pub fn mf_ok(dir: &Path, args: &[&str]) -> String {
    let out = mf_in(dir, args);
    assert!(
        out.status.success(),
        "mf {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs `mf`, asserts it fails with exit code `code`, returns stderr.
pub fn mf_fails(dir: &Path, args: &[&str], code: i32) -> String {
    let out = mf_in(dir, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "mf {args:?} should exit {code}:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `mf` with a deadline, so a hang on damaged input fails the test instead of stalling it.
pub fn mf_with_deadline(dir: &Path, args: &[&str], seconds: u64) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(mf_bin())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mf runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("mf {args:?} did not finish within {seconds} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Starts `mf` in `dir` with its output discarded (for tests that kill it).
pub fn spawn_quiet(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(mf_bin())
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mf runs")
}

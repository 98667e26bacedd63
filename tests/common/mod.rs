//! Helpers shared by the end-to-end tests: run the real `mf` binary and build input trees.
#![allow(dead_code)]

pub mod faults;
pub mod nginx;

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

/// Writes `files` (path, content) under `root`.
pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (path, content) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
}

/// Every regular file under `root`, relative path → content, sorted.
pub fn read_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).unwrap() {
            let item = item.unwrap();
            let path = item.path();
            if item.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                files.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The sample asset folder shipped in the repository.
pub fn sample_assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/assets")
}

/// An environment variable the test needs; panics (never skips) when it is missing.
fn required_env(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => panic!(
            "{name} is not set: the Panda3D tests need the real Panda3D tools. Run scripts/test, or \
             export MF_PANDA3D_PYTHON=$(scripts/panda3d-venv) and MF_MULTIFY=$(dirname $MF_PANDA3D_PYTHON)/multify"
        ),
    }
}

/// The Python of the virtualenv holding the pip package panda3d (`MF_PANDA3D_PYTHON`).
pub fn panda3d_python() -> PathBuf {
    required_env("MF_PANDA3D_PYTHON")
}

/// Panda3D's own `multify` tool (`MF_MULTIFY`).
pub fn multify_bin() -> PathBuf {
    required_env("MF_MULTIFY")
}

fn check_output(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the real `multify` with `args` in `dir` and asserts success; returns stdout.
pub fn multify(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(multify_bin()).args(args).current_dir(dir).output().expect("multify runs");
    check_output(&format!("multify {args:?}"), out)
}

/// Runs a Python script with panda3d importable, in `dir`, and asserts success; returns stdout.
pub fn panda3d_py(dir: &Path, script: &str) -> String {
    let out = Command::new(panda3d_python()).arg("-c").arg(script).current_dir(dir).output().expect("python runs");
    check_output(&format!("python script\n{script}\n"), out)
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

/// Copies the regular files of `from` into `to`, keeping relative paths.
pub fn copy_tree(from: &Path, to: &Path) {
    for (path, content) in read_tree(from) {
        let target = to.join(&path);
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
        std::fs::write(target, content).expect("write");
    }
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

/// Writes `dir/name`, a Panda3D multifile (v1.1, scale 1) laid out by hand, with Python: for shapes the
/// writers refuse or a file system cannot hold. `subfiles_py` is a Python list of
/// `(name, stored_bytes, flags, original_length)`, evaluated with `zlib` imported (flags: 0x08 zlib).
pub fn craft_multifile(dir: &Path, name: &str, subfiles_py: &str) -> PathBuf {
    let script = format!(
        r#"
import struct, zlib
entries = {subfiles_py}
out = bytearray(b'pmf\0\n\r' + struct.pack('<hhII', 1, 1, 1, 0))
names = [bytes(c ^ 0xff for c in n.encode()) for n, _, _, _ in entries]
sizes = [20 + (4 if f & 0x18 else 0) + len(x) for x, (_, _, f, _) in zip(names, entries)]
position, data = len(out), len(out) + sum(sizes) + 4
for (n, stored, flags, original), x, size in zip(entries, names, sizes):
    out += struct.pack('<IIIH', position + size, data, len(stored), flags)
    if flags & 0x18:
        out += struct.pack('<I', original)
    out += struct.pack('<IH', 0, len(x)) + x
    position, data = position + size, data + len(stored)
out += b'\0\0\0\0'
for _, stored, _, _ in entries:
    out += stored
open({name:?}, 'wb').write(out)
"#
    );
    panda3d_py(dir, &script);
    dir.join(name)
}

//! Access traces: which files a mount's users open, in the order they first open them.
//!
//! One JSON string per line (a path may hold any character, newlines included), appended with one
//! `write` per line and no buffering, so whatever was recorded before a crash is in the file.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::fs::log_error;

pub struct TraceRecorder {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    /// `None` once a write failed (logged once; the mount goes on without recording).
    file: Option<File>,
    seen: HashSet<Box<str>>,
}

impl TraceRecorder {
    /// Creates the trace file, which must not exist: `O_EXCL` never opens an existing file and
    /// never follows a symlink at the path (not even a dangling one), so no other file is written.
    pub fn create(path: &Path) -> io::Result<TraceRecorder> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        let state = State { file: Some(file), seen: HashSet::new() };
        Ok(TraceRecorder { path: path.to_owned(), state: Mutex::new(state) })
    }

    /// Records `entry_path` unless it was recorded before.
    pub fn record(&self, entry_path: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { file, seen } = &mut *state;
        let Some(writer) = file else { return };
        if seen.contains(entry_path) {
            return;
        }
        let mut line = json_string(entry_path);
        line.push('\n');
        if let Err(e) = writer.write_all(line.as_bytes()) {
            log_error(format_args!(
                "mf mount: cannot write the access trace {}: {e}; recording stops",
                self.path.display()
            ));
            *file = None;
            return;
        }
        seen.insert(entry_path.into());
    }
}

/// `text` as a JSON string literal (RFC 8259: quote, backslash and control characters escaped).
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_json_strings() {
        assert_eq!(json_string("a/b.txt"), r#""a/b.txt""#);
        assert_eq!(json_string("q\"b\\n\nt\t\u{1}é"), r#""q\"b\\n\nt\t\u0001é""#);
    }

    #[test]
    fn records_each_path_once_in_order_and_refuses_existing_files_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let recorder = TraceRecorder::create(&path).unwrap();
        for name in ["b", "a", "b", "line\nbreak", "a"] {
            recorder.record(name);
        }
        // Written as it goes: readable before the recorder is dropped.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "\"b\"\n\"a\"\n\"line\\nbreak\"\n");
        drop(recorder);
        assert_eq!(TraceRecorder::create(&path).err().map(|e| e.kind()), Some(io::ErrorKind::AlreadyExists));
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        assert!(TraceRecorder::create(&dir.path().join("link")).is_err(), "a dangling symlink is not followed");
        assert!(!target.exists());
    }
}

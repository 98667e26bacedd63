//! Data order from an access trace: the files a program opens first (as `mf mount --record-trace`
//! records them) are laid out first, in that order, so a mount fetching the archive on demand reads
//! its start-up set as one contiguous range at the front of the file.
//!
//! A trace is one JSON string per line (an entry path; blank lines are ignored). Traced entries come
//! first in trace order; the rest keep the usual order after them. A traced entry that could go
//! into the solid stream gets frames of its own instead ([`Compression::Zstd`]): the solid stream is
//! written in batches, later than the entries around it, so solid data could not precede the rest;
//! and a file fetched on demand then costs its own bytes, not a shared frame's.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::pack::{PackError, PackInput};
use crate::policy;
use crate::writer::{Compression, SOLID_LIMIT};

/// Largest access trace accepted.
pub const MAX_TRACE_BYTES: u64 = 256 << 20;

/// What ordering by an access trace did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceOrder {
    /// Paths the trace lists (its non-blank lines).
    pub listed: usize,
    /// Entries placed first, in trace order.
    pub placed: usize,
    /// Lines naming a path listed on an earlier line (ignored).
    pub duplicates: usize,
    /// Lines naming no file being packed (ignored).
    pub not_in_input: usize,
}

/// Reads an access trace: the entry paths of its non-blank lines, in order. A line that is not one
/// JSON string is an error naming the file and line.
pub fn read_trace(path: &Path) -> Result<Vec<String>, PackError> {
    let bad =
        |line: usize, message: String| PackError::BadTrace { place: format!("{}:{line}", path.display()), message };
    let io = |error| PackError::Io { path: path.to_owned(), error };
    // open_regular: a FIFO or device is refused, never blocked on.
    let file = crate::fs::open_regular(path).map_err(io)?;
    let mut text = String::new();
    let read = file.take(MAX_TRACE_BYTES + 1).read_to_string(&mut text);
    match read {
        Ok(_) if text.len() as u64 > MAX_TRACE_BYTES => {
            return Err(bad(0, format!("an access trace of more than {MAX_TRACE_BYTES} bytes is refused")))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(bad(0, "not UTF-8 text (a trace is one JSON string per line)".into()))
        }
        Err(e) => return Err(io(e)),
    }
    let mut paths = Vec::new();
    for (number, line) in text.split('\n').enumerate() {
        let line = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r');
        if line.is_empty() {
            continue;
        }
        paths.push(parse_json_string(line).map_err(|message| bad(number + 1, message))?);
    }
    Ok(paths)
}

/// Puts the inputs named by `trace` first, in trace order (the others keep their order after them),
/// and gives the traced ones that could go into the solid stream frames of their own.
pub fn order_by_trace(inputs: &mut [PackInput], trace: &[String]) -> TraceOrder {
    let present: HashMap<&str, ()> = inputs.iter().map(|input| (input.entry_path.as_str(), ())).collect();
    let mut rank: HashMap<String, usize> = HashMap::new();
    let mut report = TraceOrder { listed: trace.len(), ..TraceOrder::default() };
    for path in trace {
        if rank.contains_key(path) {
            report.duplicates += 1;
        } else if !present.contains_key(path.as_str()) {
            report.not_in_input += 1;
        } else {
            rank.insert(path.clone(), rank.len());
        }
    }
    report.placed = rank.len();
    // A stable sort: untraced inputs (all ranked last) keep their order.
    inputs.sort_by_key(|input| rank.get(&input.entry_path).copied().unwrap_or(usize::MAX));
    for input in &mut inputs[..report.placed] {
        let could_go_solid = input.options.compression == Compression::Solid
            || (input.options.compression == Compression::Auto
                && input.size_hint <= SOLID_LIMIT
                && !policy::is_precompressed(&input.entry_path));
        if could_go_solid {
            input.options.compression = Compression::Zstd;
        }
    }
    report
}

/// Parses one JSON string literal (RFC 8259), the whole of `text`.
fn parse_json_string(text: &str) -> Result<String, String> {
    let body =
        text.strip_prefix('"').ok_or_else(|| "expected a JSON string (an entry path in double quotes)".to_string())?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    loop {
        match chars.next() {
            None => return Err("the string is not closed (missing '\"')".into()),
            Some('"') => break,
            Some('\\') => out.push(parse_escape(&mut chars)?),
            Some(c) if (c as u32) < 0x20 => return Err(format!("control character U+{:04X} in a string", c as u32)),
            Some(c) => out.push(c),
        }
    }
    if !chars.as_str().is_empty() {
        return Err(format!("unexpected text after the string: {:?}", chars.as_str()));
    }
    Ok(out)
}

fn parse_escape(chars: &mut std::str::Chars<'_>) -> Result<char, String> {
    let c = match chars.next() {
        Some('"') => '"',
        Some('\\') => '\\',
        Some('/') => '/',
        Some('b') => '\u{8}',
        Some('f') => '\u{c}',
        Some('n') => '\n',
        Some('r') => '\r',
        Some('t') => '\t',
        Some('u') => {
            let first = hex4(chars)?;
            let code = if (0xD800..0xDC00).contains(&first) {
                // A high surrogate must be followed by an escaped low one.
                if chars.next() != Some('\\') || chars.next() != Some('u') {
                    return Err("a \\u surrogate pair is incomplete".into());
                }
                let second = hex4(chars)?;
                if !(0xDC00..0xE000).contains(&second) {
                    return Err("a \\u surrogate pair is invalid".into());
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            } else {
                first
            };
            return char::from_u32(code).ok_or_else(|| format!("\\u{first:04x} is not a character"));
        }
        Some(other) => return Err(format!("unknown escape \\{other}")),
        None => return Err("the string ends inside an escape".into()),
    };
    Ok(c)
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Result<u32, String> {
    let digits: String = chars.take(4).collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("\\u needs 4 hex digits, not {digits:?}"));
    }
    u32::from_str_radix(&digits, 16).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::EntryOptions;

    fn input(path: &str, size: u64) -> PackInput {
        PackInput { entry_path: path.into(), fs_path: path.into(), size_hint: size, options: EntryOptions::default() }
    }

    #[test]
    fn json_strings() {
        assert_eq!(parse_json_string(r#""a/b.txt""#).unwrap(), "a/b.txt");
        assert_eq!(parse_json_string(r#""q\"b\\\/\n\t\u0001\u00e9\ud83d\ude00""#).unwrap(), "q\"b\\/\n\t\u{1}é😀");
        for bad in
            ["a", r#""open"#, r#""x" y"#, r#""\q""#, r#""\u12""#, r#""\ud800""#, "\"tab\tinside\"", r#""\udc00""#]
        {
            assert!(parse_json_string(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn traced_first_in_trace_order_then_the_rest_in_theirs() {
        let mut inputs: Vec<PackInput> = vec![
            input("a.txt", 10),
            input("b.png", 10),
            input("c.txt", 1 << 20),
            input("d.txt", 10),
            input("e.txt", 10),
        ];
        let trace: Vec<String> = ["d.txt", "b.png", "zz", "d.txt", "c.txt"].iter().map(|s| s.to_string()).collect();
        let report = order_by_trace(&mut inputs, &trace);
        let order: Vec<&str> = inputs.iter().map(|i| i.entry_path.as_str()).collect();
        assert_eq!(order, ["d.txt", "b.png", "c.txt", "a.txt", "e.txt"]);
        assert_eq!(report, TraceOrder { listed: 5, placed: 3, duplicates: 1, not_in_input: 1 });
        // Small compressible traced files leave the solid stream; the rest keep their compression.
        assert_eq!(inputs[0].options.compression, Compression::Zstd);
        assert_eq!(inputs[1].options.compression, Compression::Auto, "precompressed: never solid anyway");
        assert_eq!(inputs[2].options.compression, Compression::Auto, "large: never solid anyway");
        assert_eq!(inputs[3].options.compression, Compression::Auto, "untraced");
    }

    #[test]
    fn bad_trace_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace");
        std::fs::write(&path, "\"a\"\n\n\"b\"\nc\n").unwrap();
        let error = read_trace(&path).unwrap_err().to_string();
        assert!(error.contains(&format!("{}:4", path.display())), "{error}");
        std::fs::write(&path, "\"a\"\r\n\n  \"b\"  \n").unwrap();
        assert_eq!(read_trace(&path).unwrap(), ["a", "b"]);
        std::fs::write(&path, b"\"\xff\"\n").unwrap();
        assert!(read_trace(&path).unwrap_err().to_string().contains("UTF-8"));
    }
}

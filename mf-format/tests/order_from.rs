//! Packing in the order of an access trace (`DirPackOptions::order_from`, `mf pack --order-from`):
//! the traced files are the archive's first data, in trace order, and the archive reads back the same.

use std::path::Path;

use mf_format::{collect_inputs, pack_to_file, Archive, DirPackOptions, PackError, TraceOrder};
use mf_test_support::{noise, stored_span, write_tree};

fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = ["sword ", "shield ", "potion ", "dragon ", "castle\n"];
    (0..).map(|i: usize| words[(i * 7 + seed as usize) % words.len()]).flat_map(|w| w.bytes()).take(len).collect()
}

/// Small text (solid by default), large text (own frames), incompressible and precompressed files.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..20 {
        files.push((format!("scripts/s{i:02}.py"), text(2_000 + i * 300, i as u64)));
    }
    files.push(("levels/big.txt".into(), text(700_000, 99)));
    files.push(("levels/other.txt".into(), text(400_000, 98)));
    files.push(("textures/a.png".into(), noise(90_000, 5)));
    files.push(("textures/b.dds".into(), noise(30_000, 6)));
    files.push(("README".into(), b"read me\n".to_vec()));
    files
}

fn pack(dir: &Path, out: &Path, order_from: Option<&Path>) -> Result<Option<TraceOrder>, PackError> {
    let options = DirPackOptions { order_from: order_from.map(Path::to_owned), ..DirPackOptions::default() };
    let collected = collect_inputs(&[dir.to_owned()], Some(out), &options)?;
    pack_to_file(&collected.inputs, out, options.writer, |_, _| {})?;
    Ok(collected.trace)
}

#[test]
fn traced_files_are_the_first_data_in_trace_order_and_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let files = files();
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    write_tree(&input, &borrowed);
    let traced = ["scripts/s07.py", "levels/other.txt", "textures/a.png", "scripts/s02.py", "README"];
    let trace = dir.path().join("trace.jsonl");
    let mut lines: Vec<String> = traced.iter().map(|p| format!("\"{p}\"")).collect();
    lines.insert(2, "\"scripts/s07.py\"".into()); // a duplicate
    lines.push("\"not/packed.txt\"".into()); // not in the input
    std::fs::write(&trace, lines.join("\n") + "\n").unwrap();

    let ordered = dir.path().join("ordered.mf");
    let report = pack(&input, &ordered, Some(&trace)).unwrap().unwrap();
    assert_eq!(report, TraceOrder { listed: 7, placed: 5, duplicates: 1, not_in_input: 1 });
    let archive = Archive::open(&ordered).unwrap();

    // Trace order is data order, and every traced byte lies before every untraced one.
    let spans: Vec<(u64, u64)> = traced.iter().map(|p| stored_span(&archive, p)).collect();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "traced entries are laid out in trace order: {spans:?}");
    }
    let traced_end = spans.last().unwrap().1;
    for (path, _) in &files {
        if !traced.contains(&path.as_str()) {
            let (start, _) = stored_span(&archive, path);
            assert!(start >= traced_end, "{path} at {start} lies before the end of the traced data ({traced_end})");
        }
    }
    // A traced small text file left the solid stream for frames of its own.
    assert!(!archive.get("scripts/s07.py").unwrap().is_solid());
    assert!(archive.get("scripts/s08.py").unwrap().is_solid(), "untraced small files stay solid");

    // Same content as a pack without the trace, and intact.
    let plain = dir.path().join("plain.mf");
    assert_eq!(pack(&input, &plain, None).unwrap(), None);
    let plain = Archive::open(&plain).unwrap();
    assert!(archive.verify().is_empty());
    // Still the reference writer's layout for these entries: patch tools rebuild it byte for byte.
    assert_eq!(archive.reference_level(), Some(mf_format::DEFAULT_LEVEL));
    for (path, data) in &files {
        assert_eq!(&archive.read(&archive.get(path).unwrap()).unwrap()[..], &data[..], "{path}");
        assert_eq!(archive.read(&archive.get(path).unwrap()).unwrap(), plain.read(&plain.get(path).unwrap()).unwrap());
    }

    // Deterministic: the same trace gives the same bytes.
    let again = dir.path().join("again.mf");
    pack(&input, &again, Some(&trace)).unwrap();
    assert_eq!(std::fs::read(&ordered).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn a_bad_trace_line_is_refused_with_file_and_line_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_tree(&input, &[("a.txt", b"a")]);
    let trace = dir.path().join("trace.jsonl");
    std::fs::write(&trace, "\"a.txt\"\na.txt\n").unwrap();
    let out = dir.path().join("out.mf");
    let error = pack(&input, &out, Some(&trace)).unwrap_err();
    assert!(matches!(error, PackError::BadTrace { .. }), "{error}");
    assert!(error.to_string().starts_with(&format!("{}:2: ", trace.display())), "{error}");
    assert!(!out.exists());
    let missing = pack(&input, &out, Some(&dir.path().join("missing"))).unwrap_err();
    assert!(missing.to_string().contains("missing"), "{missing}");
}

//! The x86 branch filter (container 2.1) on a real x86-64 executable: the writer filters entries
//! that start with one, every way of adding an entry decides alike, reads undo the filter wherever
//! a frame is decoded, incremental pack and in-place edits copy or keep a compressed frame only
//! under the same decision, and compaction still equals a fresh pack.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use mf_format::{
    prepare_entry, Archive, ArchiveWriter, Compression, EntryOptions, ReuseSource, StoredAs, StoredLayout,
    WriterOptions,
};
use mf_test_support::{text, x86_executable};

/// 64 KiB frames: a 1.5 MiB binary spans 24 of them.
const OPTIONS: WriterOptions = WriterOptions { level: 3, frame_size_log2: 16 };
const LEN: usize = 3 << 19;

fn binary() -> Vec<u8> {
    let exe = x86_executable(LEN);
    assert_eq!(exe.len(), LEN, "the test binary is smaller than {LEN} bytes");
    exe
}

/// The same bytes with the ELF magic broken: not detected, so not filtered.
fn unrecognised(exe: &[u8]) -> Vec<u8> {
    let mut plain = exe.to_vec();
    plain[0] = b'#';
    plain
}

fn pack_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = ArchiveWriter::new(Vec::new(), OPTIONS).unwrap();
    for (path, data) in entries {
        writer.add_bytes(path, data, EntryOptions::default()).unwrap();
    }
    writer.finish().unwrap()
}

fn read_all(archive: &Archive, path: &str) -> Vec<u8> {
    archive.read(&archive.get(path).unwrap()).unwrap().into_owned()
}

#[test]
fn an_x86_executable_is_filtered_smaller_and_reads_back_exactly_every_way() {
    let exe = binary();
    let plain = unrecognised(&exe);
    let archive = Archive::from_bytes(pack_bytes(&[("bin/tool", &exe), ("bin/tool.dat", &plain)]), "x86").unwrap();
    assert_eq!(archive.version(), (2, 1));
    let tool = archive.get("bin/tool").unwrap();
    let data = archive.get("bin/tool.dat").unwrap();
    assert!(tool.has_x86_filter() && tool.stored_as() == StoredAs::Zstd);
    assert!(!data.has_x86_filter());
    // The filter pays on real machine code: the same bytes unfiltered take more room.
    assert!(
        tool.stored_size() < data.stored_size(),
        "filtered {} vs unfiltered {}",
        tool.stored_size(),
        data.stored_size()
    );
    assert!(archive.verify().is_empty());
    assert_eq!(read_all(&archive, "bin/tool"), exe);
    let mut into = vec![0u8; LEN];
    archive.read_into(&tool, &mut into).unwrap();
    assert_eq!(into, exe);
    let mut streamed = Vec::new();
    archive.reader(&tool).read_to_end(&mut streamed).unwrap();
    assert_eq!(streamed, exe);
    // Random access across frame boundaries decodes only the frames it needs, each unfiltered.
    let frame = 1usize << OPTIONS.frame_size_log2;
    for start in [0, 5, frame - 3, 7 * frame - 2, LEN - 9] {
        let mut buf = [0u8; 11];
        let n = archive.read_at(&tool, start as u64, &mut buf).unwrap();
        assert_eq!(&buf[..n], &exe[start..start + n], "at {start}");
    }
    for k in 0..archive.frame_count(&tool) {
        let mut decoded = Vec::new();
        archive.decode_frame(&tool, k, &mut decoded).unwrap();
        let start = k as usize * frame;
        assert_eq!(decoded, exe[start..start + decoded.len()], "frame {k}");
    }
    // A frame stored raw holds the content itself (the filter is for compressed frames only).
    for k in 0..archive.frame_count(&tool) {
        if archive.frame_is_raw(&tool, k) {
            let f = archive.entry_frames(&tool).start + k as u32;
            let start = k as usize * frame;
            let stored = archive.stored_frame(f).unwrap();
            assert_eq!(&stored[..], &exe[start..start + stored.len()]);
        }
    }
}

#[test]
fn every_way_of_adding_an_entry_makes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = binary();
    let file = dir.path().join("tool");
    std::fs::write(&file, &exe).unwrap();
    let expected = pack_bytes(&[("tool", &exe)]);
    let build = |add: &dyn Fn(&mut ArchiveWriter<Vec<u8>>)| {
        let mut writer = ArchiveWriter::new(Vec::new(), OPTIONS).unwrap();
        add(&mut writer);
        writer.finish().unwrap()
    };
    let options = EntryOptions::default();
    let streamed = build(&|w| w.add_reader("tool", &exe[..], options).unwrap());
    let from_file = build(&|w| w.add_file("tool", &file, options).unwrap());
    let prepared =
        build(&|w| w.add_prepared(prepare_entry("tool".into(), exe.clone(), options, &OPTIONS).unwrap()).unwrap());
    // A patch applier rebuilds an entry from its frame decisions alone.
    let archive = Archive::from_bytes(expected.clone(), "x86").unwrap();
    let entry = archive.get("tool").unwrap();
    let decisions: Vec<bool> = (0..archive.frame_count(&entry)).map(|k| !archive.frame_is_raw(&entry, k)).collect();
    let rebuilt = build(&|w| w.add_bytes_with_frames("tool", &exe, options, &decisions).unwrap());
    for (how, bytes) in [("streamed", streamed), ("file", from_file), ("prepared", prepared), ("rebuilt", rebuilt)] {
        assert!(bytes == expected, "{how} differs from add_bytes");
    }
    // Stored bytes copied verbatim carry the flag they were made under.
    let ends = archive.frame_ends(&entry);
    let layout = StoredLayout {
        size: entry.size(),
        content_hash: entry.content_hash(),
        stored_len: entry.stored_size(),
        frame_ends: &ends,
        x86_filter: entry.has_x86_filter(),
    };
    let copied = build(&|w| w.add_stored("tool", options, layout, archive.stored_bytes(&entry)).unwrap());
    assert!(copied == expected, "a verbatim copy differs");
}

#[test]
fn duplicates_share_filtered_frames_and_forced_compression_filters_too() {
    let exe = binary();
    let mut writer = ArchiveWriter::new(Vec::new(), OPTIONS).unwrap();
    writer.add_bytes("a/tool", &exe, EntryOptions::default()).unwrap();
    writer.add_bytes("b/tool", &exe, EntryOptions::default()).unwrap();
    let zstd = EntryOptions { compression: Compression::Zstd, ..EntryOptions::default() };
    writer.add_bytes("c/forced.png", &exe[..200_000], zstd).unwrap();
    let stored = EntryOptions { compression: Compression::Store, ..EntryOptions::default() };
    writer.add_bytes("d/stored", &exe[..100_000], stored).unwrap();
    let archive = Archive::from_bytes(writer.finish().unwrap(), "x86").unwrap();
    let (a, b) = (archive.get("a/tool").unwrap(), archive.get("b/tool").unwrap());
    assert_eq!(archive.entry_frames(&a), archive.entry_frames(&b));
    assert!(a.has_x86_filter() && b.has_x86_filter());
    assert!(archive.get("c/forced.png").unwrap().has_x86_filter());
    let raw = archive.get("d/stored").unwrap();
    assert!(raw.stored_as() == StoredAs::Raw && !raw.has_x86_filter());
    for path in ["a/tool", "b/tool"] {
        assert_eq!(read_all(&archive, path), exe);
    }
    assert_eq!(read_all(&archive, "c/forced.png"), &exe[..200_000]);
    assert!(archive.verify().is_empty());
}

/// An archive holding `exe` at `path` in zstd frames of the raw chunks, without the filter (as a
/// 2.0 writer stored an executable), written with the stored-bytes entry point.
fn unfiltered_archive(path: &str, exe: &[u8]) -> Vec<u8> {
    let mut compressor = zstd::bulk::Compressor::new(OPTIONS.level).unwrap();
    compressor.include_checksum(true).unwrap();
    compressor.include_contentsize(true).unwrap();
    let (mut stored, mut ends) = (Vec::new(), Vec::new());
    for chunk in exe.chunks(OPTIONS.frame_size()) {
        let frame = compressor.compress(chunk).unwrap();
        assert!(frame.len() < chunk.len());
        stored.extend_from_slice(&frame);
        ends.push(stored.len() as u64);
    }
    let layout = StoredLayout {
        size: exe.len() as u64,
        content_hash: xxhash_rust::xxh3::xxh3_64(exe),
        stored_len: stored.len() as u64,
        frame_ends: &ends,
        x86_filter: false,
    };
    let mut writer = ArchiveWriter::new(Vec::new(), OPTIONS).unwrap();
    writer.add_stored(path, EntryOptions::default(), layout, &stored[..]).unwrap();
    writer.finish().unwrap()
}

fn pack_reusing(old: Vec<u8>, entries: &[(&str, &[u8])]) -> (Vec<u8>, u64) {
    let source = ReuseSource::from_archive(Archive::from_bytes(old, "old").unwrap(), &OPTIONS);
    let mut writer = ArchiveWriter::new(Vec::new(), OPTIONS).unwrap();
    writer.set_reuse(Arc::new(source));
    for (path, data) in entries {
        writer.add_bytes(path, data, EntryOptions::default()).unwrap();
    }
    let frames = writer.reuse_report().frames;
    (writer.finish().unwrap(), frames)
}

#[test]
fn incremental_pack_copies_compressed_frames_only_under_the_same_filter_decision() {
    let exe = binary();
    let mut changed = exe.clone();
    changed[LEN / 2..LEN / 2 + 64].copy_from_slice(&[0xE8; 64]);
    let fresh = pack_bytes(&[("tool", &changed)]);
    // OLD filtered as the writer does: every frame but the changed one is copied.
    let (reused, frames) = pack_reusing(pack_bytes(&[("tool", &exe)]), &[("tool", &changed)]);
    assert!(reused == fresh, "reusing a filtered OLD changes the output");
    assert!(frames > 0, "nothing was copied");
    // OLD holds the same content unfiltered: its frames decode to the content (so a decoded
    // comparison alone would accept them) but are other bytes under the filter: none is copied.
    let old = unfiltered_archive("tool", &exe);
    let old_archive = Archive::from_bytes(old.clone(), "old").unwrap();
    assert!(!old_archive.get("tool").unwrap().has_x86_filter());
    assert_eq!(read_all(&old_archive, "tool"), exe);
    let (reused, frames) = pack_reusing(old, &[("tool", &changed)]);
    assert_eq!(frames, 0);
    assert!(reused == fresh, "reusing an unfiltered OLD changes the output");
    assert_eq!(read_all(&Archive::from_bytes(reused, "new").unwrap(), "tool"), changed);
}

fn write_archive(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn in_place_edits_keep_frames_only_under_the_same_decision_and_compaction_equals_a_fresh_pack() {
    let dir = tempfile::tempdir().unwrap();
    let exe = binary();
    let mut changed = exe.clone();
    changed[LEN / 3..LEN / 3 + 100].fill(0x90);
    let notes = text(3, 2000);

    // Filtered before and after: the unchanged frames are kept where they are.
    let path = dir.path().join("a.mf");
    write_archive(&path, &pack_bytes(&[("notes.txt", &notes), ("tool", &exe)]));
    let mut editor = mf_format::Editor::open(&path).unwrap();
    editor.put("tool", &EntryOptions::default(), &mut &changed[..], LEN as u64).unwrap();
    let report = editor.commit().unwrap();
    assert!(report.frames_reused > 0, "no frame was kept");
    let archive = Archive::open(&path).unwrap();
    assert!(archive.get("tool").unwrap().has_x86_filter());
    assert_eq!(read_all(&archive, "tool"), changed);
    assert!(archive.verify().is_empty());
    mf_format::edit::compact_file(&path).unwrap();
    let fresh = dir.path().join("fresh.mf");
    // In `mf pack`'s order, as compaction writes: by kind (extension), the extensionless first.
    write_archive(&fresh, &pack_bytes(&[("tool", &changed), ("notes.txt", &notes)]));
    assert!(std::fs::read(&path).unwrap() == std::fs::read(&fresh).unwrap(), "compaction differs from a fresh pack");

    // Unfiltered before (a 2.0 writer's executable): its compressed frames are not kept under
    // the filter, or they would decode to other content.
    let path = dir.path().join("b.mf");
    write_archive(&path, &unfiltered_archive("tool", &exe));
    let mut editor = mf_format::Editor::open(&path).unwrap();
    editor.put("tool", &EntryOptions::default(), &mut &changed[..], LEN as u64).unwrap();
    let report = editor.commit().unwrap();
    assert_eq!(report.frames_reused, 0);
    let archive = Archive::open(&path).unwrap();
    assert!(archive.get("tool").unwrap().has_x86_filter());
    assert_eq!(read_all(&archive, "tool"), changed);
    assert!(archive.verify().is_empty());
}

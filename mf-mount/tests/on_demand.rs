//! `mount_on_demand` over a sparse archive file that a fake `OnDemand` fills: the mount must ensure
//! exactly the stored bytes each read needs before reading them (a hole reads as zeros, which must
//! never be served), turn a failed `ensure` into EIO, and cache nothing from it.
//!
//! Real FUSE mounts; without /dev/fuse this fails unless MF_SKIP_FUSE=1 asks to skip.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use mf_format::{Archive, ArchiveWriter, Compression, EntryOptions, WriterOptions};
use mf_mount::{MountOptions, OnDemand};
use mf_test_support::fuse::fuse_available;
use mf_test_support::noise;

/// Fills the sparse copy from the real archive bytes on `ensure`, except ranges marked broken.
struct FakeSource {
    real: Vec<u8>,
    sparse: File,
    /// Every `ensure` call: offset, length, whether it succeeded.
    calls: Mutex<Vec<(u64, u64, bool)>>,
    prefetches: Mutex<Vec<(u64, u64)>>,
    /// Byte ranges whose `ensure` fails.
    broken: Mutex<Vec<(u64, u64)>>,
}

impl OnDemand for FakeSource {
    fn ensure(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let end = offset.checked_add(len).filter(|&end| end <= self.real.len() as u64);
        let broken = self.broken.lock().unwrap().iter().any(|&(start, stop)| offset < stop && start < offset + len);
        let ok = end.is_some() && !broken;
        self.calls.lock().unwrap().push((offset, len, ok));
        if !ok {
            return Err(std::io::Error::other("fake: those bytes cannot be fetched"));
        }
        self.sparse.write_all_at(&self.real[offset as usize..(offset + len) as usize], offset)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        self.prefetches.lock().unwrap().push((offset, len));
    }
}

fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = ["alpha ", "beta ", "gamma ", "delta ", "epsilon\n"];
    let mut out = Vec::with_capacity(len);
    let mut i = seed as usize;
    while out.len() < len {
        out.extend_from_slice(words[i % words.len()].as_bytes());
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    out.truncate(len);
    out
}

/// The files of the test archive: raw (stored), a multi-frame zstd entry, small ones in the solid
/// stream (sharing frames).
fn files() -> Vec<(String, Vec<u8>, Compression)> {
    let mut files = vec![
        ("raw/a.bin".to_string(), noise(50_000, 1), Compression::Store),
        ("raw/b.bin".to_string(), noise(9_000, 2), Compression::Store),
        ("big/text.txt".to_string(), text(300_000, 3), Compression::Zstd),
        ("big/other.txt".to_string(), text(70_000, 4), Compression::Zstd),
    ];
    for i in 0..12 {
        files.push((format!("small/{i}.txt"), text(1_500 + 200 * i, 10 + i as u64), Compression::Solid));
    }
    files
}

struct Fixture {
    dir: tempfile::TempDir,
    source: Arc<FakeSource>,
    archive: Archive,
    files: Vec<(String, Vec<u8>, Compression)>,
}

fn fixture() -> Fixture {
    let files = files();
    // 4 KiB frames: the big entries span many frames, the solid ones share a few.
    let options = WriterOptions { frame_size_log2: 12, ..WriterOptions::default() };
    let mut writer = ArchiveWriter::new(Vec::new(), options).unwrap();
    for (path, data, compression) in &files {
        writer.add_bytes(path, data, EntryOptions { compression: *compression, ..EntryOptions::default() }).unwrap();
    }
    let real = writer.finish().unwrap();
    let full = Archive::from_bytes(real.clone(), "full.mf").unwrap();
    let (index_offset, _) = full.index_extent();

    // The sparse copy holds only what opening reads: header and commit slots, index and footer.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.mf");
    let sparse = File::options().read(true).write(true).create_new(true).open(&path).unwrap();
    sparse.set_len(real.len() as u64).unwrap();
    let head = mf_format::format::DATA_START as usize;
    sparse.write_all_at(&real[..head], 0).unwrap();
    sparse.write_all_at(&real[index_offset as usize..], index_offset).unwrap();
    let archive = Archive::from_file(&sparse, &path).unwrap();
    let source = Arc::new(FakeSource {
        real,
        sparse,
        calls: Mutex::new(Vec::new()),
        prefetches: Mutex::new(Vec::new()),
        broken: Mutex::new(Vec::new()),
    });
    Fixture { dir, source, archive, files }
}

/// Detaches the mount even when an assertion fails first.
struct Guard(Option<mf_mount::MountHandle>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.unmount();
        }
    }
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Whether `offset..offset + len` lies within the union of the successful ensure calls made so far.
fn covered(calls: &[(u64, u64, bool)], offset: u64, len: u64) -> bool {
    let mut ranges: Vec<(u64, u64)> = calls.iter().filter(|c| c.2).map(|&(o, l, _)| (o, o + l)).collect();
    ranges.sort();
    let mut position = offset;
    for (start, end) in ranges {
        if start <= position && end > position {
            position = end;
        }
    }
    position >= offset + len
}

#[test]
fn every_read_is_ensured_failures_are_eio_and_a_later_success_serves_right() {
    if !fuse_available() {
        return;
    }
    let Fixture { dir, source, archive, files } = fixture();
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    // The frame table and entry extents, to check the calls against (the archive moves into the mount).
    let frames: Vec<(u64, u64)> = archive.frames().iter().map(|f| (f.offset, u64::from(f.stored_len))).collect();
    let extents: Vec<(String, u64, u64, std::ops::Range<u32>)> = archive
        .entries()
        .map(|e| (e.path().to_string(), e.offset(), e.stored_size(), archive.entry_frames(&e)))
        .collect();
    let (index_offset, _) = archive.index_extent();
    let extent = |path: &str| extents.iter().find(|e| e.0 == path).unwrap().clone();

    // Break the first frame of the big text and the middle of a raw entry before anything is read.
    let (_, _, _, big_run) = extent("big/text.txt");
    let broken_frame = frames[big_run.start as usize + 3];
    let (_, raw_offset, raw_len, _) = extent("raw/a.bin");
    let broken_raw = (raw_offset + raw_len / 2, raw_offset + raw_len / 2 + 10);
    *source.broken.lock().unwrap() = vec![(broken_frame.0, broken_frame.0 + broken_frame.1), broken_raw];

    let options = MountOptions { threads: 2, ..MountOptions::default() };
    let handle = mf_mount::mount_on_demand(archive, source.clone(), &mount_point, &options).unwrap();
    let _guard = Guard(Some(handle));

    // Nothing is fetched for listing and stat: the index was read at open.
    let listed: Vec<_> = std::fs::read_dir(mount_point.join("small")).unwrap().collect();
    assert_eq!(listed.len(), 12);
    assert_eq!(std::fs::metadata(mount_point.join("big/text.txt")).unwrap().len(), 300_000);
    assert!(source.calls.lock().unwrap().is_empty(), "listing and stat fetch nothing");

    // The broken ranges read as EIO, and nothing else is served for them.
    for path in ["big/text.txt", "raw/a.bin"] {
        let error = read(&mount_point.join(path)).expect_err(path);
        assert_eq!(error.raw_os_error(), Some(libc::EIO), "{path}: {error}");
    }
    assert!(source.calls.lock().unwrap().iter().any(|c| !c.2), "the failures came from ensure");

    // Every other file reads right: its bytes were ensured (holes are zeros, which would show).
    for (path, data, _) in &files {
        if path != "big/text.txt" && path != "raw/a.bin" {
            assert_eq!(&read(&mount_point.join(path)).unwrap(), data, "{path}");
        }
    }
    // Once the source can deliver them, the failed files read right (no failure was cached).
    source.broken.lock().unwrap().clear();
    for path in ["big/text.txt", "raw/a.bin"] {
        let data = &files.iter().find(|f| f.0 == path).unwrap().1;
        assert_eq!(&read(&mount_point.join(path)).unwrap(), data, "{path} after the source recovered");
    }

    let calls = source.calls.lock().unwrap().clone();
    // Every frame of every entry was ensured before it was decoded (all files were read whole).
    for (path, _, _, run) in &extents {
        for frame in run.clone() {
            let (offset, len) = frames[frame as usize];
            assert!(covered(&calls, offset, len), "{path}: frame {frame} at {offset} was decoded without ensure");
        }
    }
    // Exactly what reads need: no call reaches into the index, and each lies within frames or a
    // raw entry's extent (no whole-file fetches).
    for &(offset, len, _) in &calls {
        assert!(offset + len <= index_offset, "ensure({offset}, {len}) reaches the index at {index_offset}");
        let in_raw = extents.iter().any(|e| e.3.is_empty() && e.1 <= offset && offset + len <= e.1 + e.2);
        let frame_aligned = frames.iter().any(|f| f.0 == offset) && frames.iter().any(|f| f.0 + f.1 == offset + len);
        assert!(in_raw || frame_aligned, "ensure({offset}, {len}) is neither frames nor within a raw entry");
    }
    // The sequential read of the big text gave read-ahead hints: whole frames, or spans of raw
    // entries, ahead of the reads (never the index).
    let prefetches = source.prefetches.lock().unwrap().clone();
    assert!(!prefetches.is_empty(), "sequential reads prefetch");
    for &(offset, len) in &prefetches {
        assert!(len > 0 && offset + len <= index_offset, "prefetch({offset}, {len})");
        let in_raw = extents.iter().any(|e| e.3.is_empty() && e.1 <= offset && offset + len <= e.1 + e.2);
        let frame_aligned = frames.iter().any(|f| f.0 == offset) && frames.iter().any(|f| f.0 + f.1 == offset + len);
        assert!(in_raw || frame_aligned, "prefetch({offset}, {len}) is neither frames nor within a raw entry");
    }
}

#[test]
fn access_trace_records_each_opened_file_once_in_order() {
    if !fuse_available() {
        return;
    }
    let Fixture { dir, source, archive, files } = fixture();
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    let trace = dir.path().join("trace.jsonl");
    let options = MountOptions { record_trace: Some(trace.clone()), ..MountOptions::default() };
    let handle = mf_mount::mount_on_demand(archive, source, &mount_point, &options).unwrap();
    let guard = Guard(Some(handle));
    let order = ["small/3.txt", "big/text.txt", "small/3.txt", "raw/b.bin"];
    for path in order {
        let data = &files.iter().find(|f| f.0 == path).unwrap().1;
        assert_eq!(&read(&mount_point.join(path)).unwrap(), data);
    }
    std::fs::metadata(mount_point.join("raw/a.bin")).unwrap(); // a stat is not an open
                                                               // Written as it goes: complete while the mount still runs.
    let recorded = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(recorded, "\"small/3.txt\"\n\"big/text.txt\"\n\"raw/b.bin\"\n");
    drop(guard);

    // An existing trace file is never overwritten.
    let mount_point = dir.path().join("mnt");
    let Fixture { source, archive, .. } = fixture();
    let error = mf_mount::mount_on_demand(archive, source, &mount_point, &options).err().unwrap();
    assert!(matches!(error, mf_mount::Error::Trace { .. }), "{error}");
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), recorded);
}

//! `add_reader_with_frames`, the streamed rebuild a patch applier uses: the next batch is read while
//! the pool compresses the current one. An entry of many batches, read in small pieces, must give the
//! bytes of a fresh pack on any thread count, and a reader that fails or yields the wrong number of
//! frames must fail the entry, by name, wherever that happens.

use std::io::{self, Read};

use mf_format::{Archive, ArchiveWriter, EntryOptions, Error, WriterOptions};

/// 4 KiB frames: a batch is 16 to 32 frames, so the entry below is dozens of batches.
const OPTIONS: WriterOptions = WriterOptions { level: 3, frame_size_log2: 12 };
const FRAME: usize = 1 << 12;

/// 1 MiB and a partial frame: every third frame noise (stored raw), the rest compressible.
fn content() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..(1usize << 20) + 1234)
        .map(|i| {
            if (i / FRAME).is_multiple_of(3) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                (i % 251) as u8
            }
        })
        .collect()
}

/// Gives at most 1,000 bytes a call, and fails from `fail_at` on.
struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    fail_at: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.fail_at {
            return Err(io::Error::other("the disk went away"));
        }
        let n = buf.len().min(1000).min(self.data.len() - self.pos).min(self.fail_at - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn fresh(data: &[u8]) -> Vec<u8> {
    let mut writer = ArchiveWriter::new(Vec::new(), OPTIONS).unwrap();
    writer.add_bytes("big", data, EntryOptions::default()).unwrap();
    writer.finish().unwrap()
}

/// The frame decisions (compressed or raw) of the fresh pack, as a patch carries them.
fn decisions(archive_bytes: &[u8]) -> Vec<bool> {
    let archive = Archive::from_bytes(archive_bytes.to_vec(), "fresh").unwrap();
    let entry = archive.get("big").unwrap();
    (0..archive.frame_count(&entry)).map(|k| !archive.frame_is_raw(&entry, k)).collect()
}

fn rebuild(data: &[u8], fail_at: usize, decisions: &[bool]) -> Result<Vec<u8>, Error> {
    let mut writer = ArchiveWriter::new(Vec::new(), OPTIONS).unwrap();
    let reader = Trickle { data, pos: 0, fail_at };
    writer.add_reader_with_frames("big", reader, EntryOptions::default(), decisions)?;
    Ok(writer.finish().unwrap())
}

#[test]
fn a_rebuild_of_many_batches_matches_a_fresh_pack_on_any_thread_count() {
    let data = content();
    let expected = fresh(&data);
    let decisions = decisions(&expected);
    assert_eq!(decisions.len(), data.len().div_ceil(FRAME));
    assert!(decisions.contains(&true) && decisions.contains(&false), "both kinds of frame are exercised");
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let rebuilt = pool.install(|| rebuild(&data, usize::MAX, &decisions)).unwrap();
        assert!(rebuilt == expected, "the rebuild on {threads} thread(s) differs from the fresh pack");
    }
}

#[test]
fn a_reader_that_fails_mid_entry_fails_the_entry_by_name() {
    let data = content();
    let decisions = decisions(&fresh(&data));
    // In the first batch, in a batch read while another is compressed, and in the last one.
    for fail_at in [10, 300_000, data.len() - 100] {
        match rebuild(&data, fail_at, &decisions) {
            Err(Error::Io { file, error }) => {
                assert_eq!(file.to_str(), Some("big"), "failing at {fail_at}");
                assert_eq!(error.to_string(), "the disk went away");
            }
            other => panic!("failing at {fail_at}: expected the reader's error, got {:?}", other.map(|b| b.len())),
        }
    }
}

#[test]
fn content_with_more_or_fewer_frames_than_decided_is_refused() {
    let data = content();
    let decisions = decisions(&fresh(&data));
    let frames = decisions.len();
    for (what, content) in [
        ("one frame more", [&data[..], &[7u8; FRAME][..]].concat()),
        ("one frame less", data[..(frames - 2) * FRAME + 10].to_vec()),
        ("half of it", data[..data.len() / 2].to_vec()),
    ] {
        match rebuild(&content, usize::MAX, &decisions) {
            Err(Error::InvalidOption(message)) => {
                assert!(
                    message.contains("'big'") && message.contains(&format!("{frames} frames")),
                    "{what}: {message}"
                );
            }
            other => panic!("{what}: expected a refusal, got {:?}", other.map(|b| b.len())),
        }
    }
}

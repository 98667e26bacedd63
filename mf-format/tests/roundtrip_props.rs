//! Property tests: random sets of entries round-trip through `ArchiveWriter` and `Archive` byte for
//! byte, through every read path; and the output does not depend on the thread count.

use mf_test_support::noise;
use std::collections::BTreeMap;
use std::io::Read;

use mf_format::{prepare_entry, Archive, ArchiveWriter, Compression, EntryOptions, Mtime, StoredAs, WriterOptions};
use proptest::prelude::*;

/// 4 KiB frames, so multi-frame entries stay small and fast.
const FRAME_LOG2: u8 = 12;
const FRAME: usize = 1 << FRAME_LOG2;

#[derive(Debug, Clone)]
enum Content {
    Empty,
    Text {
        len: usize,
        seed: u64,
    },
    Noise {
        len: usize,
        seed: u64,
    },
    Zeros {
        len: usize,
    },
    /// Compressible and incompressible stretches alternating across frame boundaries.
    Mixed {
        parts: Vec<(bool, usize)>,
        seed: u64,
    },
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Empty => Vec::new(),
            Content::Text { len, seed } => text(*len, *seed),
            Content::Noise { len, seed } => noise(*len, *seed),
            Content::Zeros { len } => vec![0; *len],
            Content::Mixed { parts, seed } => parts
                .iter()
                .enumerate()
                .flat_map(
                    |(i, &(compressible, len))| {
                        if compressible {
                            text(len, seed + i as u64)
                        } else {
                            noise(len, seed + i as u64)
                        }
                    },
                )
                .collect(),
        }
    }
}

fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = seed % 1000;
    while out.len() < len {
        out.extend_from_slice(format!("{i} the quick brown fox {}\n", i * 7 % 13).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// Sizes around the interesting boundaries: tiny, one frame ± a byte, several frames.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..200, (FRAME - 2)..(FRAME + 2), 1usize..(5 * FRAME + 100), Just(3 * FRAME)]
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        1 => Just(Content::Empty),
        3 => (size(), any::<u64>()).prop_map(|(len, seed)| Content::Text { len, seed }),
        2 => (size(), any::<u64>()).prop_map(|(len, seed)| Content::Noise { len, seed }),
        1 => size().prop_map(|len| Content::Zeros { len }),
        2 => (prop::collection::vec((any::<bool>(), 1usize..(2 * FRAME)), 1..4), any::<u64>())
            .prop_map(|(parts, seed)| Content::Mixed { parts, seed }),
    ]
}

/// Paths from a tiny alphabet, so directories nest and names collide often.
fn path() -> impl Strategy<Value = String> {
    let component = prop::sample::select(vec!["a", "b", "c", "ab", "a.png", "b.txt", "é"]);
    prop::collection::vec(component, 1..4).prop_map(|parts| parts.join("/"))
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![Just(Compression::Auto), Just(Compression::Store), Just(Compression::Zstd)]
}

#[derive(Debug, Clone)]
struct EntrySpec {
    path: String,
    content: Content,
    options: EntryOptions,
    /// 0: add_bytes, 1: add_reader, 2: add_prepared.
    method: u8,
}

fn entry_spec() -> impl Strategy<Value = EntrySpec> {
    (
        path(),
        content(),
        compression(),
        any::<bool>(),
        prop::option::of((1i64..2_000_000_000, 0u32..1_000_000_000)),
        0u8..3,
    )
        .prop_map(|(path, content, compression, executable, mtime, method)| EntrySpec {
            path,
            content,
            options: EntryOptions {
                compression,
                mode: if executable { 0o755 } else { 0o644 },
                mtime: mtime.map(|(secs, nanos)| Mtime { secs, nanos }),
            },
            method,
        })
}

/// Drops entries whose path repeats or clashes with another as file and directory, keeping the
/// first, as a caller of the writer must.
fn valid_set(specs: Vec<EntrySpec>) -> Vec<EntrySpec> {
    let mut kept: Vec<EntrySpec> = Vec::new();
    for spec in specs {
        let clashes = kept.iter().any(|k| {
            k.path == spec.path
                || spec.path.starts_with(&format!("{}/", k.path))
                || k.path.starts_with(&format!("{}/", spec.path))
        });
        if !clashes {
            kept.push(spec);
        }
    }
    kept
}

fn entries() -> impl Strategy<Value = Vec<EntrySpec>> {
    prop::collection::vec(entry_spec(), 0..12).prop_map(valid_set)
}

fn write_archive(specs: &[EntrySpec], level: i32) -> Vec<u8> {
    let options = WriterOptions { level, frame_size_log2: FRAME_LOG2 };
    let mut writer = ArchiveWriter::new(Vec::new(), options).unwrap();
    for spec in specs {
        let data = spec.content.bytes();
        match spec.method {
            0 => writer.add_bytes(&spec.path, &data, spec.options).unwrap(),
            1 => writer.add_reader(&spec.path, &data[..], spec.options).unwrap(),
            _ => writer.add_prepared(prepare_entry(spec.path.clone(), data, spec.options, &options).unwrap()).unwrap(),
        }
    }
    writer.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_entries_round_trip_through_every_read_path(
        specs in entries(),
        level in 1i32..=3,
        probes in prop::collection::vec((any::<u64>(), 0usize..(2 * FRAME + 10)), 1..8),
    ) {
        let bytes = write_archive(&specs, level);
        let archive = Archive::from_bytes(bytes, "prop.mf").unwrap();
        prop_assert_eq!(archive.len(), specs.len());
        prop_assert!(archive.verify().is_empty());

        let mut expected_order: Vec<&str> = specs.iter().map(|s| s.path.as_str()).collect();
        expected_order.sort_unstable();
        let order: Vec<&str> = archive.entries_by_path().map(|e| e.path()).collect();
        prop_assert_eq!(order, expected_order);

        for (index, spec) in specs.iter().enumerate() {
            let data = spec.content.bytes();
            let entry = archive.get(&spec.path).unwrap();
            prop_assert_eq!(entry.index() as usize, index, "data order is the order of adding");
            prop_assert_eq!(entry.size(), data.len() as u64);
            prop_assert_eq!(entry.mode(), spec.options.mode);
            prop_assert_eq!(entry.mtime(), spec.options.mtime);
            if !entry.is_solid() {
                prop_assert_eq!(entry.offset() % 16, 0);
            }
            // (A stored entry whose content an earlier entry has shares that entry's storage.)
            let shared = archive.shared_with()[index].is_some();
            if (spec.options.compression == Compression::Store && !shared) || data.is_empty() {
                prop_assert_eq!(entry.stored_as(), StoredAs::Raw);
            }
            if entry.stored_as() == StoredAs::Raw {
                prop_assert_eq!(archive.raw_bytes(&entry).unwrap(), &data[..]);
            } else if !entry.is_solid() {
                prop_assert!(entry.stored_size() < entry.size());
            }

            prop_assert_eq!(&archive.read(&entry).unwrap()[..], &data[..]);

            // Streaming, in odd-sized reads that straddle frame boundaries.
            let mut streamed = Vec::new();
            let mut reader = archive.reader(&entry);
            let mut chunk = vec![0u8; 1000 + index * 37];
            loop {
                let n = reader.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                streamed.extend_from_slice(&chunk[..n]);
            }
            prop_assert_eq!(&streamed, &data);

            for &(offset_seed, len) in &probes {
                let offset = if data.is_empty() { 0 } else { offset_seed % (data.len() as u64 + 1) };
                let mut buf = vec![0xa5u8; len];
                let n = archive.read_at(&entry, offset, &mut buf).unwrap();
                let want = &data[offset as usize..(offset as usize + len).min(data.len())];
                prop_assert_eq!(&buf[..n], want);
            }
            let mut buf = [0u8; 1];
            prop_assert!(archive.read_at(&entry, data.len() as u64 + 1, &mut buf).is_err());

            // The run's frames, decoded one by one, hold the content from the entry's skip on.
            let mut frames = Vec::new();
            for k in 0..archive.frame_count(&entry) {
                let mut frame = Vec::new();
                archive.decode_frame(&entry, k, &mut frame).unwrap();
                prop_assert_eq!(frame.len() as u64, archive.frame_len(&entry, k));
                frames.extend_from_slice(&frame);
            }
            if entry.stored_as() == StoredAs::Zstd {
                let skip = archive.entry_skip(&entry) as usize;
                prop_assert_eq!(&frames[skip..skip + data.len()], &data[..]);
                prop_assert!(skip < archive.frame_len(&entry, 0) as usize, "the run is minimal");
            }
        }
        prop_assert!(archive.get("zz-not-there").is_none());
    }

    #[test]
    fn output_does_not_depend_on_the_thread_count(specs in entries()) {
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let four = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let a = one.install(|| write_archive(&specs, 3));
        let b = four.install(|| write_archive(&specs, 3));
        prop_assert!(a == b, "archives differ between 1 and 4 threads");
    }
}

#[test]
fn the_same_content_added_three_ways_gives_the_same_bytes() {
    let data = [text(3 * FRAME + 5, 1), noise(FRAME, 2), text(100, 3)].concat();
    let mut archives = BTreeMap::new();
    for method in 0..3u8 {
        let spec = EntrySpec {
            path: "x/y.bin".into(),
            content: Content::Mixed { parts: vec![(true, 3 * FRAME + 5), (false, FRAME), (true, 100)], seed: 1 },
            options: EntryOptions::default(),
            method,
        };
        assert_eq!(spec.content.bytes().len(), data.len());
        archives.insert(method, write_archive(&[spec], 3));
    }
    assert_eq!(archives[&0], archives[&1]);
    assert_eq!(archives[&0], archives[&2]);
}

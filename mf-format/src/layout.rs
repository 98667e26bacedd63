//! Recognising the reference writer's layout (spec/FORMAT.md "What writers do") from an index alone,
//! so a patch tool can rebuild an archive byte for byte by adding the same entries, in record order,
//! with the same storage choices ([`Archive::reference_level`], [`Archive::shared_with`]).

use std::collections::HashMap;

use crate::format::{Header, COMPRESSION_NONE, DATA_START, ENTRY_FLAG_SOLID, FOOTER_LEN, VERSION_MAJOR};
use crate::reader::Archive;
use crate::writer::{DATA_ALIGNMENT, DEFAULT_LEVEL, SOLID_BATCH_FRAMES};

/// The storage fields that make two records share data.
type StorageKey = (u8, u32, u64, u64);

fn storage_key(record: &crate::format::EntryRecord) -> StorageKey {
    (record.compression, record.first_frame, record.frame_count, record.offset)
}

fn align(pos: u64) -> u64 {
    pos.div_ceil(DATA_ALIGNMENT) * DATA_ALIGNMENT
}

impl Archive {
    /// For each entry (record order), the earlier entry whose data it shares, if any.
    pub fn shared_with(&self) -> Vec<Option<u32>> {
        let mut first: HashMap<StorageKey, u32> = HashMap::new();
        self.entries()
            .map(|entry| {
                let record = entry.record();
                if record.size == 0 {
                    return None;
                }
                let owner = *first.entry(storage_key(record)).or_insert(entry.index());
                (owner != entry.index()).then_some(owner)
            })
            .collect()
    }

    /// The zstd level when the archive is laid out exactly as this version's writer lays out its
    /// entries (given, in record order, with the same choice per entry of raw, own frames with the
    /// same per-frame compression, solid, or shared with an earlier entry); `None` otherwise.
    pub fn reference_level(&self) -> Option<i32> {
        let header = *self.header();
        if header != Header::new(header.frame_size_log2) || header.version_major != VERSION_MAJOR {
            return None;
        }
        let footer_end = self.index_extent().0 + self.index_extent().1 + FOOTER_LEN;
        if self.generation() != 0 || footer_end != self.file_len() {
            return None;
        }
        let level = self.consistent_level()?;
        let frame_size = self.frame_size();
        let shared = self.shared_with();
        let solid_bytes: u64 =
            self.entries().filter(|e| e.is_solid() && shared[e.index() as usize].is_none()).map(|e| e.size()).sum();
        let frames = self.frames();
        let own_frames = (frames.len() as u64).checked_sub(solid_bytes.div_ceil(frame_size))?;
        let mut sim =
            Simulation { archive: self, pos: DATA_START, next_own: 0, own_frames, solid_len: 0, solid_written: 0 };
        for entry in self.entries() {
            let record = entry.record();
            if record.size == 0 || shared[entry.index() as usize].is_some() {
                continue;
            }
            let fits = if record.compression == COMPRESSION_NONE {
                sim.pos = align(sim.pos);
                let at = sim.pos;
                sim.pos += record.size;
                record.offset == at
            } else if record.flags & ENTRY_FLAG_SOLID != 0 {
                sim.solid(record)
            } else {
                sim.own(record)
            };
            if !fits {
                return None;
            }
        }
        let left = sim.solid_len - sim.solid_written * frame_size;
        if left > 0 && !sim.write_solid(left.div_ceil(frame_size)) {
            return None;
        }
        let complete = sim.next_own == own_frames && own_frames + sim.solid_written == frames.len() as u64;
        (complete && sim.pos == self.index_extent().0).then_some(level)
    }

    /// The one level of every frames entry (raw entries record 0); the default when there is none.
    fn consistent_level(&self) -> Option<i32> {
        let mut level: Option<i8> = None;
        let mut path_offset = 0u64;
        for entry in self.entries() {
            let record = entry.record();
            if u64::from(record.path_offset) != path_offset {
                return None;
            }
            path_offset += u64::from(record.path_len);
            if record.compression == COMPRESSION_NONE {
                if record.level != 0 {
                    return None;
                }
            } else if level.replace(record.level).is_some_and(|l| l != record.level) {
                return None;
            }
        }
        let level = level.map_or(DEFAULT_LEVEL, i32::from);
        (level != 0 && zstd::compression_level_range().contains(&level)).then_some(level)
    }
}

/// The reference writer's position as it would have written the entries seen so far.
struct Simulation<'a> {
    archive: &'a Archive,
    pos: u64,
    next_own: u64,
    own_frames: u64,
    solid_len: u64,
    solid_written: u64,
}

impl Simulation<'_> {
    /// An entry with frames of its own: the next frames of the table, back to back from an aligned
    /// offset, cut at the frame size, not all raw.
    fn own(&mut self, record: &crate::format::EntryRecord) -> bool {
        let frame_size = self.archive.frame_size();
        let count = record.size.div_ceil(frame_size);
        if u64::from(record.first_frame) != self.next_own || record.offset != 0 || record.frame_count != count {
            return false;
        }
        self.pos = align(self.pos);
        let mut all_raw = true;
        for k in 0..count {
            let frame = self.archive.frames()[(self.next_own + k) as usize];
            let len = (record.size - k * frame_size).min(frame_size);
            if frame.offset != self.pos || u64::from(frame.len) != len {
                return false;
            }
            all_raw &= frame.stored_len == frame.len;
            self.pos += u64::from(frame.stored_len);
        }
        self.next_own += count;
        !all_raw
    }

    /// A solid entry: the next bytes of the solid stream; full batches are written after it.
    fn solid(&mut self, record: &crate::format::EntryRecord) -> bool {
        let frame_size = self.archive.frame_size();
        let (first, skip) = (self.solid_len / frame_size, self.solid_len % frame_size);
        let expected_count = (skip + record.size).div_ceil(frame_size);
        if u64::from(record.first_frame) != self.own_frames + first
            || record.offset != skip
            || record.frame_count != expected_count
        {
            return false;
        }
        self.solid_len += record.size;
        let batch = SOLID_BATCH_FRAMES as u64;
        while self.solid_len - self.solid_written * frame_size >= batch * frame_size {
            if !self.write_solid(batch) {
                return false;
            }
        }
        true
    }

    /// The next `count` solid frames, back to back from an aligned offset.
    fn write_solid(&mut self, count: u64) -> bool {
        let frame_size = self.archive.frame_size();
        self.pos = align(self.pos);
        for _ in 0..count {
            let f = self.own_frames + self.solid_written;
            let Some(frame) = self.archive.frames().get(f as usize) else { return false };
            let len = (self.solid_len - self.solid_written * frame_size).min(frame_size);
            if frame.offset != self.pos || u64::from(frame.len) != len {
                return false;
            }
            self.pos += u64::from(frame.stored_len);
            self.solid_written += 1;
        }
        true
    }
}

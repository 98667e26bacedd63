//! What a patch does, entry by entry: the data behind `mf diff --stat` and `mf patch-info`.

/// How a new entry relates to the old archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// Same path, same content.
    Unchanged,
    /// Same content as an old entry under another path (renamed, moved or duplicated).
    Renamed,
    /// Content changed; diffed against an old entry (same path, or a detected rename).
    Changed,
    /// No old entry to diff against.
    Added,
    /// An old entry the new archive does not use.
    Removed,
}

impl Change {
    /// The lower-case word `mf diff --stat` and `--json` print.
    pub fn name(self) -> &'static str {
        match self {
            Change::Unchanged => "unchanged",
            Change::Renamed => "renamed",
            Change::Changed => "changed",
            Change::Added => "added",
            Change::Removed => "removed",
        }
    }
}

/// How an entry's content is rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Reuse an old entry's content.
    Copy,
    /// bsdiff against an old entry.
    Bsdiff,
    /// zstd with the old entry as reference prefix.
    ZstdRef,
    /// The whole content, zstd-compressed.
    Full,
    /// Runs of the old entry's frames kept, the others rebuilt (patch format 2.3).
    Frames,
    /// Nothing (removed entries).
    None,
}

impl Method {
    /// The word `mf diff --stat`, `mf patch-info` and `--json` print (`zstd-ref` for [`Method::ZstdRef`]).
    pub fn name(self) -> &'static str {
        match self {
            Method::Copy => "copy",
            Method::Bsdiff => "bsdiff",
            Method::ZstdRef => "zstd-ref",
            Method::Full => "full",
            Method::Frames => "frames",
            Method::None => "none",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryReport {
    /// How the entry relates to the old archive.
    pub change: Change,
    /// The new path; `None` when only the old archive knows it (patch-info on a copied entry).
    pub path: Option<String>,
    /// The old entry's path when known and different from `path`, or its data-order index.
    pub old_path: Option<String>,
    /// Data-order index of the old entry it is built from, when there is one.
    pub old_index: Option<u32>,
    /// New size (old size for removed entries).
    pub size: u64,
    /// Size of the old entry it is built from, when there is one.
    pub old_size: Option<u64>,
    /// How the content is rebuilt.
    pub method: Method,
    /// Bytes of payload this entry adds to the patch (before the control stream's compression for
    /// inline bsdiff payloads).
    pub patch_bytes: u64,
}

/// A whole patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchReport {
    /// True for archive patches, false for plain-file patches.
    pub archive: bool,
    /// The result is byte-identical to the new file (else identical in content).
    pub exact: bool,
    /// Length of the old file the patch applies to.
    pub old_len: u64,
    /// Length of the file the patch rebuilds.
    pub new_len: u64,
    /// xxh3-64 of the file the patch rebuilds.
    pub new_hash: u64,
    /// Total patch file length (0 when no patch was written, e.g. `--stat`, which estimates).
    pub patch_len: u64,
    /// New entries in data order, then removed old entries.
    pub entries: Vec<EntryReport>,
}

impl PatchReport {
    /// Number of entries with this change.
    pub fn count(&self, change: Change) -> usize {
        self.entries.iter().filter(|e| e.change == change).count()
    }

    /// Sum of sizes of entries with this change.
    pub fn bytes(&self, change: Change) -> u64 {
        self.entries.iter().filter(|e| e.change == change).map(|e| e.size).sum()
    }
}

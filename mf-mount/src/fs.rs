//! The FUSE file system: a read-only view of the node table, with file data served from the
//! archives' mappings (raw mf entries, stored Panda3D subfiles) or from the frame cache (zstd mf
//! entries by frame; compressed or encrypted Panda3D subfiles whole, as one frame).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};
use mf_panda3d::{AnyEntry, EntryLayout};

use crate::cache::{FrameCache, FrameKey};
use crate::trace::TraceRecorder;
use crate::tree::{Node, NodeKind};
use crate::version::{Opened, Versions, View};

/// An inode number always names the same content (see `version.rs`), so the kernel may keep names
/// and attributes for as long as it likes; names that change are invalidated. (A year: far beyond
/// any mount, and well inside the kernel's jiffies arithmetic.) Answers from a view that is no
/// longer current get no lifetime at all, so the kernel asks again.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Block size reported by stat and statfs: large, so that cp, stdio and Python pick big buffers.
pub const BLOCK_SIZE: u32 = 256 * 1024;

/// Background requests the kernel may queue (readahead); fuser's default is 16.
const MAX_BACKGROUND: u16 = 64;

/// How far ahead of a sequential reader the archive file is read ahead (see [`ArchiveFs::prefetch`]).
const PREFETCH_AHEAD: u64 = 4 << 20;

/// How many stored bytes an on-demand mount keeps requested ahead of a sequential reader: several
/// bandwidth-delay products of a WAN link (100 Mbit/s at 50 ms is 625 KB), so that the gaps between
/// read-ahead requests stay a small share of the link's time.
const ON_DEMAND_AHEAD: u64 = 8 << 20;

/// Slots remembering where the last read of an inode ended (indexed by inode modulo the count).
const STREAM_SLOTS: usize = 256;
/// [`FrameKey::entry`] of frames keyed by their number in the archive's frame table (shared by every
/// entry whose run includes them) rather than by entry; no entry has this index.
const SHARED_FRAMES: u32 = u32::MAX;

pub struct ArchiveFs {
    versions: Arc<Versions>,
    cache: FrameCache,
    uid: u32,
    gid: u32,
    /// Open files and directories: the view each was opened in, and its node there. Reads and
    /// listings go through it, so an open file reads the version it was opened at.
    handles: Mutex<HashMap<u64, (Arc<View>, u32)>>,
    next_handle: AtomicU64,
    /// Where the last read of an inode ended, to tell sequential readers from random ones.
    stream_ends: Box<[AtomicU64]>,
    /// The last decoded Panda3D subfile too large for a cache shard (but within the cache size):
    /// without it, reading such a subfile would decode it again for every request.
    oversized: Mutex<Option<(FrameKey, Arc<Vec<u8>>)>>,
    /// Largest decoded subfile the frame cache keeps (a shard's share of the budget).
    shard_budget: usize,
    cache_size: usize,
    /// Records which files are opened first (`MountOptions::record_trace`).
    trace: Option<TraceRecorder>,
}

thread_local! {
    /// Per worker thread: where a read spanning several frames is assembled, reused across requests.
    static ASSEMBLY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl ArchiveFs {
    pub fn new(versions: Arc<Versions>, cache_size: usize, threads: usize, trace: Option<TraceRecorder>) -> ArchiveFs {
        ArchiveFs {
            trace,
            versions,
            stream_ends: (0..STREAM_SLOTS).map(|_| AtomicU64::new(u64::MAX)).collect(),
            // A couple of spare buffers per worker absorb evictions without reallocating.
            cache: FrameCache::new(cache_size, 2 * threads.max(1)),
            oversized: Mutex::new(None),
            shard_budget: cache_size / crate::cache::SHARDS,
            cache_size,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    fn lock_handles(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<View>, u32)>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The view and node of an open handle; without one (or for a handle not ours), the current
    /// view's node of `ino`.
    fn view_of(&self, ino: INodeNo, fh: Option<FileHandle>) -> Option<(Arc<View>, u32)> {
        if let Some(handle) = fh.and_then(|fh| self.lock_handles().get(&fh.0).cloned()) {
            return Some(handle);
        }
        let view = self.versions.current();
        let (index, _) = view.node(ino)?;
        Some((view, index))
    }

    fn open_handle(&self, view: Arc<View>, index: u32) -> FileHandle {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.lock_handles().insert(fh, (view, index));
        FileHandle(fh)
    }

    /// How long the kernel may keep an answer taken from `view`.
    fn ttl(&self, view: &View) -> Duration {
        if self.versions.is_current(view) {
            TTL
        } else {
            Duration::ZERO
        }
    }

    fn attr(&self, view: &View, index: u32, node: &Node) -> FileAttr {
        let ino = view.ino(index);
        let (kind, size, perm, nlink, mtime) = match node.kind {
            NodeKind::Dir { subdirs, .. } => (FileType::Directory, 4096, 0o755, 2 + subdirs, view.dir_mtime),
            NodeKind::File { archive, entry } => match view.entry(archive, entry) {
                Some((opened, entry)) => {
                    let mtime = entry.mtime().map(system_time).unwrap_or(opened.mtime);
                    (FileType::RegularFile, entry.size(), entry.mode() as u16, 1, mtime)
                }
                None => (FileType::RegularFile, 0, 0o444, 1, view.dir_mtime),
            },
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK_SIZE,
            flags: 0,
        }
    }

    /// Inode number, kind and name of position `position` of a directory listing: `.`, `..`, then
    /// the children in name order.
    fn dir_item<'v>(
        &self,
        view: &'v View,
        index: u32,
        node: &Node,
        position: u64,
    ) -> Option<(u32, FileType, &'v [u8])> {
        let NodeKind::Dir { first, count, .. } = node.kind else { return None };
        match position {
            0 => Some((index, FileType::Directory, b".")),
            1 => Some((node.parent, FileType::Directory, b"..")),
            _ => {
                let child_position = u32::try_from(position - 2).ok().filter(|&p| p < count)?;
                let child = first + child_position;
                let child_node = view.tree.node(child)?;
                let kind = match child_node.kind {
                    NodeKind::Dir { .. } => FileType::Directory,
                    NodeKind::File { .. } => FileType::RegularFile,
                };
                Some((child, kind, view.tree.name(child_node).as_bytes()))
            }
        }
    }

    /// Replies `bytes` read from `opened` through `view`. A view that is no longer current may
    /// have been overtaken by three commits, after which its space may hold newer data: then the
    /// read fails with ESTALE instead (checked after reading, one 96-byte read of the slots).
    fn deliver(&self, view: &View, opened: &Opened, reply: ReplyData, bytes: &[u8]) {
        if !self.versions.is_current(view) && opened.overtaken() {
            return reply.error(Errno::ESTALE);
        }
        reply.data(bytes)
    }

    /// Frame `frame` of the archive's frame table decoded, from the cache or freshly decoded into a
    /// recycled buffer (after its stored bytes are ensured, on demand). Keyed by frame number, so
    /// entries sharing a frame (a solid block, deduplicated content) share its decode.
    fn frame(&self, opened: &Opened, entry: &AnyEntry<'_>, frame: u32) -> Result<Arc<Vec<u8>>, Errno> {
        let archive = &opened.archive;
        let key = FrameKey { archive: opened.id, entry: SHARED_FRAMES, frame: u64::from(frame) };
        if let Some(frame) = self.cache.get(&key) {
            return Ok(frame);
        }
        if opened.source.is_some() {
            let (offset, len) = stored_frame(opened, frame).ok_or(Errno::EIO)?;
            ensure(opened, entry, offset, len)?;
        }
        let mut buffer = self.cache.take_buffer();
        match archive.decode_frame_at(frame, &mut buffer) {
            Ok(()) => Ok(self.cache.insert(key, buffer)),
            Err(e) => {
                self.cache.recycle(buffer);
                log_error(format_args!(
                    "mf mount: I/O error reading '{}' from archive {}: {e}",
                    entry.path(),
                    archive.name().display()
                ));
                Err(Errno::EIO)
            }
        }
    }

    /// Starts the disk reads for the archive bytes a read needs, and for a sequential reader the
    /// next few MiB: entry data is read through the mapping, whose page faults would otherwise read
    /// the file synchronously in small pieces while the worker waits.
    fn prefetch(
        &self,
        ino: INodeNo,
        opened: &Opened,
        entry: &AnyEntry<'_>,
        layout: &EntryLayout<'_>,
        start: u64,
        end: u64,
    ) {
        let slot = &self.stream_ends[(ino.0 as usize) % STREAM_SLOTS];
        let previous_end = slot.swap(end, Ordering::Relaxed);
        // Kernel read-ahead requests run concurrently and may arrive slightly out of order.
        let sequential = previous_end != u64::MAX && start.abs_diff(previous_end) <= PREFETCH_AHEAD;
        let want_end = if sequential { end.saturating_add(PREFETCH_AHEAD).min(entry.size()) } else { end };
        // Stored positions of compressed data, scaled by the entry's ratio (a hint need not be exact).
        let size = entry.size().max(1);
        let stored = |position: u64| (u128::from(position) * u128::from(entry.stored_size()) / u128::from(size)) as u64;
        let (from, to) = match *layout {
            EntryLayout::Contiguous(_) | EntryLayout::Positioned => (start, want_end),
            EntryLayout::Frames { frame_size } => (
                stored(start.saturating_sub(frame_size)),
                stored(want_end.saturating_add(frame_size)).min(entry.stored_size()),
            ),
            // Decoded whole once, then served from memory: nothing to hint per request.
            EntryLayout::Stream => return,
        };
        Self::advise(opened, entry.offset().saturating_add(from), to.saturating_sub(from));
        // On demand, the stored bytes of what lies ahead of this read (the read ensures its own).
        // The link is what is slow there, so the window is ON_DEMAND_AHEAD of *stored* bytes: for a
        // compressed entry that is more content than the local window, and enough requests stay in
        // flight to cover the link's bandwidth-delay product (bench/notes/lazy.md).
        // A read from the start of an entry counts as sequential there: whole-file readers start
        // at 0, and waiting for their second read to show it costs a round trip.
        if let (Some(source), true) = (&opened.source, sequential || start == 0) {
            let window = ON_DEMAND_AHEAD;
            let ahead = (u128::from(window) * u128::from(size) / u128::from(entry.stored_size().max(1)))
                .clamp(u128::from(window), u128::from(window) * 32) as u64;
            let want_end = end.saturating_add(ahead).min(entry.size());
            if want_end > end {
                if let Some((offset, len)) = stored_span(opened, entry, layout, end, want_end) {
                    source.prefetch(offset, len);
                }
            }
        }
    }

    /// Asks the kernel to start reading `len` bytes of an archive file from `offset`.
    fn advise(opened: &Opened, offset: u64, len: u64) {
        let Some(file) = &opened.file else { return };
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
        if len > 0 {
            let _ = nix::fcntl::posix_fadvise(file, offset, len, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED);
        }
    }

    /// Serves `start..end` of a frames entry from the frame cache, keyed by the archive's frame
    /// number: entries sharing a frame (a solid block, deduplicated content) share its decode.
    fn read_frames(&self, view: &View, opened: &Opened, entry: &AnyEntry<'_>, start: u64, end: u64, reply: ReplyData) {
        let archive = &opened.archive;
        if let Err(errno) = self.ensure_frames(opened, entry, start, end) {
            return reply.error(errno);
        }
        let Some((first, within)) = archive.frame_of(entry, start) else { return reply.error(Errno::EIO) };
        let frame = match self.frame(opened, entry, first) {
            Ok(frame) => frame,
            Err(errno) => return reply.error(errno),
        };
        let in_first = (frame.len() as u64).saturating_sub(within);
        if in_first >= end - start {
            // The common case: the request lies in one frame; reply straight from the cached frame.
            return match frame.get(within as usize..(within + end - start) as usize) {
                Some(bytes) => self.deliver(view, opened, reply, bytes),
                None => reply.error(Errno::EIO),
            };
        }
        ASSEMBLY.with(|assembly| {
            let mut assembly = assembly.borrow_mut();
            assembly.clear();
            let mut position = start;
            while position < end {
                let Some((number, within)) = archive.frame_of(entry, position) else { return reply.error(Errno::EIO) };
                let frame = match self.frame(opened, entry, number) {
                    Ok(frame) => frame,
                    Err(errno) => return reply.error(errno),
                };
                let take = (frame.len() as u64).saturating_sub(within).min(end - position);
                match frame.get(within as usize..(within + take) as usize) {
                    Some(bytes) if take > 0 => assembly.extend_from_slice(bytes),
                    _ => return reply.error(Errno::EIO),
                }
                position += take;
            }
            self.deliver(view, opened, reply, &assembly);
        });
    }

    /// Reads a range of an entry without random access (a compressed or encrypted Panda3D subfile):
    /// its content is decoded whole once and kept in the frame cache as frame 0.
    fn read_stream(&self, view: &View, opened: &Opened, entry: &AnyEntry<'_>, start: u64, end: u64, reply: ReplyData) {
        match self.decoded_whole(opened, entry) {
            Ok(content) => match content.get(start as usize..end as usize) {
                Some(bytes) => self.deliver(view, opened, reply, bytes),
                None => reply.error(Errno::EIO),
            },
            Err(errno) => reply.error(errno),
        }
    }

    /// An entry's whole content: cached, or decoded (and checked) once and cached as frame 0 of its
    /// entry. The work per read is bounded by the cache budget: an entry whose content is larger than
    /// the whole cache could be kept nowhere and would be decoded again for every request (a small
    /// zlib bomb then costs gigabytes per read), so it is refused. Errors are logged and read as EIO.
    fn decoded_whole(&self, opened: &Opened, entry: &AnyEntry<'_>) -> Result<Arc<Vec<u8>>, Errno> {
        let archive = &opened.archive;
        let key = FrameKey { archive: opened.id, entry: entry.index(), frame: 0 };
        if let Some(content) = self.cache.get(&key) {
            return Ok(content);
        }
        let lock_oversized = || self.oversized.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, content)) = lock_oversized().as_ref().filter(|(k, _)| *k == key) {
            return Ok(content.clone());
        }
        if entry.size() > self.cache_size as u64 {
            log_error(format_args!(
                "mf mount: refusing to read '{}' from {}: it must be decoded whole ({} bytes of {} compression), \
                 which is more than the cache size ({} bytes; raise --cache-size to read it)",
                entry.path(),
                archive.name().display(),
                entry.size(),
                entry.compression(),
                self.cache_size
            ));
            return Err(Errno::EIO);
        }
        ensure_whole(opened, entry)?;
        // Decoded without holding the slot's lock: other entries' reads go on meanwhile.
        match archive.read(entry).map(|content| content.into_owned()) {
            Ok(content) if content.capacity() > self.shard_budget => {
                let content = Arc::new(content);
                *lock_oversized() = Some((key, content.clone()));
                Ok(content)
            }
            Ok(content) => Ok(self.cache.insert(key, content)),
            Err(e) => {
                log_error(format_args!(
                    "mf mount: I/O error reading '{}' from {}: {e}",
                    entry.path(),
                    archive.name().display()
                ));
                Err(Errno::EIO)
            }
        }
    }
}

impl ArchiveFs {
    /// On demand: ensures the stored bytes of the frames holding `start..end` of a frames entry
    /// that are not decoded in the cache yet, neighbours coalesced into one call each.
    fn ensure_frames(&self, opened: &Opened, entry: &AnyEntry<'_>, start: u64, end: u64) -> Result<(), Errno> {
        if opened.source.is_none() {
            return Ok(());
        }
        let mut missing = Coalesced::default();
        let mut position = start;
        while position < end {
            let (frame, within) = opened.archive.frame_of(entry, position).ok_or(Errno::EIO)?;
            let (offset, len) = stored_frame(opened, frame).ok_or(Errno::EIO)?;
            let key = FrameKey { archive: opened.id, entry: SHARED_FRAMES, frame: u64::from(frame) };
            if self.cache.get(&key).is_none() {
                missing.add(opened, entry, offset, len)?;
            }
            position += frame_step(opened, frame, within)?;
        }
        missing.finish(opened, entry)
    }
}

/// Byte ranges of an archive file to ensure, adjacent ones merged into one call.
#[derive(Default)]
struct Coalesced {
    pending: Option<(u64, u64)>,
}

impl Coalesced {
    /// Adds `offset..offset + len`; ensures the pending range first when this one does not continue it.
    fn add(&mut self, opened: &Opened, entry: &AnyEntry<'_>, offset: u64, len: u64) -> Result<(), Errno> {
        match &mut self.pending {
            Some((_, end)) if *end == offset => *end = offset.saturating_add(len),
            pending => {
                if let Some((start, end)) = pending.replace((offset, offset.saturating_add(len))) {
                    ensure(opened, entry, start, end - start)?;
                }
            }
        }
        Ok(())
    }

    fn finish(self, opened: &Opened, entry: &AnyEntry<'_>) -> Result<(), Errno> {
        match self.pending {
            Some((start, end)) => ensure(opened, entry, start, end - start),
            None => Ok(()),
        }
    }
}

/// The archive bytes holding entry bytes `start..end` (`start < end`): the span itself for raw
/// content, from the first frame's start to the last frame's end for frames (`None` when those lie
/// out of order, as deduplicated runs may).
fn stored_span(
    opened: &Opened,
    entry: &AnyEntry<'_>,
    layout: &EntryLayout<'_>,
    start: u64,
    end: u64,
) -> Option<(u64, u64)> {
    match layout {
        EntryLayout::Contiguous(_) | EntryLayout::Positioned => Some((entry.offset().checked_add(start)?, end - start)),
        EntryLayout::Frames { .. } => {
            let (first, _) = opened.archive.frame_of(entry, start)?;
            let (last, _) = opened.archive.frame_of(entry, end - 1)?;
            let (from, _) = stored_frame(opened, first)?;
            let (last_offset, last_len) = stored_frame(opened, last)?;
            let to = last_offset.checked_add(last_len)?;
            (to > from).then(|| (from, to - from))
        }
        EntryLayout::Stream => None,
    }
}

/// Offset and stored length of frame `frame` of the archive's frame table.
fn stored_frame(opened: &Opened, frame: u32) -> Option<(u64, u64)> {
    let record = opened.archive.as_mf()?.frames().get(frame as usize)?;
    Some((record.offset, u64::from(record.stored_len)))
}

/// How many entry bytes frame `frame` holds from `within` on (never 0: a table that says so fails).
fn frame_step(opened: &Opened, frame: u32, within: u64) -> Result<u64, Errno> {
    let len = opened.archive.as_mf().and_then(|mf| mf.frames().get(frame as usize)).map_or(0, |r| u64::from(r.len));
    Some(len.saturating_sub(within)).filter(|&step| step > 0).ok_or(Errno::EIO)
}

/// On demand: returns once bytes `offset..offset + len` of `opened`'s archive file are in place and
/// verified. A failure is logged (entry, offset, cause) and reads as EIO. A no-op for archives
/// whose bytes are all there.
fn ensure(opened: &Opened, entry: &AnyEntry<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    let Some(source) = &opened.source else { return Ok(()) };
    if len == 0 {
        return Ok(());
    }
    source.ensure(offset, len).map_err(|e| {
        log_error(format_args!(
            "mf mount: cannot read '{}': archive bytes {offset}..{} of {} are not available: {e}",
            entry.path(),
            offset.saturating_add(len),
            opened.archive.name().display()
        ));
        Errno::EIO
    })
}

/// On demand: ensures every stored byte of an entry (to decode it whole): each frame of a frames
/// entry (which may lie apart, shared with other entries), or a raw entry's extent.
fn ensure_whole(opened: &Opened, entry: &AnyEntry<'_>) -> Result<(), Errno> {
    if opened.source.is_none() {
        return Ok(());
    }
    if opened.archive.frame_of(entry, 0).is_none() {
        return ensure(opened, entry, entry.offset(), entry.stored_size());
    }
    let mut ranges = Coalesced::default();
    let mut position = 0;
    while position < entry.size() {
        let (frame, within) = opened.archive.frame_of(entry, position).ok_or(Errno::EIO)?;
        let (offset, len) = stored_frame(opened, frame).ok_or(Errno::EIO)?;
        ranges.add(opened, entry, offset, len)?;
        position += frame_step(opened, frame, within)?;
    }
    ranges.finish(opened, entry)
}

fn system_time(mtime: mf_format::Mtime) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(mtime.nanos));
    if mtime.secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(mtime.secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(mtime.secs.unsigned_abs()) + nanos
    }
}

impl fuser::Filesystem for ArchiveFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each capability separately: an old kernel lacking one still gets the others. Opens are
        // real messages (no FUSE_NO_OPEN_SUPPORT): each open file holds the view it was opened in,
        // and an open checks the archives for a newer commit first. The page cache is still kept
        // across opens (FOPEN_KEEP_CACHE), so this costs one round trip per open, not the reads.
        for wanted in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            // O_DIRECT readers with several requests in flight (libaio, io_uring) get them served
            // concurrently instead of one at a time.
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            let _ = config.add_capabilities(wanted);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut view = self.versions.current();
        let mut checked = false;
        loop {
            // A directory inode keeps its number while its path exists: unknown means removed.
            let Some((_, dir)) = view.node(parent) else { return reply.error(Errno::ESTALE) };
            if !matches!(dir.kind, NodeKind::Dir { .. }) {
                return reply.error(Errno::ENOTDIR);
            }
            let ttl = self.ttl(&view);
            match view.tree.find_child(dir, name.as_bytes()) {
                Some(index) => {
                    return match view.tree.node(index) {
                        Some(node) => reply.entry(&ttl, &self.attr(&view, index, node), Generation(0)),
                        None => reply.error(Errno::EIO),
                    }
                }
                // A name the mount lacks may have just been added: misses are cached by the
                // kernel, so checking the archives here costs little and shows new files at once.
                None if !checked && self.versions.refresh() => {
                    checked = true;
                    view = self.versions.current();
                }
                None => {
                    // Inode 0 with a lifetime: the kernel caches the miss as a negative dentry.
                    let mut negative = self.attr(&view, 0, dir);
                    negative.ino = INodeNo(0);
                    return reply.entry(&ttl, &negative, Generation(0));
                }
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.view_of(ino, fh) {
            Some((view, index)) => match view.tree.node(index) {
                Some(node) => reply.attr(&self.ttl(&view), &self.attr(&view, index, node)),
                None => reply.error(Errno::EIO),
            },
            // No longer in the archives: the kernel retries a path walk once, asking again.
            None => reply.error(Errno::ESTALE),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.versions.refresh();
        let view = self.versions.current();
        // An inode of a replaced or removed file: ESTALE makes the kernel look the path up again
        // and open what it names now.
        let Some((index, node)) = view.node(ino) else { return reply.error(Errno::ESTALE) };
        let NodeKind::File { archive, entry } = node.kind else { return reply.error(Errno::EISDIR) };
        if let (Some(trace), Some((_, entry))) = (&self.trace, view.entry(archive, entry)) {
            trace.record(entry.path());
        }
        let fh = self.open_handle(view, index);
        reply.opened(fh, FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.versions.refresh();
        let view = self.versions.current();
        let Some((index, node)) = view.node(ino) else { return reply.error(Errno::ESTALE) };
        if !matches!(node.kind, NodeKind::Dir { .. }) {
            return reply.error(Errno::ENOTDIR);
        }
        // The kernel's cached listing may be used once it has been told what changed.
        let flags = if self.versions.flushed(&view) {
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
        } else {
            FopenFlags::empty()
        };
        let fh = self.open_handle(view, index);
        reply.opened(fh, flags);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock_handles().remove(&fh.0);
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.lock_handles().remove(&fh.0);
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((view, index)) = self.view_of(ino, Some(fh)) else { return reply.error(Errno::ESTALE) };
        let Some(node) = view.tree.node(index) else { return reply.error(Errno::EIO) };
        let NodeKind::File { archive, entry } = node.kind else { return reply.error(Errno::EISDIR) };
        let Some((opened, entry)) = view.entry(archive, entry) else { return reply.error(Errno::EIO) };
        let start = offset.min(entry.size());
        let end = offset.saturating_add(u64::from(size)).min(entry.size());
        if start >= end {
            return reply.data(&[]);
        }
        let archive = &opened.archive;
        let layout = archive.layout(&entry);
        self.prefetch(ino, opened, &entry, &layout, start, end);
        if matches!(layout, EntryLayout::Contiguous(_) | EntryLayout::Positioned) {
            // Raw content: its stored bytes are the requested span itself.
            if let Err(errno) = ensure(opened, &entry, entry.offset().saturating_add(start), end - start) {
                return reply.error(errno);
            }
        }
        match layout {
            // Zero copy: the reply is written straight from the mapping.
            EntryLayout::Contiguous(raw) => match raw.get(start as usize..end as usize) {
                Some(bytes) => self.deliver(&view, opened, reply, bytes),
                None => reply.error(Errno::EIO),
            },
            EntryLayout::Frames { .. } => self.read_frames(&view, opened, &entry, start, end, reply),
            EntryLayout::Stream => self.read_stream(&view, opened, &entry, start, end, reply),
            // A pread archive (what `open_archives` makes): read into the worker's buffer, so a
            // file truncated under the mount gives EIO for the missing region, not SIGBUS.
            EntryLayout::Positioned => ASSEMBLY.with(|assembly| {
                let mut assembly = assembly.borrow_mut();
                assembly.clear();
                assembly.resize((end - start) as usize, 0);
                match archive.read_at(&entry, start, &mut assembly) {
                    Ok(_) => self.deliver(&view, opened, reply, &assembly),
                    Err(e) => {
                        log_error(format_args!(
                            "mf mount: I/O error reading '{}' from archive {}: {e}",
                            entry.path(),
                            archive.name().display()
                        ));
                        reply.error(Errno::EIO)
                    }
                }
            }),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some((view, index)) = self.view_of(ino, Some(fh)) else { return reply.error(Errno::ESTALE) };
        let Some(node) = view.tree.node(index) else { return reply.error(Errno::EIO) };
        if !matches!(node.kind, NodeKind::Dir { .. }) {
            return reply.error(Errno::ENOTDIR);
        }
        let mut position = offset;
        while let Some((item, kind, name)) = self.dir_item(&view, index, node, position) {
            if reply.add(view.ino(item), position + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
            position += 1;
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let Some((view, index)) = self.view_of(ino, Some(fh)) else { return reply.error(Errno::ESTALE) };
        let Some(node) = view.tree.node(index) else { return reply.error(Errno::EIO) };
        if !matches!(node.kind, NodeKind::Dir { .. }) {
            return reply.error(Errno::ENOTDIR);
        }
        // A listing opened before a change goes on in its version, but the kernel must not keep
        // the names it learns from it.
        let ttl = self.ttl(&view);
        let mut position = offset;
        while let Some((item, _, name)) = self.dir_item(&view, index, node, position) {
            let Some(item_node) = view.tree.node(item) else { break };
            let attr = self.attr(&view, item, item_node);
            if reply.add(attr.ino, position + 1, OsStr::from_bytes(name), &ttl, &attr, Generation(0)) {
                break;
            }
            position += 1;
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let view = self.versions.current();
        let blocks = view.tree.total_size.div_ceil(u64::from(BLOCK_SIZE));
        reply.statfs(blocks, 0, 0, view.tree.len() as u64, 0, BLOCK_SIZE, 255, BLOCK_SIZE);
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        // Archives carry no extended attributes; ENOSYS makes the kernel stop asking altogether.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }
}

/// Logs a failed read on standard error. Unlike `eprintln!`, never panics: a daemon whose stderr
/// went away (a closed pipe) must keep serving, and a panic here would take a FUSE thread down.
pub(crate) fn log_error(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tree::Tree;
    use mf_panda3d::AnyArchive;

    fn filesystem(bytes: &[u8], cache_size: usize) -> (ArchiveFs, Arc<View>) {
        let archive = AnyArchive::from_bytes(bytes.to_vec(), "p.mf").unwrap();
        let tree = Tree::build(&[&archive]).unwrap();
        let view = View::new(0, vec![Arc::new(Opened::new(archive, 0, None, None))], tree);
        let fs = ArchiveFs::new(Arc::new(Versions::new(view)), cache_size, 1, None);
        let view = fs.versions.current();
        (fs, view)
    }

    #[test]
    fn compressed_panda3d_subfiles_are_decoded_once_into_the_cache() {
        let bytes = mf_test_support::panda3d::multifile_bytes(&[
            ("a.txt", b"plain", None, 0),
            ("z.bin", &[7u8; 100_000], Some(6), 0),
        ]);
        let (fs, view) = filesystem(&bytes, 1 << 20);
        let opened = &view.archives[0];
        let archive = &opened.archive;
        let subfile = archive.get("z.bin").unwrap();
        assert!(matches!(archive.layout(&subfile), EntryLayout::Stream), "compressed: no slice of the mapping");
        let first = fs.decoded_whole(opened, &subfile).unwrap();
        assert_eq!(&first[..], &[7u8; 100_000][..]);
        let again = fs.decoded_whole(opened, &subfile).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second read is served from the cache, not decoded again");
        // Larger than a cache shard (1/8 of the budget) but within the budget: still decoded once.
        let (small, small_view) = filesystem(&bytes, 200_000);
        let first = small.decoded_whole(&small_view.archives[0], &subfile).unwrap();
        let again = small.decoded_whole(&small_view.archives[0], &subfile).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "an oversized subfile is kept too");
        // Larger than the whole cache: refused before anything is decoded.
        let (tiny, tiny_view) = filesystem(&bytes, 50_000);
        assert_eq!(tiny.decoded_whole(&tiny_view.archives[0], &subfile).err(), Some(Errno::EIO));
        let plain = archive.get("a.txt").unwrap();
        assert!(matches!(archive.layout(&plain), EntryLayout::Contiguous(b"plain")), "stored: served from the mapping");

        // Damaged zlib data reads as EIO (and is not cached).
        let mut damaged = bytes;
        let middle = (subfile.offset() + subfile.stored_size() / 2) as usize;
        for byte in &mut damaged[middle..middle + 4] {
            *byte ^= 0x5A;
        }
        let (fs, view) = filesystem(&damaged, 1 << 20);
        let subfile = view.archives[0].archive.get("z.bin").unwrap();
        assert_eq!(fs.decoded_whole(&view.archives[0], &subfile).err(), Some(Errno::EIO));
    }
}

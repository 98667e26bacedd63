//! Versions of the mounted namespace, and how a mount follows archives edited in place.
//!
//! A [`View`] is one version of everything the mount shows: the opened archives and the node table
//! built from them. The current view is replaced whole when an mf archive gets a newer commit (or a
//! different file is renamed over its path); requests already holding the old view (open files and
//! directory listings) keep it through their handle, so they read one consistent version.
//!
//! Inode numbers: an inode number always names the same content. A directory keeps its number as
//! long as its path exists; a file keeps its number while its path holds the same content (same
//! size, mode, mtime and content hash), and gets a fresh one when it is replaced. So the kernel's
//! page cache and attributes of an inode never go stale (KEEP_CACHE and year-long lifetimes stay
//! right), an open file of replaced content is simply another inode (as after a `rename` over it on
//! a disk file system), and after a change only the names and directories that changed are
//! invalidated in the kernel, not every path of the mount.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{INodeNo, Notifier};
use mf_panda3d::{AnyArchive, AnyEntry};

use crate::fs::log_error;
use crate::tree::{Node, NodeKind, Tree};
use crate::OnDemand;

/// A version of an archive, as the mount opened it.
pub struct Opened {
    pub archive: AnyArchive,
    /// Unique per opened version: frames cached for one version are never served for another.
    pub id: u32,
    /// Reported for entries that recorded no mtime: the archive file's mtime when first mounted
    /// (kept across versions, so unchanged entries keep their attributes).
    pub mtime: SystemTime,
    /// The archive file (when it is one): read-ahead hints, and reading its commit slots.
    pub file: Option<File>,
    /// Followed: an mf archive on disk, reopened when it gets a newer commit. (Panda3D multifiles
    /// have no commit protocol a reader could follow safely; they are served as opened.)
    pub followed: bool,
    /// `(device, inode)` of the file this version was opened from.
    identity: Option<(u64, u64)>,
    /// The commit generation this version was opened at.
    pub generation: u64,
    /// Where the archive file's bytes come from when they arrive on demand (a mount straight from
    /// a release repository): every read of archive bytes past what opening read asks it first.
    pub source: Option<Arc<dyn OnDemand>>,
}

impl Opened {
    pub fn new(archive: AnyArchive, id: u32, mtime: Option<SystemTime>, file: Option<File>) -> Opened {
        let identity = file.as_ref().and_then(|f| f.metadata().ok()).map(|m| (m.dev(), m.ino()));
        let mtime = mtime
            .or_else(|| file.as_ref().and_then(|f| f.metadata().and_then(|m| m.modified()).ok()))
            .unwrap_or_else(SystemTime::now);
        let generation = archive.as_mf().map_or(0, |mf| mf.generation());
        // Only when the file at the archive's name holds the version opened or a newer one (an
        // archive read from memory may merely be named like a file; a commit may land meanwhile).
        let followed = match (archive.as_mf(), &file) {
            (Some(mf), Some(f)) => mf_format::reader::committed_generation(f, mf.name()).is_ok_and(|g| g >= generation),
            _ => false,
        };
        Opened { archive, id, mtime, file, followed, identity, generation, source: None }
    }

    /// This version with its bytes arriving on demand from `source`: not followed (its file is
    /// being filled, not committed to).
    pub fn on_demand(mut self, source: Arc<dyn OnDemand>) -> Opened {
        self.followed = false;
        self.source = Some(source);
        self
    }

    /// Whether a newer commit than this version's may have reused the space it reads: the spec
    /// guarantees a reader of generation N only through commits N + 1 and N + 2. (A streamed
    /// archive, generation 0, is the version its adoption commits as generation 1.) A file renamed
    /// over the path does not count: this version's file is then left as it is.
    pub fn overtaken(&self) -> bool {
        let (true, Some(file)) = (self.followed, &self.file) else { return false };
        match mf_format::reader::committed_generation(file, self.archive.name()) {
            Ok(generation) => generation >= self.generation.max(1).saturating_add(3),
            // Unreadable slots (a truncated file): the reads themselves report what is wrong.
            Err(_) => false,
        }
    }

    /// Whether the archive's path now holds a newer version than this one.
    fn changed_on_disk(&self) -> bool {
        if !self.followed {
            return false;
        }
        let on_path = std::fs::metadata(self.archive.name()).ok().map(|m| (m.dev(), m.ino()));
        if on_path.is_some() && on_path != self.identity {
            return true; // another file renamed over the path (`mf compact`, a rebuilt archive)
        }
        let Some(file) = &self.file else { return false };
        mf_format::reader::committed_generation(file, self.archive.name())
            .is_ok_and(|generation| generation != self.generation)
    }
}

/// One version of the mounted namespace.
pub struct View {
    /// Counts the views of a mount: 0 for the first.
    pub epoch: u64,
    pub archives: Vec<Arc<Opened>>,
    pub tree: Tree,
    inodes: Inodes,
    /// Reported for directories: the newest archive's mtime.
    pub dir_mtime: SystemTime,
}

/// Inode numbers of a view's nodes.
enum Inodes {
    /// The first view: node index + 1.
    Indexed,
    /// Later views: numbers carried over from the previous view where the content is the same.
    Mapped { of_node: Vec<u64>, node_of: HashMap<u64, u32> },
}

impl View {
    pub fn new(epoch: u64, archives: Vec<Arc<Opened>>, tree: Tree) -> View {
        let dir_mtime = archives.iter().map(|a| a.mtime).max().unwrap_or_else(SystemTime::now);
        View { epoch, archives, tree, inodes: Inodes::Indexed, dir_mtime }
    }

    pub fn ino(&self, index: u32) -> INodeNo {
        match &self.inodes {
            Inodes::Indexed => INodeNo(u64::from(index) + 1),
            Inodes::Mapped { of_node, .. } => INodeNo(of_node.get(index as usize).copied().unwrap_or(0)),
        }
    }

    /// The node an inode number names in this view.
    pub fn node(&self, ino: INodeNo) -> Option<(u32, &Node)> {
        let index = match &self.inodes {
            Inodes::Indexed => u32::try_from(ino.0.checked_sub(1)?).ok()?,
            Inodes::Mapped { node_of, .. } => *node_of.get(&ino.0)?,
        };
        Some((index, self.tree.node(index)?))
    }

    /// Entry `position` (in path order) of archive `archive`.
    pub fn entry(&self, archive: u32, position: u32) -> Option<(&Opened, AnyEntry<'_>)> {
        let opened = self.archives.get(archive as usize)?;
        Some((opened, opened.archive.lookup_entry(position as usize)?))
    }
}

/// What the kernel must forget after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A name in a directory (removed, added, or now another inode); also drops a cached miss.
    Entry(u64, Vec<u8>),
    /// A directory's attributes and cached listing.
    Inode(u64),
}

/// Whether file node `new_index` of `new` shows the same content as `old_index` of `old`.
fn same_file(old: &View, old_kind: NodeKind, new: &View, new_kind: NodeKind) -> bool {
    let (NodeKind::File { archive: oa, entry: oe }, NodeKind::File { archive: na, entry: ne }) = (old_kind, new_kind)
    else {
        return false;
    };
    let (Some((old_archive, old_entry)), Some((new_archive, new_entry))) = (old.entry(oa, oe), new.entry(na, ne))
    else {
        return false;
    };
    if std::ptr::eq(old_archive, new_archive) {
        return oe == ne;
    }
    old_entry.content_hash().is_some()
        && old_entry.content_hash() == new_entry.content_hash()
        && old_entry.size() == new_entry.size()
        && old_entry.mode() == new_entry.mode()
        && old_entry.mtime() == new_entry.mtime()
        && old_archive.mtime == new_archive.mtime
}

/// Numbers `new`'s nodes from `old`'s (see the module comment) and lists what the kernel must
/// forget: both trees are walked together from the root, directory by directory, merging each
/// pair's name-sorted children. Fresh numbers come from `next_ino`.
fn renumber(old: &View, new: &mut View, next_ino: &mut u64) -> Vec<Invalidation> {
    let mut of_node = vec![0u64; new.tree.len()];
    if let Some(root) = of_node.first_mut() {
        *root = 1;
    }
    let mut invalidations = Vec::new();
    let mut pairs = vec![(0u32, 0u32)];
    while let Some((old_dir, new_dir)) = pairs.pop() {
        let (Some(old_node), Some(new_node)) = (old.tree.node(old_dir), new.tree.node(new_dir)) else { continue };
        let (NodeKind::Dir { first: of, count: oc, subdirs: os }, NodeKind::Dir { first: nf, count: nc, subdirs: ns }) =
            (old_node.kind, new_node.kind)
        else {
            continue;
        };
        let dir_ino = of_node[new_dir as usize];
        let mut changed = os != ns;
        let (mut i, mut j) = (of, nf);
        while i < of + oc || j < nf + nc {
            let old_child = (i < of + oc).then(|| old.tree.node(i)).flatten();
            let new_child = (j < nf + nc).then(|| new.tree.node(j)).flatten();
            let order = match (old_child, new_child) {
                (Some(o), Some(n)) => old.tree.name(o).as_bytes().cmp(new.tree.name(n).as_bytes()),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => break,
            };
            match (order, old_child, new_child) {
                (std::cmp::Ordering::Equal, Some(o), Some(n)) => {
                    let kept = match (o.kind, n.kind) {
                        (NodeKind::Dir { .. }, NodeKind::Dir { .. }) => {
                            pairs.push((i, j));
                            true
                        }
                        (old_kind, new_kind) => same_file(old, old_kind, new, new_kind),
                    };
                    if kept {
                        of_node[j as usize] = old.ino(i).0;
                    } else {
                        invalidations.push(Invalidation::Entry(dir_ino, new.tree.name(n).as_bytes().to_vec()));
                        changed = true;
                    }
                    i += 1;
                    j += 1;
                }
                (std::cmp::Ordering::Less, Some(o), _) => {
                    invalidations.push(Invalidation::Entry(dir_ino, old.tree.name(o).as_bytes().to_vec()));
                    changed = true;
                    i += 1;
                }
                (_, _, Some(n)) => {
                    invalidations.push(Invalidation::Entry(dir_ino, new.tree.name(n).as_bytes().to_vec()));
                    changed = true;
                    j += 1;
                }
                _ => break,
            }
        }
        if changed {
            invalidations.push(Invalidation::Inode(dir_ino));
        }
    }
    for ino in of_node.iter_mut().filter(|ino| **ino == 0) {
        *ino = *next_ino;
        *next_ino += 1;
    }
    let node_of = of_node.iter().enumerate().map(|(index, &ino)| (ino, index as u32)).collect();
    new.inodes = Inodes::Mapped { of_node, node_of };
    invalidations
}

/// The versions of a mount: the current view, and what following the archives needs.
pub struct Versions {
    current: RwLock<Arc<View>>,
    /// Serialises rebuilds; holds the numbering state.
    state: Mutex<FollowState>,
    /// Invalidations of installed views not yet sent to the kernel, with the epoch they lead to.
    pending: Mutex<(Vec<Invalidation>, u64)>,
    wake: Condvar,
    /// The newest epoch whose invalidations the kernel has been sent.
    flushed: AtomicU64,
    stopped: AtomicBool,
}

struct FollowState {
    next_ino: u64,
    next_archive_id: u32,
    /// Per archive, the last reopen failure logged (each is logged once).
    logged: Vec<Option<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Versions {
    pub fn new(view: View) -> Versions {
        let state = FollowState {
            next_ino: view.tree.len() as u64 + 1,
            next_archive_id: view.archives.iter().map(|a| a.id).max().map_or(0, |id| id + 1),
            logged: vec![None; view.archives.len()],
        };
        Versions {
            current: RwLock::new(Arc::new(view)),
            state: Mutex::new(state),
            pending: Mutex::new((Vec::new(), 0)),
            wake: Condvar::new(),
            flushed: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    pub fn current(&self) -> Arc<View> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_current(&self, view: &View) -> bool {
        self.current.read().unwrap_or_else(|p| p.into_inner()).epoch == view.epoch
    }

    /// Whether the kernel has been told everything that changed up to `view` (so cached
    /// directory listings of it may be kept).
    pub fn flushed(&self, view: &View) -> bool {
        self.flushed.load(Ordering::Acquire) >= view.epoch
    }

    /// Checks the followed archives (a `stat` of the path and a 96-byte read of the commit slots
    /// each: cheap next to a FUSE round trip) and installs a new view when one has a newer commit.
    /// Returns whether it did.
    pub fn refresh(&self) -> bool {
        let view = self.current();
        if !view.archives.iter().any(|a| a.changed_on_disk()) {
            return false;
        }
        let mut state = lock(&self.state);
        let view = self.current(); // another thread may have rebuilt meanwhile
        let mut archives = view.archives.clone();
        let mut any = false;
        for (slot, opened) in archives.iter_mut().enumerate() {
            if !opened.changed_on_disk() {
                continue;
            }
            let id = state.next_archive_id;
            match reopen(opened, id) {
                Ok(new) => {
                    state.next_archive_id = id.wrapping_add(1);
                    *opened = Arc::new(new);
                    any = true;
                }
                Err(message) => {
                    if state.logged.get(slot) != Some(&Some(message.clone())) {
                        log_error(format_args!("mf mount: keeping the mounted version: {message}"));
                        if let Some(logged) = state.logged.get_mut(slot) {
                            *logged = Some(message);
                        }
                    }
                }
            }
        }
        if !any {
            return false;
        }
        let tree = match Tree::build(&archives.iter().map(|a| &a.archive).collect::<Vec<_>>()) {
            Ok(tree) => tree,
            Err(_) => {
                log_error(format_args!("mf mount: keeping the mounted version: the new one has too many nodes"));
                return false;
            }
        };
        let mut new = View::new(view.epoch + 1, archives, tree);
        new.dir_mtime = view.dir_mtime.max(new.dir_mtime);
        let invalidations = renumber(&view, &mut new, &mut state.next_ino);
        let epoch = new.epoch;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        let mut pending = lock(&self.pending);
        pending.0.extend(invalidations);
        pending.1 = epoch;
        self.wake.notify_all();
        true
    }

    /// Stops [`watch`](Self::watch).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _guard = lock(&self.pending);
        self.wake.notify_all();
    }

    /// The follower thread: every `every`, checks the archives; after any change (found here or by
    /// a request), sends the kernel the invalidations. Only this thread notifies the kernel: a
    /// notification waits for the directory's lock, which a lookup in progress holds, so sending
    /// one from a request handler could wait for itself.
    pub fn watch(&self, notifier: &Notifier, every: Duration) {
        loop {
            {
                let pending = lock(&self.pending);
                if pending.0.is_empty() && !self.stopped.load(Ordering::Acquire) {
                    let _ = self.wake.wait_timeout(pending, every);
                }
            }
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            self.refresh();
            let (batch, epoch) = {
                let mut pending = lock(&self.pending);
                (std::mem::take(&mut pending.0), pending.1)
            };
            for invalidation in batch {
                // Errors are harmless: ENOENT means the kernel holds nothing to forget.
                let _ = match &invalidation {
                    Invalidation::Entry(parent, name) => {
                        notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name))
                    }
                    Invalidation::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
                };
            }
            self.flushed.fetch_max(epoch, Ordering::AcqRel);
        }
    }
}

/// Opens the newer version of a followed archive (by its path, with `pread`, as at mount time).
fn reopen(opened: &Opened, id: u32) -> Result<Opened, String> {
    let path = opened.archive.name();
    let file = File::open(path).map_err(|e| format!("cannot reopen {}: {e}", path.display()))?;
    let archive = AnyArchive::open_pread(path).map_err(|e| e.to_string())?;
    if archive.as_mf().is_none() {
        return Err(format!("{} is no longer an mf archive", path.display()));
    }
    archive.check_paths().map_err(|e| e.to_string())?;
    let reopened = Opened::new(archive, id, Some(opened.mtime), Some(file));
    // The path may have been replaced between the two opens: then try again at the next check.
    let on_path = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    if on_path != reopened.identity {
        return Err(format!("{} changed while it was reopened", path.display()));
    }
    Ok(reopened)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(epoch: u64, files: &[(&str, &[u8])]) -> View {
        let mut sorted = files.to_vec();
        sorted.sort();
        let archive = AnyArchive::from_bytes(mf_test_support::mf_bytes(sorted), "t.mf").unwrap();
        let opened = Arc::new(Opened::new(archive, epoch as u32, Some(SystemTime::UNIX_EPOCH), None));
        let tree = Tree::build(&[&opened.archive]).unwrap();
        View::new(epoch, vec![opened], tree)
    }

    fn ino_of(view: &View, path: &str) -> u64 {
        let mut index = 0;
        for name in path.split('/') {
            index = view.tree.find_child(view.tree.node(index).unwrap(), name.as_bytes()).unwrap();
        }
        view.ino(index).0
    }

    #[test]
    fn unchanged_paths_keep_their_inodes_and_changes_are_invalidated() {
        let old = view(0, &[("a/same", b"1"), ("a/replaced", b"old"), ("gone", b"x"), ("d/keep", b"k")]);
        let mut new = view(1, &[("a/same", b"1"), ("a/replaced", b"new"), ("added", b"y"), ("d/keep", b"k")]);
        let mut next = old.tree.len() as u64 + 1;
        let invalidations = renumber(&old, &mut new, &mut next);
        assert_eq!(ino_of(&new, "a/same"), ino_of(&old, "a/same"));
        assert_eq!(ino_of(&new, "a"), ino_of(&old, "a"));
        assert_eq!(ino_of(&new, "d/keep"), ino_of(&old, "d/keep"));
        assert_ne!(ino_of(&new, "a/replaced"), ino_of(&old, "a/replaced"), "new content, new inode");
        assert!(ino_of(&new, "added") > old.tree.len() as u64, "fresh numbers never reuse old ones");
        assert_eq!(new.ino(0).0, 1);
        // Every inode resolves back to its node.
        for index in 0..new.tree.len() as u32 {
            assert_eq!(new.node(new.ino(index)).unwrap().0, index);
        }
        let a = ino_of(&old, "a");
        let mut expected = vec![
            Invalidation::Entry(1, b"added".to_vec()),
            Invalidation::Entry(1, b"gone".to_vec()),
            Invalidation::Inode(1),
            Invalidation::Entry(a, b"replaced".to_vec()),
            Invalidation::Inode(a),
        ];
        let mut got = invalidations;
        expected.sort_by_key(|i| format!("{i:?}"));
        got.sort_by_key(|i| format!("{i:?}"));
        assert_eq!(got, expected, "nothing about d, which did not change");
    }
}

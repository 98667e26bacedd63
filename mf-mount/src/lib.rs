//! # mf-mount: archives as read-only folders, through FUSE
//!
//! [`mount`] overlays one or more archives at a mount point (later archives win for the same
//! path; directories are implied by paths and merged), mf archives and Panda3D multifiles alike
//! (as [`AnyArchive`]s; [`open_archives`] detects the format), and serves them from worker threads until the
//! returned [`MountHandle`] is unmounted or dropped.
//!
//! What makes it fast, after squashfuse and DwarFS: the namespace is computed once per version of
//! the archives as a flat node table (directories as sorted runs); names and attributes carry
//! year-long lifetimes and misses are cached as negative entries; opens keep the page cache;
//! `readdirplus` seeks in O(1); raw entries are answered straight from the
//! mapping; zstd entries decode only the frames a read touches, through a shared byte-bounded frame
//! cache (a compressed or encrypted Panda3D subfile, which has no random access, is decoded once
//! into that cache as a single frame; a stored one is served from the mapping like a raw entry); several worker threads each own a cloned `/dev/fuse` descriptor.
//!
//! ```
//! use mf_format::{Archive, ArchiveWriter, EntryOptions, WriterOptions};
//! # if !std::path::Path::new("/dev/fuse").exists() && std::env::var_os("MF_SKIP_FUSE").is_some() {
//! #     return Ok(()); // the FUSE tests' opt-out (tests/mount.rs); without it a missing /dev/fuse fails
//! # }
//! let build = |files: &[(&str, &str)]| -> Result<Archive, Box<dyn std::error::Error>> {
//!     let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default())?;
//!     for (path, text) in files {
//!         writer.add_bytes(path, text.as_bytes(), EntryOptions::default())?;
//!     }
//!     Ok(Archive::from_bytes(writer.finish()?, "in-memory.mf")?)
//! };
//! let base = build(&[("scripts/main.py", "print(1)\n"), ("README", "base\n")])?;
//! let overlay = build(&[("scripts/main.py", "print(2)\n")])?;
//!
//! let mount_point = tempfile::tempdir()?;
//! let handle = mf_mount::mount(vec![base, overlay], mount_point.path(), &mf_mount::MountOptions::default())?;
//! let read = |path: &str| std::fs::read_to_string(mount_point.path().join(path));
//! assert_eq!(read("scripts/main.py")?, "print(2)\n"); // the later archive wins
//! assert_eq!(read("README")?, "base\n");
//! handle.unmount()?; // or drop it
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Archives that change while mounted
//!
//! An mf archive edited in place under a mount (`mf add`, `mf rm`, `mf apply --in-place`,
//! [`mf_format::Editor`]) is followed (unless [`MountOptions::follow`] is `None`); so is a new file
//! renamed over its path (`mf compact`, a rebuilt archive). Panda3D multifiles have no commit
//! protocol and are served as opened. Exactly:
//!
//! - **Seeing a new version.** The mount checks each followed archive's commit slots (a `stat` of
//!   its path and a 96-byte read) on every `open` and `opendir`, on every lookup of a name it does
//!   not have, and every [`MountOptions::follow`] interval (default [`DEFAULT_FOLLOW_INTERVAL`]).
//!   When it finds a newer commit, it opens that version and builds its tree; from then on opens,
//!   directory listings and lookups show it. So a file opened, a directory listed or a new name
//!   looked up after a commit has returned shows the committed version; names and attributes the
//!   kernel had cached (a `stat` of a path looked up before) follow within one interval, when the
//!   mount tells the kernel which names changed.
//! - **Inode numbers.** A directory keeps its inode number while its path exists; a file keeps it
//!   while its path holds the same content (size, mode, mtime and content hash), and a replaced file
//!   gets a new one: as on a disk file system after a `rename` over it.
//! - **Open files.** A file keeps reading the version it was opened in until it is closed (the
//!   kernel's page cache holds its pages by inode, so those stay right). A version opened at
//!   generation `N` reads exactly its bytes through commits `N + 1` and `N + 2` (a streamed archive,
//!   generation 0, counts as 1, the generation its adoption commits: spec/FORMAT.md "Readers that
//!   keep a version open"). After that, its reads that reach the mount fail with `ESTALE`, checked
//!   after each read of a version that is no longer the current one. The one window left: a read
//!   taken while commit `N + 3` is writing, before its commit slot is written, may see that commit's
//!   new bytes in a raw entry (a zstd frame fails its checksum and reads as EIO); readers take no
//!   lock, so nothing can close it. Likewise a current version overtaken by three commits between
//!   two checks of the mount (within one interval, with no open, listing or missed lookup between).
//!
//! ## Archives whose bytes arrive on demand
//!
//! [`mount_on_demand`] serves one mf archive whose file is still being fetched (a mount straight
//! from a release repository, `mf mount --repo`): its header and index are present, the rest arrives
//! through an [`OnDemand`] source, which every read asks for exactly the stored bytes it needs before
//! it reads them. This crate knows nothing of where the bytes come from or how they are verified.
//!
//! ## Access traces
//!
//! [`MountOptions::record_trace`] records which files are opened, in the order first opened, so
//! that a packer can lay them out first (`mf pack --order-from`).
//!
//! ## What this crate must not know
//!
//! How archives are written, patched or released, and which format an [`AnyArchive`] holds: it
//! reads through the `AnyArchive` API, never by matching its variants.
#![deny(missing_docs)]

mod cache;
mod fs;
mod sys;
mod trace;
mod tree;
mod version;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL};
use mf_panda3d::AnyArchive;

pub use sys::{absolute_mount_point, mount_at, MountInfo, Unmounted};

/// Errors of mounting and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An archive could not be opened or read.
    #[error(transparent)]
    Archive(#[from] mf_panda3d::Error),
    /// The mount point does not exist.
    #[error("mount point {0} does not exist")]
    MissingMountPoint(PathBuf),
    /// The mount point is not a directory.
    #[error("mount point {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The mount point has contents that the mount would hide.
    #[error("mount point {0} is not empty (mounting would hide its contents)")]
    NotEmpty(PathBuf),
    /// Unmounting a path that is not a mount point.
    #[error("{0} is not a mount point")]
    NotMounted(PathBuf),
    /// Unmounting a mount that is not FUSE (refused: mf only unmounts its own kind).
    #[error("{path} is a {fs_type} mount, not a FUSE mount")]
    NotFuse {
        /// The mount point.
        path: PathBuf,
        /// Its file system type, from the mount table.
        fs_type: String,
    },
    /// The mount point could not be inspected.
    #[error("cannot use mount point {path}: {source}")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// Why it could not be inspected.
        source: io::Error,
    },
    /// The kernel offers no FUSE device.
    #[error("/dev/fuse is missing: load the fuse kernel module (modprobe fuse) or run where FUSE is available")]
    NoFuseDevice,
    /// The mount itself failed.
    #[error("cannot mount at {path}: {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The kernel's or fusermount's refusal.
        source: io::Error,
    },
    /// Unmounting failed.
    #[error("cannot unmount {path}: {source}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The kernel's or fusermount's refusal (e.g. the mount is busy).
        source: io::Error,
    },
    /// The merged tree has more nodes than FUSE inode numbers can name.
    #[error("the archives hold too many files and directories to mount (more than 2^32)")]
    TooManyNodes,
    /// A `-o` style mount option that mf does not accept.
    #[error("invalid mount option: {0}")]
    InvalidOption(String),
    /// The access trace file could not be created (it must not exist yet).
    #[error("cannot create the access trace {path}: {source}")]
    Trace {
        /// The trace file asked for.
        path: PathBuf,
        /// Why it could not be created.
        source: io::Error,
    },
}

impl From<mf_format::Error> for Error {
    fn from(error: mf_format::Error) -> Self {
        Error::Archive(error.into())
    }
}

/// The result of mounting and unmounting.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bytes of an archive file that arrive on demand (a mount straight from a release repository).
///
/// A mount made with [`mount_on_demand`] calls [`ensure`](OnDemand::ensure) for exactly the stored
/// bytes every read needs (a zstd frame, shared or not; the span of a raw entry; every frame of an
/// entry decoded whole) before it reads them from the archive, so a byte not yet fetched (a hole of
/// a sparse file, which reads as zeros) is never served. When `ensure` fails, that read fails with
/// EIO and one log line naming the entry, the offset and the cause; nothing is cached from it, so
/// a later read asks again.
pub trait OnDemand: Send + Sync {
    /// Returns once bytes [offset, offset+len) of the archive file are in place and verified.
    fn ensure(&self, offset: u64, len: u64) -> std::io::Result<()>;
    /// Read-ahead hint for sequential reads; must not block.
    fn prefetch(&self, _offset: u64, _len: u64) {}
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let other users (and root) see the mount (`allow_other`). Non-root users need
    /// `user_allow_other` in /etc/fuse.conf.
    pub allow_other: bool,
    /// Bytes of decoded frames kept in memory, shared by all threads.
    pub cache_size: usize,
    /// Worker threads answering the kernel.
    pub threads: usize,
    /// Read-ahead window set on the mount (KiB; needs root). Larger windows make the kernel send
    /// larger READ requests (up to 1 MiB). `None` keeps the kernel's default (128 KiB).
    pub read_ahead_kb: Option<u32>,
    /// When unmounting a mount with open files: how long to wait for them to close before the
    /// connection is aborted (their reads then fail).
    pub unmount_grace: Duration,
    /// Follow mf archives edited in place (see "Archives that change while mounted"): how often a
    /// background thread checks them for a newer commit. `None` serves the archives as opened.
    pub follow: Option<Duration>,
    /// Record an access trace in this file, which must not exist yet (it is created, never
    /// replaced; a symlink is refused): each file's path the first time it is opened (every read
    /// goes through an open), one JSON string a line, in order, each line written as it happens so
    /// a crash keeps what was recorded. `mf pack --order-from` lays those files out first.
    pub record_trace: Option<PathBuf>,
}

/// How often a mount checks its archives for a newer commit by default. Each check costs a `stat`
/// and a 96-byte read per archive; opens, directory opens and lookups of missing names check at
/// once anyway, so this only bounds how long names and attributes the kernel cached stay old.
pub const DEFAULT_FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// The default byte budget of the decoded-frame cache shared by all workers (64 MiB).
pub const DEFAULT_CACHE_SIZE: usize = 64 << 20;

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            cache_size: DEFAULT_CACHE_SIZE,
            threads: 4,
            read_ahead_kb: Some(1024),
            unmount_grace: Duration::from_secs(1),
            follow: Some(DEFAULT_FOLLOW_INTERVAL),
            record_trace: None,
        }
    }
}

/// Opens archives for [`mount`], in overlay order.
/// Each is an mf archive or a Panda3D multifile, detected by its magic. mf archives are read with
/// `pread`, not mapped ([`AnyArchive::open_pread`]): a mount lives long, and an archive truncated
/// under it must give EIO for the missing part, not kill the daemon with SIGBUS.
pub fn open_archives<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<AnyArchive>> {
    paths.iter().map(|path| AnyArchive::open_pread(path).map_err(Error::from)).collect()
}

/// Checks that `path` is an existing, empty directory; returns it absolute.
fn check_mount_point(path: &Path) -> Result<PathBuf> {
    let path = path.canonicalize().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::MissingMountPoint(path.to_owned()),
        _ => Error::MountPoint { path: path.to_owned(), source },
    })?;
    let metadata = std::fs::metadata(&path).map_err(|source| Error::MountPoint { path: path.clone(), source })?;
    if !metadata.is_dir() {
        return Err(Error::NotADirectory(path));
    }
    let mut items = std::fs::read_dir(&path).map_err(|source| Error::MountPoint { path: path.clone(), source })?;
    if items.next().is_some() {
        return Err(Error::NotEmpty(path));
    }
    Ok(path)
}

/// A name for the mount table: `mf:<first archive's file name>`, without characters that would
/// break mount option parsing.
fn fs_name(first: Option<&AnyArchive>) -> String {
    let first = first.and_then(|a| a.name().file_name()).map(|n| n.to_string_lossy().into_owned());
    let clean: String = first
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-+".contains(c) { c } else { '_' })
        .collect();
    format!("mf:{clean}")
}

/// Mounts `archives` (overlaid in order) read-only at `mount_point`, which must be an existing empty
/// directory. Returns once the mount is live; requests are then served by background threads.
/// `archives` are [`AnyArchive`]s, or anything that converts into one ([`mf_format::Archive`], Panda3D
/// [`mf_panda3d::Multifile`]). An archive holding a file and a directory of the same path (`a` and
/// `a/b`, which Panda3D multifiles can) is refused: the mount could show only one of them.
pub fn mount<A: Into<AnyArchive>>(
    archives: Vec<A>,
    mount_point: impl AsRef<Path>,
    options: &MountOptions,
) -> Result<MountHandle> {
    let archives: Vec<AnyArchive> = archives.into_iter().map(Into::into).collect();
    for archive in &archives {
        archive.check_paths()?;
    }
    let mount_point = check_mount_point(mount_point.as_ref())?;
    let opened = archives
        .into_iter()
        .enumerate()
        .map(|(id, archive)| {
            let file = std::fs::File::open(archive.name()).ok();
            let mut opened = version::Opened::new(archive, id as u32, None, file);
            opened.followed &= options.follow.is_some();
            opened
        })
        .collect();
    serve(opened, mount_point, options)
}

/// Mounts one mf archive whose bytes past what [`mf_format::Archive::open`] read arrive on demand
/// from `source` (a mount straight from a release repository: `archive` is opened over a sparse
/// cache file that `source` fills). Every read asks `source` for exactly the archive bytes it needs
/// first (see [`OnDemand`]); sequential readers also give it read-ahead hints. Such a mount does
/// not follow commits ([`MountOptions::follow`] is ignored). Otherwise as [`mount`].
pub fn mount_on_demand(
    archive: mf_format::Archive,
    source: Arc<dyn OnDemand>,
    mount_point: impl AsRef<Path>,
    options: &MountOptions,
) -> Result<MountHandle> {
    let mount_point = check_mount_point(mount_point.as_ref())?;
    let opened = version::Opened::new(archive.into(), 0, None, None).on_demand(source);
    serve(vec![opened], mount_point, &MountOptions { follow: None, ..options.clone() })
}

/// Mounts opened archives (overlaid in order) at a checked mount point and starts serving them.
fn serve(opened: Vec<version::Opened>, mount_point: PathBuf, options: &MountOptions) -> Result<MountHandle> {
    if options.threads == 0 {
        return Err(Error::InvalidOption("threads must be at least 1".into()));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::NoFuseDevice);
    }
    let tree =
        tree::Tree::build(&opened.iter().map(|o| &o.archive).collect::<Vec<_>>()).map_err(|_| Error::TooManyNodes)?;
    let trace = match &options.record_trace {
        Some(path) => {
            Some(trace::TraceRecorder::create(path).map_err(|source| Error::Trace { path: path.clone(), source })?)
        }
        None => None,
    };

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(fs_name(opened.first().map(|o| &o.archive))),
        MountOption::Subtype("mf".into()),
        // The kernel checks permissions from the reported modes itself: no ACCESS round trips.
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    config.acl = if options.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(options.threads);
    config.clone_fd = true;

    let opened = opened.into_iter().map(Arc::new).collect();
    let versions = Arc::new(version::Versions::new(version::View::new(0, opened, tree)));
    let filesystem = fs::ArchiveFs::new(versions.clone(), options.cache_size, options.threads, trace);
    let session = Session::new(filesystem, &mount_point, &config)
        .map_err(|source| Error::Mount { path: mount_point.clone(), source })?;
    let notifier = session.notifier();
    let device = sys::mount_at(&mount_point).ok().flatten().filter(|m| m.fs_type.starts_with("fuse")).map(|m| m.device);
    if let (Some(kib), Some(device)) = (options.read_ahead_kb, &device) {
        // Best effort: only root may, and the default still works.
        let _ = sys::set_read_ahead_kb(device, kib);
    }

    let state = Arc::new(SessionState::default());
    let thread_state = state.clone();
    let session_versions = versions.clone();
    let thread = std::thread::Builder::new()
        .name("mf-mount".into())
        .spawn(move || {
            let result = session.run();
            session_versions.stop();
            thread_state.finish(result);
        })
        .map_err(|source| Error::Mount { path: mount_point.clone(), source })?;
    if let Some(every) = options.follow {
        let watched = versions.clone();
        // Not joined: it ends within `every` of the session's end (when the session thread stops
        // it), and it may be waiting on the kernel, which unmounting must not.
        let follower =
            std::thread::Builder::new().name("mf-mount-follow".into()).spawn(move || watched.watch(&notifier, every));
        if follower.is_err() {
            // Served as opened, like a mount without following.
            log_follow_failure();
        }
    }
    Ok(MountHandle {
        stopper: Stopper { mount_point, device, state },
        thread: Some(thread),
        grace: options.unmount_grace,
    })
}

/// Mounts the archive files at `paths` (overlaid in order); see [`mount`].
pub fn mount_paths<P: AsRef<Path>>(
    paths: &[P],
    mount_point: impl AsRef<Path>,
    options: &MountOptions,
) -> Result<MountHandle> {
    mount(open_archives(paths)?, mount_point, options)
}

/// Whether the session loop has ended, and how.
#[derive(Default)]
struct SessionState {
    ended: Mutex<Option<io::Result<()>>>,
    changed: Condvar,
}

impl SessionState {
    fn finish(&self, result: io::Result<()>) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.changed.notify_all();
    }

    fn has_ended(&self) -> bool {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Waits until the session ends or `timeout` passes (forever when `None`); returns whether it ended.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        while ended.is_none() {
            match deadline {
                None => ended = self.changed.wait(ended).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    ended = self.changed.wait_timeout(ended, left).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        true
    }
}

/// Unmounts a mount from another thread (e.g. a signal handler's); cheap to clone.
#[derive(Clone)]
pub struct Stopper {
    mount_point: PathBuf,
    device: Option<String>,
    state: Arc<SessionState>,
}

impl Stopper {
    /// Unmounts, lazily when files are still open. Does nothing if the session already ended or
    /// something else is now mounted on top.
    pub fn stop(&self) -> Result<Unmounted> {
        if self.state.has_ended() {
            return Ok(Unmounted::NotMounted);
        }
        let current = sys::mount_at(&self.mount_point).ok().flatten();
        let ours = match (&current, &self.device) {
            (Some(mount), Some(device)) => &mount.device == device,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !ours {
            return Ok(Unmounted::NotMounted);
        }
        sys::unmount(&self.mount_point).map_err(|source| Error::Unmount { path: self.mount_point.clone(), source })
    }
}

/// A live mount. Unmounts and joins its threads on [`MountHandle::unmount`] or on drop.
pub struct MountHandle {
    stopper: Stopper,
    thread: Option<JoinHandle<()>>,
    grace: Duration,
}

impl MountHandle {
    /// Where the archives are mounted (absolute).
    pub fn mount_point(&self) -> &Path {
        &self.stopper.mount_point
    }

    /// `major:minor` of the mounted file system, when known.
    pub fn device(&self) -> Option<&str> {
        self.stopper.device.as_deref()
    }

    /// A handle that can unmount from another thread; [`MountHandle::wait`] then returns.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Blocks until the file system is unmounted (by a [`Stopper`], `mf umount`, `fusermount3 -u`...).
    pub fn wait(&self) {
        self.stopper.state.wait(None);
    }

    /// Whether the session is still serving requests.
    pub fn is_running(&self) -> bool {
        !self.stopper.state.has_ended()
    }

    /// Unmounts and waits for the worker threads to finish. With files still open the mount is
    /// detached at once; their reads go on for the grace period, after which the connection is
    /// aborted (so this never hangs on a reader).
    pub fn unmount(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        let state = self.stopper.state.clone();
        let stopped = self.stopper.stop();
        let mut ended = state.wait(Some(self.grace));
        if !ended {
            if let Some(device) = &self.stopper.device {
                sys::abort_connection(device);
            }
            ended = state.wait(Some(self.grace));
        }
        if ended {
            let _ = thread.join();
        }
        // Otherwise (open files and no fusectl to abort through) the detached session ends by
        // itself when the last file closes; the thread is left to finish on its own.
        stopped.map(|_| ())?;
        let outcome = state.ended.lock().unwrap_or_else(|p| p.into_inner()).take();
        match outcome {
            Some(Err(source)) => Err(Error::Unmount { path: self.stopper.mount_point.clone(), source }),
            _ => Ok(()),
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn log_follow_failure() {
    fs::log_error(format_args!("mf mount: cannot start the thread following the archives; serving them as opened"));
}

/// Unmounts whatever FUSE mount is at `path` (for `mf umount`), also when its daemon died
/// ("transport endpoint is not connected"): a plain unmount, a lazy one when busy.
pub fn unmount(path: impl AsRef<Path>) -> Result<Unmounted> {
    let path = path.as_ref();
    let absolute =
        sys::absolute_mount_point(path).map_err(|source| Error::Unmount { path: path.to_owned(), source })?;
    let mounted = sys::mount_at(&absolute).map_err(|source| Error::Unmount { path: absolute.clone(), source })?;
    match mounted {
        None => return Err(Error::NotMounted(absolute)),
        Some(mount) if !mount.fs_type.starts_with("fuse") => {
            return Err(Error::NotFuse { path: absolute, fs_type: mount.fs_type })
        }
        Some(_) => {}
    }
    match sys::unmount(&absolute).map_err(|source| Error::Unmount { path: absolute.clone(), source })? {
        Unmounted::NotMounted => Err(Error::NotMounted(absolute)),
        other => Ok(other),
    }
}

//! The background thread: read-ahead requests first, then (with `fill`) every other block in file
//! order, rate-capped and yielding to foreground reads; then the completion check and rename.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{cache, LazyArchive, MAX_REQUEST};
use crate::error::{Error, Result};

/// Read-ahead requests kept at most; older ones are dropped first.
const MAX_QUEUED: usize = 256;
/// Longest pause between fill attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Shared {
    queue: VecDeque<(u64, u64)>,
    stop: bool,
    started: bool,
    handle: Option<JoinHandle<()>>,
    error: Option<String>,
}

/// What the archive and its background thread share; the thread holds it (and only a weak
/// reference to the archive), so dropping the archive is never held up by the thread.
#[derive(Default)]
pub(super) struct FillControl {
    shared: Mutex<Shared>,
    wake: Condvar,
}

impl FillControl {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn queue(&self, offset: u64, len: u64) {
        let mut shared = self.lock();
        if shared.queue.len() >= MAX_QUEUED {
            shared.queue.pop_front();
        }
        shared.queue.push_back((offset, len));
        drop(shared);
        self.wake.notify_all();
    }

    pub(super) fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn set_error(&self, error: Option<String>) {
        self.lock().error = error;
    }

    fn stopping(&self) -> bool {
        self.lock().stop
    }

    pub(super) fn request_stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    /// Stops the thread and waits for it, unless called on it.
    pub(super) fn stop_and_join(&self) {
        let handle = {
            let mut shared = self.lock();
            shared.stop = true;
            shared.handle.take()
        };
        self.wake.notify_all();
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }

    /// Waits up to `timeout` for a wake-up (a queued request or a stop); false when stopping.
    fn pause(&self, timeout: Duration) -> bool {
        let shared = self.lock();
        if shared.stop {
            return false;
        }
        let (shared, _) = self.wake.wait_timeout(shared, timeout).unwrap_or_else(|e| e.into_inner());
        !shared.stop
    }
}

/// Starts the thread once (a second call, or one after [`LazyArchive::stop`], does nothing).
pub(super) fn start(lazy: &Arc<LazyArchive>) {
    let control = lazy.fill.clone();
    let mut shared = control.lock();
    if shared.started || shared.stop {
        return;
    }
    shared.started = true;
    let weak = Arc::downgrade(lazy);
    let thread_control = control.clone();
    let spawned = std::thread::Builder::new().name("mf-lazy-fill".into()).spawn(move || run(&weak, &thread_control));
    match spawned {
        Ok(handle) => shared.handle = Some(handle),
        Err(e) => shared.error = Some(format!("could not start the background fill: {e}")),
    }
}

/// What the thread does next.
enum Job {
    /// Bytes `[offset, offset + len)`, for read-ahead or the fill.
    Range { offset: u64, len: u64, fill: bool },
    /// Every block is verified: check the whole file and rename it.
    Finish,
    /// Nothing to do now.
    Idle,
}

struct Pace {
    started: Instant,
    bytes: u64,
    backoff: Duration,
    cursor: u64,
}

fn run(weak: &Weak<LazyArchive>, control: &FillControl) {
    let mut pace = Pace { started: Instant::now(), bytes: 0, backoff: Duration::from_millis(250), cursor: 0 };
    loop {
        if control.stopping() {
            return;
        }
        let job = match weak.upgrade() {
            Some(lazy) => next_job(&lazy, control, &mut pace),
            None => return,
        };
        let wait = match job {
            Job::Idle => Duration::from_secs(1),
            Job::Finish => match weak.upgrade().map(|lazy| lazy.finish()) {
                Some(Ok(())) => return,
                Some(Err(e)) => {
                    // Only a table that does not describe the archive gets here: retrying cannot help.
                    control.set_error(Some(e.to_string()));
                    return;
                }
                None => return,
            },
            Job::Range { offset, len, fill } => {
                // Read-ahead serves a reader that will want these bytes next: it runs beside that
                // reader's own fetches (so requests overlap and the link stays busy); only the fill
                // yields to reads and keeps to the rate cap.
                if fill && (!yield_to_foreground(weak, control) || !rate_wait(weak, control, &pace)) {
                    return;
                }
                let Some(lazy) = weak.upgrade() else { return };
                match lazy.ensure_blocks(offset, len) {
                    Ok(()) => {
                        if fill {
                            pace.bytes += len;
                        }
                        pace.backoff = Duration::from_millis(250);
                        control.set_error(None);
                        continue;
                    }
                    Err(e) => {
                        control.set_error(Some(e.to_string()));
                        pace.backoff = (pace.backoff * 2).min(MAX_BACKOFF);
                        pace.backoff
                    }
                }
            }
        };
        if !control.pause(wait) {
            return;
        }
    }
}

/// The next queued read-ahead, else (with `fill`) the next run of blocks not yet verified.
fn next_job(lazy: &LazyArchive, control: &FillControl, pace: &mut Pace) -> Job {
    loop {
        let queued = control.lock().queue.pop_front();
        match queued {
            Some((offset, len)) if lazy.is_present(offset, len) => continue,
            Some((offset, len)) => {
                let (offset, len) = coalesce_queued(control, offset, len);
                return Job::Range { offset, len, fill: false };
            }
            None => break,
        }
    }
    if lazy.complete.load(Ordering::Acquire) || !lazy.options.fill {
        return Job::Idle;
    }
    let block_size = u64::from(lazy.table.block_size);
    // Smaller requests under a low rate cap keep the pace smooth.
    let chunk = lazy.options.fill_rate.map_or(MAX_REQUEST, |rate| (rate / 4).clamp(block_size, MAX_REQUEST));
    match lazy.states.next_unverified(pace.cursor, (chunk / block_size).max(1)) {
        Some(run) => {
            pace.cursor = run.end;
            let start = lazy.table.block_range(run.start).start;
            let end = lazy.table.block_range(run.end - 1).end;
            Job::Range { offset: start, len: end - start, fill: true }
        }
        None if lazy.states.complete() => Job::Finish,
        // Blocks busy with foreground reads: look again when they settle.
        None => {
            lazy.states.wait_settled(Duration::from_millis(100));
            Job::Idle
        }
    }
}

/// Most bytes one read-ahead job covers after merging queued hints: a sequential reader's hints
/// overlap, each adding a little at the end; merged, they become a few requests fetched in parallel
/// instead of one small request (and one round trip) per hint.
const MAX_READ_AHEAD_JOB: u64 = 4 * MAX_REQUEST;

/// Extends `[offset, offset + len)` with the queued hints that overlap or touch it, up to
/// [`MAX_READ_AHEAD_JOB`] bytes, removing them from the queue.
fn coalesce_queued(control: &FillControl, offset: u64, len: u64) -> (u64, u64) {
    let mut end = offset.saturating_add(len);
    let mut shared = control.lock();
    while let Some(&(next, next_len)) = shared.queue.front() {
        let next_end = next.saturating_add(next_len);
        let joined_end = end.max(next_end);
        if next < offset || next > end || joined_end - offset > MAX_READ_AHEAD_JOB {
            break;
        }
        end = joined_end;
        shared.queue.pop_front();
    }
    (offset, end - offset)
}

/// Waits while foreground `ensure` calls run; false when stopping or the archive is gone.
fn yield_to_foreground(weak: &Weak<LazyArchive>, control: &FillControl) -> bool {
    loop {
        match weak.upgrade() {
            Some(lazy) if lazy.foreground.load(Ordering::SeqCst) == 0 => return true,
            Some(_) => {}
            None => return false,
        }
        if !control.pause(Duration::from_millis(5)) {
            return false;
        }
    }
}

/// Waits until the fill's bytes so far fit its rate cap; false when stopping or gone.
fn rate_wait(weak: &Weak<LazyArchive>, control: &FillControl, pace: &Pace) -> bool {
    let Some(rate) = weak.upgrade().and_then(|lazy| lazy.options.fill_rate) else { return true };
    let due = pace.started + Duration::from_secs_f64(pace.bytes as f64 / rate.max(1) as f64);
    while let Some(left) = due.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        if !control.pause(left) {
            return false;
        }
    }
    true
}

impl LazyArchive {
    /// Every block is verified: the whole file's SHA-256 must be the manifest's; then it is
    /// fsynced, renamed to `<sha256>.mf` and the block record removed.
    fn finish(&self) -> Result<()> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        while offset < self.table.archive_size {
            let n = (self.table.archive_size - offset).min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], offset).map_err(|e| Error::io(self.cache_path(), e))?;
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        let sha256 = hex::encode(hasher.finalize());
        if sha256 != self.full.sha256 {
            return Err(Error::Mismatch {
                origin: self.cache_path().display().to_string(),
                what: format!(
                    "every block matched the block table, but the whole file's SHA-256 is {sha256}, not the manifest's {}: the table does not describe the archive",
                    self.full.sha256
                ),
            });
        }
        self.file.sync_all().map_err(|e| Error::io(self.cache_path(), e))?;
        {
            let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
            if !self.renamed.load(Ordering::Acquire) {
                let (from, to) = (format!("{}.mf.partial", self.full.sha256), format!("{}.mf", self.full.sha256));
                self.cache.rename(&from, &self.cache, &to).map_err(|e| Error::io(&self.complete_path, e))?;
                self.renamed.store(true, Ordering::Release);
            }
            let _ = self.cache.remove_file(cache::record_name(&self.full.sha256));
            let _ = self.cache.sync();
        }
        self.complete.store(true, Ordering::Release);
        Ok(())
    }
}

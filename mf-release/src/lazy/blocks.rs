//! Which blocks are present, and [`LazyArchive::ensure`]'s work: hashing claimed blocks again,
//! fetching missing ones in coalesced requests, verifying each block before it is written.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::table::BlockTable;
use super::{cache, LazyArchive, MAX_REQUEST};
use crate::error::{Error, Result};

/// A block's state in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not in the cache file (or found damaged).
    Missing,
    /// The cache's record says present: hashed again before first use.
    Claimed,
    /// A thread is checking or fetching it; others wait.
    Busy,
    /// Present and matched its SHA-256 in this session.
    Verified,
}

struct Inner {
    states: Vec<State>,
    /// Bytes of verified blocks.
    present: u64,
}

/// Every block's state, and a condition variable signalled whenever a busy block is settled.
pub(super) struct BlockStates {
    inner: Mutex<Inner>,
    settled: Condvar,
    /// Length of each block but the last, and of the last.
    block_size: u64,
    last_len: u64,
}

impl BlockStates {
    pub(super) fn new(table: &BlockTable, claimed: &[bool]) -> BlockStates {
        let states = claimed.iter().map(|&c| if c { State::Claimed } else { State::Missing }).collect();
        let count = table.block_count();
        let last_len = count.checked_sub(1).map_or(0, |last| {
            let range = table.block_range(last);
            range.end - range.start
        });
        BlockStates {
            inner: Mutex::new(Inner { states, present: 0 }),
            settled: Condvar::new(),
            block_size: u64::from(table.block_size),
            last_len,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len_of(&self, inner: &Inner, block: u64) -> u64 {
        if block + 1 == inner.states.len() as u64 {
            self.last_len
        } else {
            self.block_size
        }
    }

    pub(super) fn present_bytes(&self) -> u64 {
        self.lock().present
    }

    pub(super) fn all_verified(&self, blocks: Range<u64>) -> bool {
        let inner = self.lock();
        blocks.clone().all(|b| inner.states.get(b as usize) == Some(&State::Verified))
    }

    /// Blocks the cache may hold: verified, or claimed and not yet checked (for the record).
    pub(super) fn record(&self) -> Vec<bool> {
        self.lock().states.iter().map(|s| matches!(s, State::Verified | State::Claimed)).collect()
    }

    /// True when every block is verified.
    pub(super) fn complete(&self) -> bool {
        self.lock().states.iter().all(|&s| s == State::Verified)
    }

    /// The first block at or after `from` (wrapping around) that is neither verified nor busy, and
    /// how many blocks from it (at most `max`) are neither; `None` when there is none.
    pub(super) fn next_unverified(&self, from: u64, max: u64) -> Option<Range<u64>> {
        let inner = self.lock();
        let n = inner.states.len() as u64;
        let open = |b: u64| matches!(inner.states[b as usize], State::Missing | State::Claimed);
        let start = (from.min(n)..n).chain(0..from.min(n)).find(|&b| open(b))?;
        let end = (start..n.min(start.saturating_add(max))).find(|&b| !open(b)).unwrap_or(n.min(start + max));
        Some(start..end)
    }

    /// Waits until a block settles (or `timeout` passes).
    pub(super) fn wait_settled(&self, timeout: std::time::Duration) {
        let inner = self.lock();
        let _ = self.settled.wait_timeout(inner, timeout);
    }
}

/// The blocks one `ensure` took (marked busy), with the state each had.
struct Taken {
    claimed: Vec<u64>,
    missing: Vec<u64>,
}

/// Counts requests in flight against `max_in_flight`.
pub(super) struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Slots {
    pub(super) fn new(max: usize) -> Slots {
        Slots { used: Mutex::new(0), freed: Condvar::new(), max }
    }

    fn acquire(&self) -> SlotGuard<'_> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= self.max {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.used.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

impl LazyArchive {
    /// [`LazyArchive::ensure`] without counting as a foreground call (the fill uses it too).
    pub(super) fn ensure_blocks(&self, offset: u64, len: u64) -> Result<()> {
        let blocks = self.table.blocks_of(offset, len);
        let (mut taken, others_busy) = self.take(blocks.clone());
        let result = self.acquire(&mut taken);
        self.release(&taken);
        result?;
        if !others_busy {
            return Ok(());
        }
        // Blocks another thread was fetching: wait until they settle. If that fetch failed (after its
        // own retries) this read fails too, rather than every waiting reader trying again in turn,
        // each for the whole timeout.
        let mut inner = self.states.lock();
        while blocks.clone().any(|b| inner.states[b as usize] == State::Busy) {
            inner = self.states.settled.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
        match blocks.clone().find(|&b| inner.states[b as usize] != State::Verified) {
            None => Ok(()),
            Some(block) => Err(Error::Fetch {
                url: self.url.clone(),
                what: format!(
                    "block {block} (bytes {}..): fetching it for another read failed just now",
                    self.table.block_range(block).start
                ),
            }),
        }
    }

    /// Writes the block table's embedded blocks (`embedded`, taken out of the table) into the cache
    /// file, each only after it matched its digest, exactly as if fetched. One that does not match is
    /// not written and stays missing, so the open ranges' fetch gets it from the archive (checked
    /// there like any fetched block): embedded bytes never reach a reader unchecked, and a bad one
    /// costs a request, not the mount.
    pub(super) fn write_embedded(&self, embedded: &[u8]) -> Result<()> {
        for (block, bytes) in self.table.split_embedded(embedded) {
            let (taken, _) = self.take(block..block + 1);
            let taken_any = !taken.claimed.is_empty() || !taken.missing.is_empty();
            let written = if taken_any && self.table.block_matches(block, bytes) {
                self.write_block(block, bytes)
            } else {
                Ok(())
            };
            self.release(&taken);
            written?;
        }
        Ok(())
    }

    /// Marks the claimed and missing blocks of `blocks` busy for this call; also says whether some
    /// were busy with another thread.
    fn take(&self, blocks: Range<u64>) -> (Taken, bool) {
        let mut taken = Taken { claimed: Vec::new(), missing: Vec::new() };
        let mut others_busy = false;
        let mut inner = self.states.lock();
        for b in blocks {
            let state = &mut inner.states[b as usize];
            match *state {
                State::Verified => {}
                State::Busy => others_busy = true,
                State::Claimed => {
                    *state = State::Busy;
                    taken.claimed.push(b);
                }
                State::Missing => {
                    *state = State::Busy;
                    taken.missing.push(b);
                }
            }
        }
        (taken, others_busy)
    }

    /// Settles every block of `taken` still busy (its check or fetch failed): a claimed one not
    /// yet checked stays claimed, anything else is missing. Wakes waiting threads.
    fn release(&self, taken: &Taken) {
        let mut inner = self.states.lock();
        for &b in &taken.missing {
            if inner.states[b as usize] == State::Busy {
                inner.states[b as usize] = State::Missing;
            }
        }
        for &b in &taken.claimed {
            if inner.states[b as usize] == State::Busy {
                inner.states[b as usize] = State::Claimed;
            }
        }
        drop(inner);
        self.states.settled.notify_all();
    }

    /// Records block `block` as verified (its bytes are in the cache file).
    fn mark_verified(&self, block: u64) {
        let mut inner = self.states.lock();
        inner.states[block as usize] = State::Verified;
        let len = self.states.len_of(&inner, block);
        inner.present += len;
        drop(inner);
        self.states.settled.notify_all();
        if self.unsaved.fetch_add(len, Ordering::Relaxed) + len >= SAVE_EVERY {
            self.save_record();
        }
    }

    /// Checks the claimed blocks of `taken` against their hashes and fetches the missing ones (and
    /// claimed ones that failed, which become missing ones of `taken`). Every block it verifies is
    /// marked so at once.
    fn acquire(&self, taken: &mut Taken) -> Result<()> {
        let mut failed = Vec::new();
        for &block in &taken.claimed {
            if self.check_cached(block)? {
                self.mark_verified(block);
            } else {
                failed.push(block);
            }
        }
        taken.claimed.retain(|b| failed.binary_search(b).is_err());
        taken.missing.extend(failed);
        taken.missing.sort_unstable();
        let requests = self.requests_for(&taken.missing);
        self.fetch_all(&requests)
    }

    /// True when the cache file holds block `block`'s exact bytes.
    fn check_cached(&self, block: u64) -> Result<bool> {
        let range = self.table.block_range(block);
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        match self.file.read_exact_at(&mut buf, range.start) {
            Ok(()) => Ok(self.table.block_matches(block, &buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(Error::io(self.cache_path(), e)),
        }
    }

    /// Sorted missing blocks as runs of neighbours, each at most [`MAX_REQUEST`] bytes.
    fn requests_for(&self, missing: &[u64]) -> Vec<Range<u64>> {
        let per_request = (MAX_REQUEST / u64::from(self.table.block_size)).max(1);
        let mut runs: Vec<Range<u64>> = Vec::new();
        for &b in missing {
            match runs.last_mut() {
                Some(run) if run.end == b && run.end - run.start < per_request => run.end += 1,
                _ => runs.push(b..b + 1),
            }
        }
        runs
    }

    /// Fetches `requests`, up to `max_in_flight` at once (for this call and all others together).
    fn fetch_all(&self, requests: &[Range<u64>]) -> Result<()> {
        if requests.len() <= 1 {
            return requests.iter().try_for_each(|run| self.fetch_run(run.clone()));
        }
        let next = AtomicUsize::new(0);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let workers = requests.len().min(self.options.max_in_flight.max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = requests.get(i) else { break };
                    if let Err(e) = self.fetch_run(run.clone()) {
                        first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                        // The others stop at their next request: this call fails anyway.
                        next.store(requests.len(), Ordering::Relaxed);
                        break;
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Fetches blocks `run` in one request, verifies each and writes the good ones; a block that
    /// fails its hash is fetched alone once more, then refused.
    fn fetch_run(&self, run: Range<u64>) -> Result<()> {
        let start = self.table.block_range(run.start).start;
        let end = self.table.block_range(run.end - 1).end;
        let bytes = self.fetch_bytes(run.clone(), start, end)?;
        for block in run {
            let range = self.table.block_range(block);
            let bytes = &bytes[(range.start - start) as usize..(range.end - start) as usize];
            if self.table.block_matches(block, bytes) {
                self.write_block(block, bytes)?;
                continue;
            }
            let again = self.fetch_bytes(block..block + 1, range.start, range.end)?;
            if !self.table.block_matches(block, &again) {
                return Err(Error::BlockHash { url: self.url.clone(), block, offset: range.start });
            }
            self.write_block(block, &again)?;
        }
        Ok(())
    }

    /// One range request for bytes `[start, end)` (blocks `run`), within the in-flight limit.
    fn fetch_bytes(&self, run: Range<u64>, start: u64, end: u64) -> Result<Vec<u8>> {
        let _slot = self.slots.acquire();
        let blocks = format!("blocks {}..{} of {}", run.start, run.end, self.describe());
        self.fetcher.fetch_range(&self.full.path, start, end - start, self.full.size).map_err(|e| match e {
            Error::Fetch { url, what } => Error::Fetch { url, what: format!("{blocks}: {what}") },
            Error::Timeout { url, what } => Error::Timeout { url, what: format!("{blocks}: {what}") },
            other => other,
        })
    }

    /// Writes verified block `block` into the cache file and marks it verified.
    fn write_block(&self, block: u64, bytes: &[u8]) -> Result<()> {
        let offset = self.table.block_range(block).start;
        self.file.write_all_at(bytes, offset).map_err(|e| Error::io(self.cache_path(), e))?;
        self.mark_verified(block);
        Ok(())
    }

    /// Saves the record of blocks the cache holds (after flushing the file's data, so the record
    /// rarely claims more than is on disk; it is checked anyway). Nothing once complete.
    pub(super) fn save_record(&self) {
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        if self.renamed.load(Ordering::Acquire) {
            return;
        }
        self.unsaved.store(0, Ordering::Relaxed);
        let record = self.states.record();
        let _ = self.file.sync_data();
        // A hint only: failing to save it costs hashing or fetching again next time.
        let _ = cache::write_record(&self.cache, &cache::record_name(&self.full.sha256), &self.table, &record);
    }
}

/// The record of present blocks is saved after this many newly verified bytes.
const SAVE_EVERY: u64 = 8 << 20;

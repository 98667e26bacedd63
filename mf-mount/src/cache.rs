//! A byte-bounded cache of decoded frames shared by all worker threads.
//!
//! Sharded so that threads reading different frames rarely contend; each shard is an LRU bounded by
//! its share of the byte budget. Frames are handed out as `Arc`s, so a reply can borrow a frame that
//! is evicted meanwhile. Buffers of evicted frames go back to a small pool and are decoded into
//! again, so steady-state reads allocate nothing.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

/// Which frame: archive number, entry index, frame number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameKey {
    pub archive: u32,
    pub entry: u32,
    pub frame: u64,
}

struct Shard {
    frames: LruCache<FrameKey, Arc<Vec<u8>>>,
    bytes: usize,
}

pub struct FrameCache {
    shards: Box<[Mutex<Shard>]>,
    shard_budget: usize,
    hasher: RandomState,
    /// Spare frame buffers (capacity kept), at most `pool_limit`.
    pool: Mutex<Vec<Vec<u8>>>,
    pool_limit: usize,
}

pub const SHARDS: usize = 8;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard leaves it consistent enough (at worst a stale byte count).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FrameCache {
    /// A cache holding at most `budget` bytes of decoded frames (0 disables caching).
    pub fn new(budget: usize, pool_limit: usize) -> FrameCache {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { frames: LruCache::unbounded(), bytes: 0 })).collect();
        FrameCache {
            shards,
            shard_budget: budget / SHARDS,
            hasher: RandomState::new(),
            pool: Mutex::new(Vec::new()),
            pool_limit,
        }
    }

    fn shard(&self, key: &FrameKey) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The cached frame, if present (marks it most recently used).
    pub fn get(&self, key: &FrameKey) -> Option<Arc<Vec<u8>>> {
        lock(self.shard(key)).frames.get(key).cloned()
    }

    /// A buffer to decode a frame into: a recycled one when available.
    pub fn take_buffer(&self) -> Vec<u8> {
        lock(&self.pool).pop().unwrap_or_default()
    }

    /// Gives back a buffer that did not make it into the cache (e.g. after a decoding error).
    pub fn recycle(&self, buffer: Vec<u8>) {
        let mut pool = lock(&self.pool);
        if pool.len() < self.pool_limit {
            pool.push(buffer);
        }
    }

    /// Caches a decoded frame and returns it shared. Evicts least recently used frames of the same
    /// shard until the shard is within budget (the new frame itself may be evicted at once when
    /// the budget is smaller than a frame; the caller still gets it).
    pub fn insert(&self, key: FrameKey, frame: Vec<u8>) -> Arc<Vec<u8>> {
        let frame = Arc::new(frame);
        let mut evicted = Vec::new();
        {
            let mut shard = lock(self.shard(&key));
            shard.bytes += frame.capacity();
            if let Some(previous) = shard.frames.put(key, frame.clone()) {
                shard.bytes = shard.bytes.saturating_sub(previous.capacity());
                evicted.push(previous);
            }
            while shard.bytes > self.shard_budget {
                let Some((_, old)) = shard.frames.pop_lru() else { break };
                shard.bytes = shard.bytes.saturating_sub(old.capacity());
                evicted.push(old);
            }
        }
        for old in evicted {
            // Frames still borrowed by an in-flight reply are simply dropped when it finishes.
            if let Ok(buffer) = Arc::try_unwrap(old) {
                self.recycle(buffer);
            }
        }
        frame
    }

    /// Bytes currently held by cached frames.
    #[cfg(test)]
    pub fn cached_bytes(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(frame: u64) -> FrameKey {
        FrameKey { archive: 0, entry: 0, frame }
    }

    #[test]
    fn stays_within_budget_and_recycles_buffers() {
        let frame_len = 1000;
        let cache = FrameCache::new(SHARDS * 2 * frame_len, 4);
        for k in 0..100 {
            let mut buffer = cache.take_buffer();
            buffer.clear();
            buffer.resize(frame_len, k as u8);
            buffer.shrink_to_fit();
            let frame = cache.insert(key(k), buffer);
            assert_eq!(frame[0], k as u8);
            assert!(cache.cached_bytes() <= SHARDS * 2 * frame_len);
        }
        // The most recent frame is always present; the earliest ones were evicted.
        assert_eq!(cache.get(&key(99)).unwrap()[0], 99);
        assert!((0..100).filter(|&k| cache.get(&key(k)).is_some()).count() <= SHARDS * 2);
        assert!(lock(&cache.pool).len() <= 4);
        assert!(!lock(&cache.pool).is_empty(), "evicted buffers are reused");
    }

    #[test]
    fn zero_budget_caches_nothing_but_returns_the_frame() {
        let cache = FrameCache::new(0, 2);
        let frame = cache.insert(key(1), vec![5; 10]);
        assert_eq!(&frame[..], &[5; 10]);
        assert!(cache.get(&key(1)).is_none());
        assert_eq!(cache.cached_bytes(), 0);
    }
}

//! The diff's memory budget: work items declare their estimated working set and wait until it fits
//! under the limit beside what is already in flight. An item larger than the whole budget runs
//! alone (callers make sure they only ask for that with bounded-memory methods).

use std::sync::{Condvar, Mutex};

pub struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

pub struct Permit<'a> {
    budget: &'a Budget,
    amount: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget { limit, used: Mutex::new(0), freed: Condvar::new() }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Blocks until `amount` (capped at the limit) fits, then reserves it.
    pub fn acquire(&self, amount: u64) -> Permit<'_> {
        let amount = amount.min(self.limit);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + amount > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += amount;
        Permit { budget: self, amount }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.amount;
        self.budget.freed.notify_all();
    }
}

/// Default memory limit: half of `MemAvailable` from /proc/meminfo (1 GiB when unknown), at least
/// 64 MiB.
pub fn default_memory_limit() -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    (available.unwrap_or(2 << 30) / 2).max(64 << 20)
}

/// Parses sizes like `512M`, `2G`, `1.5GiB`, `100000`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let value = number * multiplier as f64;
    (value.is_finite() && value >= 0.0 && value < u64::MAX as f64).then_some(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("5Q"), None);
    }

    #[test]
    fn permits_never_exceed_the_limit() {
        let budget = Budget::new(100);
        let peak = Mutex::new(0u64);
        let current = Mutex::new(0u64);
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let (budget, peak, current) = (&budget, &peak, &current);
                s.spawn(move || {
                    let amount = 30 + i * 5;
                    let _permit = budget.acquire(amount);
                    let now = {
                        let mut c = current.lock().unwrap();
                        *c += amount;
                        *c
                    };
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(now);
                    drop(p);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    *current.lock().unwrap() -= amount;
                });
            }
        });
        assert!(*peak.lock().unwrap() <= 100);
    }
}

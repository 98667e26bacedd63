//! Helpers shared by mf-format's integration tests.

/// Deterministic pseudo-random bytes (xorshift64): incompressible, reproducible from `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

//! Deterministic content generators.

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

/// `lines` lines of compressible text that differ with `seed`.
pub fn text(seed: u64, lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("line {i} of asset {seed}: {}\n", i * 13 + seed as usize))
        .collect::<String>()
        .into_bytes()
}

/// Up to `max_len` leading bytes of a real x86-64 executable (the running test binary), for tests
/// of the x86 branch filter: machine code, headers and data as a linker lays them out. Panics on
/// another architecture, where these tests would not test the filter at all.
pub fn x86_executable(max_len: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(std::env::current_exe().expect("the test binary's path")).expect("reading it");
    let x86_64_elf = bytes.starts_with(b"\x7fELF") && bytes.get(18..20) == Some(&62u16.to_le_bytes()[..]);
    assert!(x86_64_elf, "the x86 filter tests need an x86-64 ELF test binary to run on");
    bytes.truncate(max_len);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_reproducible_and_seed_dependent() {
        assert_eq!(noise(64, 3), noise(64, 3));
        assert_ne!(noise(64, 3), noise(64, 4));
        assert_eq!(noise(10, 3)[..], noise(64, 3)[..10]);
    }

    #[test]
    fn text_has_the_asked_number_of_lines() {
        assert_eq!(text(1, 5).iter().filter(|&&b| b == b'\n').count(), 5);
        assert_ne!(text(1, 5), text(2, 5));
    }
}

//! The x86 branch filter of container 2.1 (spec/FORMAT.md, "The X86 filter"): relative call and jump
//! targets (`E8`/`E9` rel32) become absolute positions within the frame, so the same target called
//! from many places gives the same bytes and zstd finds the repeats. It works on one frame at a time,
//! positions counted from the frame's first byte, so frames stay independently decodable.
//!
//! The transform is an exact bijection on every input (not only on real code). The positions it
//! visits depend only on opcode bytes, which it never changes: an `E8`/`E9` always takes the next
//! four bytes as its operand, converted or not, and the scan resumes after them. It converts an
//! operand only when its top byte is `00` or `FF`, and writes back a value whose top byte is again
//! `00` or `FF` (the sum taken modulo 2²⁵ and sign-extended), so the decoder makes exactly the
//! encoder's choices at exactly the same positions.

/// Turns the rel32 operands of `buf` (one frame's content) into frame-relative absolute targets.
pub fn encode(buf: &mut [u8]) {
    convert(buf, true);
}

/// Inverts [`encode`]: `decode(encode(x)) == x` for every `x`.
pub fn decode(buf: &mut [u8]) {
    convert(buf, false);
}

fn convert(buf: &mut [u8], encoding: bool) {
    let mut i = 0usize;
    // A candidate needs its opcode and all four operand bytes inside the frame.
    while i + 5 <= buf.len() {
        let op = buf[i];
        if op != 0xE8 && op != 0xE9 {
            i += 1;
            continue;
        }
        // An opcode always takes its 4 operand bytes, converted or not: so no operand byte is ever
        // looked at as an opcode or as another operand's top byte, and the decoder, seeing the same
        // opcodes, visits the same positions.
        let top = buf[i + 4];
        if top == 0x00 || top == 0xFF {
            let value = u32::from_le_bytes([buf[i + 1], buf[i + 2], buf[i + 3], top]);
            // The position of the next instruction; frames are at most 64 MiB, so it fits.
            let next = (i + 5) as u32;
            let moved = if encoding { value.wrapping_add(next) } else { value.wrapping_sub(next) };
            buf[i + 1..i + 5].copy_from_slice(&sign_extend_25(moved).to_le_bytes());
        }
        i += 5;
    }
}

/// Bits 0..25 of `x`, sign-extended from bit 24: the result's top byte is `00` or `FF`.
fn sign_extend_25(x: u32) -> u32 {
    (((x << 7) as i32) >> 7) as u32
}

/// ELF `e_machine` values of x86 code.
const ELF_X86: [u16; 2] = [3, 62];
/// Mach-O `cputype`s of x86 code (i386, x86-64).
const MACHO_X86: [u32; 2] = [7, 0x0100_0007];
/// PE `Machine` values of x86 code (i386, AMD64).
const PE_X86: [u16; 2] = [0x014C, 0x8664];
/// Detection reads at most this many bytes of the content.
pub const DETECT_LEN: usize = 4096;
/// Most slices a fat Mach-O header may list to be taken for one (a Java class file shares the
/// magic, with a version number of 45 or more where the count would be).
const MAX_FAT_SLICES: u32 = 8;

/// Whether content starting with `head` is an x86 executable (spec: "What writers do"): an ELF file
/// (little-endian) for i386 or x86-64, a Mach-O file for either (thin, or fat with such a slice), or
/// a PE file for either. Only the first [`DETECT_LEN`] bytes are looked at.
pub fn is_x86_executable(head: &[u8]) -> bool {
    let head = &head[..head.len().min(DETECT_LEN)];
    let u16_le = |at: usize| head.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_le = |at: usize| head.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u32_be = |at: usize| head.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    if head.starts_with(b"\x7fELF") {
        return head.get(5) == Some(&1) && u16_le(18).is_some_and(|m| ELF_X86.contains(&m));
    }
    if head.starts_with(&[0xCF, 0xFA, 0xED, 0xFE]) || head.starts_with(&[0xCE, 0xFA, 0xED, 0xFE]) {
        return u32_le(4).is_some_and(|cpu| MACHO_X86.contains(&cpu));
    }
    if head.starts_with(&[0xCA, 0xFE, 0xBA, 0xBE]) {
        let slices = u32_be(4).filter(|n| (1..=MAX_FAT_SLICES).contains(n)).unwrap_or(0);
        return (0..slices as usize).any(|s| u32_be(8 + 20 * s).is_some_and(|cpu| MACHO_X86.contains(&cpu)));
    }
    if head.starts_with(b"MZ") {
        let Some(pe) = u32_le(0x3C).map(|at| at as usize) else { return false };
        return head.get(pe..pe.saturating_add(4)) == Some(b"PE\0\0".as_slice())
            && u16_le(pe + 4).is_some_and(|m| PE_X86.contains(&m));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(data: &[u8]) {
        let mut buf = data.to_vec();
        encode(&mut buf);
        decode(&mut buf);
        assert_eq!(buf, data);
        // The other way round too: decode is a bijection as well.
        decode(&mut buf);
        encode(&mut buf);
        assert_eq!(buf, data);
    }

    #[test]
    fn a_call_becomes_its_absolute_target() {
        // call +0x10 at position 3: the next instruction is at 8, so the target is 0x18.
        let mut buf = vec![0x90, 0x90, 0x90, 0xE8, 0x10, 0, 0, 0, 0x90];
        encode(&mut buf);
        assert_eq!(buf, [0x90, 0x90, 0x90, 0xE8, 0x18, 0, 0, 0, 0x90]);
        // jmp -8 at 0: next at 5, target -3 = 0xFFFFFFFD.
        let mut buf = vec![0xE9, 0xF8, 0xFF, 0xFF, 0xFF];
        encode(&mut buf);
        assert_eq!(buf, [0xE9, 0xFD, 0xFF, 0xFF, 0xFF]);
        // Operands whose top byte is not 00/FF are left alone; so is an opcode in the last 4 bytes.
        let mut buf = vec![0xE8, 1, 2, 3, 0x40, 0xE8, 1, 2, 0];
        encode(&mut buf);
        assert_eq!(buf, [0xE8, 1, 2, 3, 0x40, 0xE8, 1, 2, 0]);
        // An opcode inside an operand left alone is not one: the operand bytes are skipped.
        let mut buf = vec![0xE8, 0xE8, 1, 0, 0x40, 0, 0, 0, 0];
        encode(&mut buf);
        assert_eq!(buf, [0xE8, 0xE8, 1, 0, 0x40, 0, 0, 0, 0]);
    }

    #[test]
    fn wraps_at_two_to_the_25() {
        // Position 0x10_0000 − 5 plus 0x00FF_FFFF overflows 25 bits and wraps to a negative value.
        let mut buf = vec![0u8; 0x10_0000 + 5];
        buf[0x10_0000 - 5..0x10_0000].copy_from_slice(&[0xE8, 0xFF, 0xFF, 0xFF, 0x00]);
        let original = buf.clone();
        encode(&mut buf);
        let operand = u32::from_le_bytes(buf[0x10_0000 - 4..0x10_0000].try_into().unwrap());
        assert_eq!(operand, sign_extend_25(0x00FF_FFFF + 0x10_0000));
        assert_eq!(operand >> 24, 0xFF);
        decode(&mut buf);
        assert_eq!(buf, original);
    }

    #[test]
    fn crafted_runs_of_opcodes_round_trip() {
        let crafted: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xE8],
            vec![0xE8; 4],
            vec![0xE8; 5],
            vec![0xE8; 4097],
            vec![0xE9; 1000],
            [0xE8, 0xFF].repeat(700),
            [0xE8, 0x00].repeat(700),
            [0xE9, 0xE8, 0xFF, 0x00].repeat(500),
            [0xE8, 0, 0, 0, 0].repeat(300),
            [0xE8, 0xFF, 0xFF, 0xFF, 0xFF].repeat(300),
            [0xE8, 0xFF, 0xFF, 0xFF, 0xFF, 0xE8].repeat(300),
            (0..=255u8).cycle().take(70_000).collect(),
            std::iter::repeat_n([0xFFu8, 0xE8, 0xE9, 0x00], 30_000).flatten().collect(),
        ];
        for data in &crafted {
            round_trip(data);
            for cut in [1usize, 3, 4, 5, 7] {
                if data.len() > cut {
                    round_trip(&data[..data.len() - cut]);
                    round_trip(&data[cut..]);
                }
            }
        }
    }

    #[test]
    fn random_data_round_trips_at_every_length() {
        for seed in 0..200u64 {
            let len = (seed as usize * 37) % 3000;
            let data = mf_test_support::noise(len, seed);
            round_trip(&data);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            round_trip(&data);
        }

        #[test]
        fn opcode_heavy_bytes_round_trip(
            data in proptest::collection::vec(prop_oneof![Just(0xE8u8), Just(0xE9), Just(0x00), Just(0xFF), any::<u8>()], 0..4096)
        ) {
            round_trip(&data);
        }
    }

    #[test]
    fn recognises_x86_executables() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert!(is_x86_executable(&elf));
        elf[18..20].copy_from_slice(&183u16.to_le_bytes()); // aarch64
        assert!(!is_x86_executable(&elf));
        assert!(!is_x86_executable(&elf[..10]));

        let mut macho = vec![0xCF, 0xFA, 0xED, 0xFE];
        macho.extend_from_slice(&0x0100_0007u32.to_le_bytes());
        assert!(is_x86_executable(&macho));
        macho[4..8].copy_from_slice(&0x0100_000Cu32.to_le_bytes()); // arm64
        assert!(!is_x86_executable(&macho));

        let mut fat = vec![0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 2];
        fat.extend_from_slice(&0x0100_000Cu32.to_be_bytes());
        fat.extend_from_slice(&[0; 16]);
        fat.extend_from_slice(&0x0100_0007u32.to_be_bytes());
        assert!(is_x86_executable(&fat));
        // A Java class file (version 52 where the slice count would be) is not one.
        let class = [0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 52, 0, 0, 0, 7];
        assert!(!is_x86_executable(&class));

        let mut pe = vec![0u8; 0x100];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        assert!(is_x86_executable(&pe));
        pe[0x3C..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!is_x86_executable(&pe));
        assert!(!is_x86_executable(b"plain text"));
    }

    #[test]
    fn detects_this_platforms_test_binary_when_it_is_x86() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(is_x86_executable(&exe), cfg!(any(target_arch = "x86_64", target_arch = "x86")));
    }
}

use super::*;
use crate::delta::apply_in_memory;
use proptest::prelude::*;

/// Pseudo-random bytes shaped like code: repeated instruction-ish patterns with embedded addresses.
fn code_like(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        match state % 4 {
            0 => out.extend_from_slice(&[0x48, 0x8b, 0x05]),
            1 => out.extend_from_slice(&[0xe8]),
            2 => out.extend_from_slice(&[0x0f, 0x1f, 0x44, 0x00, 0x00]),
            _ => {}
        }
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn round_trip(old: &[u8], new: &[u8]) -> DeltaParts {
    let parts = diff(old, new).unwrap();
    check_parts(old, new, &parts);
    parts
}

/// The parts rebuild `new` and their streams match their controls (what `encode` insists on).
fn check_parts(old: &[u8], new: &[u8], parts: &DeltaParts) {
    assert_eq!(parts.output_len(), new.len() as u64);
    assert_eq!(apply_in_memory(old, parts).unwrap(), new);
    parts.encode(1).unwrap();
}

#[test]
fn identical_content_is_one_control_without_extra() {
    let old = code_like(200_000, 1);
    let parts = round_trip(&old, &old);
    assert_eq!(parts.controls.len(), 1);
    assert!(parts.extra.is_empty());
    assert!(parts.delta.literals().is_empty());
}

#[test]
fn shifted_addresses_stay_on_one_diagonal() {
    // Every 40th byte changes (a relocated address); matches between them are shorter than a
    // seed, so only approximate covers keep this cheap.
    let old = code_like(300_000, 2);
    let mut new = old.clone();
    for i in (7..new.len()).step_by(40) {
        new[i] = new[i].wrapping_add(3);
    }
    let parts = round_trip(&old, &new);
    assert!(parts.controls.len() < 10, "{} controls", parts.controls.len());
    assert!(parts.extra.len() < 1000, "{} extra bytes", parts.extra.len());
}

/// The diagonal (old position minus new position) of the cover holding new byte `at`, if any.
fn diagonal_at(parts: &DeltaParts, at: u64) -> Option<i64> {
    let (mut new, mut old) = (0u64, 0i64);
    for control in &parts.controls {
        if (new..new + control.add).contains(&at) {
            return Some(old - new as i64);
        }
        new += control.add + control.copy;
        old += control.add as i64 + control.seek;
    }
    None
}

#[test]
fn shifted_table_keeps_its_entries_aligned() {
    // A sorted table of (location, address) pairs, as `.eh_frame_hdr` holds: one entry is inserted,
    // and every later entry moves 8 bytes on and has both fields shifted by a constant. Aligned
    // with the old table one entry back, the deltas repeat every 8 bytes (nearly free to store);
    // on the unshifted diagonal as many bytes match, but the deltas are irregular.
    let (entries, inserted) = (20_000u32, 5_000u32);
    let jitter = |k: u32| k.wrapping_mul(2_654_435_761) >> 23;
    let entry = |k: u32, shift: (u32, u32)| {
        let location = 0x10_0000 + 700 * k + jitter(k) + shift.0;
        let address = 0x80_0000 + 48 * k + (jitter(k) & 15) + shift.1;
        [location.to_le_bytes(), address.to_le_bytes()].concat()
    };
    let prefix = code_like(50_000, 7);
    let mut old = prefix.clone();
    let mut new = prefix.clone();
    for k in 0..entries {
        old.extend(entry(k, (0, 0)));
        if k == inserted {
            new.extend(entry(k, (0x90, 0x18)));
        }
        new.extend(entry(k, if k < inserted { (0, 0) } else { (0x160, 0x28) }));
    }
    // What follows the table is unchanged: it moved 8 bytes on, so it seeds the aligned diagonal.
    let suffix = code_like(50_000, 8);
    old.extend(&suffix);
    new.extend(&suffix);
    let parts = round_trip(&old, &new);
    let table_start = prefix.len() as u64;
    for k in [inserted + 10, (inserted + entries) / 2, entries - 10] {
        let at = table_start + 8 * u64::from(k + 1);
        assert_eq!(diagonal_at(&parts, at), Some(-8), "entry {k}");
    }
}

#[test]
fn moved_blocks_are_found() {
    let old = code_like(400_000, 3);
    let mut new = Vec::new();
    new.extend_from_slice(&old[300_000..]);
    new.extend_from_slice(b"some new bytes in between");
    new.extend_from_slice(&old[..300_000]);
    let parts = round_trip(&old, &new);
    assert!(parts.extra.len() < 100, "{} extra bytes", parts.extra.len());
}

#[test]
fn unrelated_and_empty_inputs_round_trip() {
    round_trip(&[], &code_like(5000, 4));
    round_trip(&code_like(5000, 4), &[]);
    round_trip(&[], &[]);
    let parts = round_trip(&code_like(50_000, 5), &code_like(50_000, 6));
    assert!(parts.extra.len() > 40_000);
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    // Several cover-search chunks, so the parallel split is exercised.
    let old = code_like(3 << 20, 7);
    let mut new = old.clone();
    new.splice(1_000_000..1_000_000, code_like(70_000, 8));
    new.drain(2_500_000..2_600_000);
    for i in (0..new.len()).step_by(997) {
        new[i] ^= 0x10;
    }
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| diff(&old, &new).unwrap())
    };
    let one = run(1);
    check_parts(&old, &new, &one);
    assert_eq!(one, run(4));
}

#[test]
fn windowed_diff_finds_content_outside_the_proportional_window() {
    // The new content is the old content's two halves swapped: proportional windows would miss
    // everything, the anchor index must not.
    let old = code_like(4 << 20, 9);
    let mut new = old[2 << 20..].to_vec();
    new.extend_from_slice(&old[..2 << 20]);
    new[100] ^= 1;
    let read = |data: &[u8], start: u64, len: u64| data[start as usize..(start + len) as usize].to_vec();
    let (read_old, read_new) = (|s, l| Ok(read(&old, s, l)), |s, l| Ok(read(&new, s, l)));
    let plan = WindowPlan { window: 1 << 20, block: 512 << 10, parallel: 1, parts_allowance: 4 << 20 };
    let parts = diff_windowed(old.len() as u64, new.len() as u64, &read_old, &read_new, plan).unwrap();
    check_parts(&old, &new, &parts);
    assert!(parts.extra.len() < 64 << 10, "{} extra bytes", parts.extra.len());
    // Blocks matched three at a time give the same delta.
    let together = WindowPlan { parallel: 3, ..plan };
    assert_eq!(diff_windowed(old.len() as u64, new.len() as u64, &read_old, &read_new, together).unwrap(), parts);

    // Unrelated content outgrows a small allowance: the caller is told, not handed a huge delta.
    let unrelated = code_like(4 << 20, 10);
    let read_unrelated = |s, l| Ok(read(&unrelated, s, l));
    let tight = WindowPlan { parts_allowance: 1 << 20, ..plan };
    let err = diff_windowed(old.len() as u64, 4 << 20, &read_old, &read_unrelated, tight).unwrap_err();
    assert!(matches!(err, WindowError::TooDifferent { allowance } if allowance == 1 << 20), "{err}");
}

#[test]
fn window_plans_respect_the_budget() {
    let (old, new) = (300u64 << 20, 280u64 << 20);
    let plan = WindowPlan::for_budget(512 << 20, old, new).unwrap();
    assert!(windowed_estimate(plan, old) <= 512 << 20);
    assert!(plan.window >= 16 << 20);
    assert_eq!(WindowPlan::for_budget(64 << 20, old, new), None);

    // The standard plan: as many 16 MiB windows at once as the budget and the threads allow
    // (126 MiB beside the blocks, 99 of them the delta's allowance; 112 MiB a block).
    let one = WindowPlan::standard(240 << 20, old, new, 8).unwrap();
    assert_eq!((one.window, one.block, one.parallel, one.parts_allowance), (16 << 20, 12 << 20, 1, 99 << 20));
    assert!(windowed_estimate(one, old) <= 240 << 20);
    let two = WindowPlan::standard(1 << 30, old, new, 2).unwrap();
    assert_eq!(two.parallel, 2);
    let eight = WindowPlan::standard(1 << 30, old, new, 16).unwrap();
    assert_eq!(eight.parallel, 8);
    assert!(windowed_estimate(eight, old) <= 1 << 30);
    assert_eq!(WindowPlan::standard(230 << 20, old, new, 8), None);
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Move(usize, usize, usize),
    Flip(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..300)).prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 1usize..2000).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), 1usize..5000, any::<usize>()).prop_map(|(a, n, b)| Edit::Move(a, n, b)),
        any::<usize>().prop_map(Edit::Flip),
    ]
}

fn apply_edit(data: &mut Vec<u8>, edit: &Edit) {
    let at = |x: usize, data: &Vec<u8>| x % (data.len() + 1);
    match edit {
        Edit::Insert(a, bytes) => {
            let a = at(*a, data);
            data.splice(a..a, bytes.iter().copied());
        }
        Edit::Delete(a, n) => {
            let a = at(*a, data);
            let end = (a + n).min(data.len());
            data.drain(a..end);
        }
        Edit::Move(a, n, b) => {
            let a = at(*a, data);
            let end = (a + n).min(data.len());
            let moved: Vec<u8> = data.drain(a..end).collect();
            let b = at(*b, data);
            data.splice(b..b, moved);
        }
        Edit::Flip(a) => {
            if !data.is_empty() {
                let a = a % data.len();
                data[a] ^= 0x5a;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_edits_round_trip(seed in any::<u32>(), len in 0usize..60_000,
                               edits in proptest::collection::vec(edit(), 0..12)) {
        let old = code_like(len, seed);
        let mut new = old.clone();
        for e in &edits {
            apply_edit(&mut new, e);
        }
        let parts = diff(&old, &new).unwrap();
        prop_assert_eq!(apply_in_memory(&old, &parts).unwrap(), new);
    }

    #[test]
    fn random_bytes_round_trip(old in proptest::collection::vec(0u8..3, 0..3000),
                               new in proptest::collection::vec(0u8..3, 0..3000)) {
        let parts = diff(&old, &new).unwrap();
        prop_assert_eq!(apply_in_memory(&old, &parts).unwrap(), new);
    }

    // Moved from the qbsdiff wrapper (bsdiff.rs) the matcher replaced.
    #[test]
    fn round_trips_random_edits(old in proptest::collection::vec(any::<u8>(), 0..3000),
                                edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..20)) {
        let mut new = old.clone();
        for (pos, byte) in edits {
            let at = pos as usize % (new.len() + 1);
            if byte % 3 == 0 && at < new.len() { new.remove(at); } else { new.insert(at, byte); }
        }
        let parts = diff(&old, &new).unwrap();
        prop_assert_eq!(apply_in_memory(&old, &parts).unwrap(), new);
    }
}

// Moved from the qbsdiff wrapper (bsdiff.rs) the matcher replaced.
#[test]
fn diff_then_apply_reproduces_the_new_data() {
    let old: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut new = old.clone();
    new[1000] ^= 0xff;
    new.splice(20_000..20_000, b"inserted text".iter().copied());
    new.drain(40_000..40_100);
    let parts = diff(&old, &new).unwrap();
    check_parts(&old, &new, &parts);
}

/// Damaged parts are refused, not applied. (Damaged patch bytes are the wire reader's concern:
/// apply.rs and wire.rs test the delta streams as they come from a patch.)
#[test]
fn damaged_parts_are_refused_not_applied() {
    let old = code_like(20_000, 11);
    let mut new = old.clone();
    new.splice(5000..5000, code_like(300, 12));
    new[15_000] ^= 0xff;
    let parts = diff(&old, &new).unwrap();
    assert!(!parts.extra.is_empty() && !parts.delta.is_empty());
    // Streams cut short: encoding refuses them, applying runs out.
    let mut cut = parts.clone();
    let bytes = cut.delta.to_vec();
    cut.delta = crate::delta::DeltaBytes::from(&bytes[..bytes.len() - 1]);
    assert!(cut.encode(1).is_err());
    assert!(apply_in_memory(&old, &cut).is_none());
    let mut cut = parts.clone();
    cut.extra.pop();
    assert!(cut.encode(1).is_err());
    assert!(apply_in_memory(&old, &cut).is_none());
    // A seek past the old content: the first control's seek is rewritten to a huge value.
    let mut far = parts.clone();
    far.controls[0].seek = 1 << 40;
    assert!(apply_in_memory(&old, &far).is_none());
}

#[test]
fn anchors_cover_nearly_identical_content_without_a_suffix_array() {
    let old = code_like(1 << 20, 21);
    let mut new = old.clone();
    new[300_000] ^= 0x40;
    new.splice(700_000..700_000, [1u8, 2, 3]);
    // Exact matches known between the changes (as a block's anchors give them): grown, they cover
    // all but the changed bytes.
    let hits = vec![(900_000, 899_997), (10, 10), (500_000, 500_000)];
    let covers = cover::covers_from_anchors(&old, &new, hits.clone(), 0.999, 16).expect("fast path");
    check_parts(&old, &new, &parts_from_covers(&old, &new, &covers, 0));
    // Without the middle one they cover too little: the caller builds a suffix array instead.
    assert!(cover::covers_from_anchors(&old, &new, vec![(900_000, 899_997), (10, 10)], 0.999, 16).is_none());
    // Nor does the fast path take content changed in more places than allowed (three pieces here).
    assert!(cover::covers_from_anchors(&old, &new, hits, 0.999, 2).is_none());
    // A false hit (bytes that differ) seeds nothing.
    assert!(cover::covers_from_anchors(&old, &new, vec![(5, 6)], 0.0, 16).is_some_and(|c| c.is_empty()));
}

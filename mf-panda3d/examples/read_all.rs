//! Reads every entry of an archive (whole, checksums verified) ROUNDS times and prints the median
//! seconds of a round, twice: content copied into owned buffers (what Python's `bytes` are), then
//! raw entries borrowed from the mapping (the cheapest the library allows). The Rust side of
//! bench/suites/python.sh, doing what the Python package's `for entry in archive: archive.read(entry)`
//! does, through the same `AnyArchive` calls. Prints `OWNED_SECONDS BORROWED_SECONDS BYTES`.
//!
//!     cargo run --release -p mf-panda3d --example read_all -- ARCHIVE [ROUNDS]

use std::time::Instant;

use mf_panda3d::AnyArchive;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: read_all ARCHIVE [ROUNDS]")?;
    let rounds: usize = args.next().map_or(Ok(5), |n| n.parse())?;
    let mut bytes = 0;
    let owned = median(rounds, || {
        let archive = AnyArchive::open(&path)?;
        bytes = 0;
        for entry in archive.entries_by_path() {
            bytes += std::hint::black_box(archive.read(&entry)?.into_owned()).len();
        }
        Ok(())
    })?;
    let borrowed = median(rounds, || {
        let archive = AnyArchive::open(&path)?;
        for entry in archive.entries_by_path() {
            std::hint::black_box(archive.read(&entry)?.len());
        }
        Ok(())
    })?;
    println!("{owned:.6} {borrowed:.6} {bytes}");
    Ok(())
}

/// Median wall seconds of `rounds` runs of `round`.
fn median(rounds: usize, mut round: impl FnMut() -> mf_panda3d::Result<()>) -> mf_panda3d::Result<f64> {
    let mut seconds = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        round()?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(seconds[seconds.len() / 2])
}

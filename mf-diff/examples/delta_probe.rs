//! Where a delta's bytes go, for tuning the matcher and the delta coding:
//! `cargo run --release -p mf-diff --example delta_probe OLD NEW [LEVEL...]` prints the matcher's
//! time, the bsdiff model's streams and the encoded blobs at each zstd level (default 9 15 19).
//! With `DUMP=PREFIX` it also writes the streams (PREFIX.literals, .runs, .extra) and the controls
//! as text (PREFIX.controls: add, copy, seek per line), to compare covers with another tool's.
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, old, new, levels @ ..] = args.as_slice() else {
        return Err("usage: delta_probe OLD NEW [LEVEL...]".into());
    };
    let (old, new) = (std::fs::read(old)?, std::fs::read(new)?);
    let started = Instant::now();
    let parts = mf_diff::matcher::diff(&old, &new)?;
    println!(
        "matcher {:.2} s: {} controls, {} delta bytes ({} nonzero), {} extra bytes",
        started.elapsed().as_secs_f64(),
        parts.controls.len(),
        parts.delta.len(),
        parts.delta.literals().len(),
        parts.extra.len()
    );
    if let Ok(prefix) = std::env::var("DUMP") {
        std::fs::write(format!("{prefix}.literals"), parts.delta.literals())?;
        std::fs::write(format!("{prefix}.runs"), parts.delta.runs())?;
        std::fs::write(format!("{prefix}.extra"), &parts.extra)?;
        let text: String = parts.controls.iter().map(|c| format!("{} {} {}\n", c.add, c.copy, c.seek)).collect();
        std::fs::write(format!("{prefix}.controls"), text)?;
    }
    let levels: Vec<i32> =
        if levels.is_empty() { vec![9, 15, 19] } else { levels.iter().map(|l| l.parse()).collect::<Result<_, _>>()? };
    for level in levels {
        let started = Instant::now();
        let encoded = parts.encode(level)?;
        let runs = encoded.runs.as_ref().map_or(0, |(_, runs)| runs.len());
        println!(
            "level {level}: controls {} + runs {runs} + delta {} + extra {} = {} bytes ({:.2} s)",
            encoded.controls.len(),
            encoded.delta.len(),
            encoded.extra.len(),
            encoded.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

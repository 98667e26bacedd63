#!/usr/bin/env bash
# Suite "python": reading every entry of the arcade archive from Python (`mfarchive`, installed with
# `pip install ./mf-python`, a release build) against the Rust library doing the same (the example
# mf-panda3d/examples/read_all.rs, through the same AnyArchive calls: once copying each entry into an
# owned buffer like Python's bytes, once borrowing raw entries from the mapping) and against `zipfile`
# reading every member of the arcade wheel. Each reader times BENCH_RUNS rounds in-process (open +
# read all, warm cache; interpreter start-up excluded) and reports the median; all three run in this
# one invocation, interleaved, so they share the machine's load. Writes bench/results/python.md.
# Targets (issue 15): Python <= 1.2x the Rust library, and >= 2x faster than zipfile.
source "$(dirname "$0")/../lib.sh"
W="$BENCH_WORK/python"
mkdir -p "$W"

CORPUS="$(bench_corpus_arcade)"
WHEEL="$(ls "$BENCH_WORK"/download/arcade-3.3.3-*.whl | head -1)"
# BENCH_PYTHON: a Python that already has this checkout's mfarchive installed (a release build, as
# `pip install ./mf-python` makes), e.g. the Panda3D venv after scripts/test; else bench/.venv gets it.
PY="${BENCH_PYTHON:-}"
if [ -z "$PY" ]; then
  bench_need_pip pip
  bench_log "pip install ./mf-python (release build)"
  (cd "$REPO_DIR" && CARGO_TARGET_DIR="$REPO_DIR/target" "$BENCH_VENV/bin/pip" install -q ./mf-python) >&2
  PY="$BENCH_VENV/bin/python"
fi
bench_log "building the Rust reader (mf-panda3d example read_all)"
(cd "$REPO_DIR" && cargo build --release --locked -q -p mf-panda3d --example read_all) >&2
READ_ALL="$REPO_DIR/target/release/examples/read_all"

archive="$W/arcade.mf"
# Packed by the package itself: mfarchive.pack follows `mf pack`'s rules (same bytes), and the suite then
# needs no release build of the CLI.
"$PY" -c 'import sys, mfarchive; mfarchive.pack(sys.argv[1], sys.argv[2])' "$CORPUS" "$archive"
rounds=$((BENCH_RUNS < 5 ? 5 : BENCH_RUNS))

python_reader() {
  "$PY" - "$@" <<'PY'
import statistics, sys, time, zipfile
import mfarchive
kind, path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
seconds, total = [], 0
for _ in range(rounds):
    start = time.perf_counter()
    total = 0
    if kind == "mfarchive":
        with mfarchive.open(path) as archive:
            for entry in archive:
                total += len(archive.read(entry))
    else:
        with zipfile.ZipFile(path) as wheel:
            for info in wheel.infolist():
                total += len(wheel.read(info))
    seconds.append(time.perf_counter() - start)
print(f"{statistics.median(seconds):.6f} {total}")
PY
}

load_before="$(bench_load)"
bench_log "measuring ($rounds rounds each, load $load_before)"
declare -a py rust_owned rust_borrowed zip
for attempt in 1 2 3; do
  read -r s bytes_py < <(python_reader mfarchive "$archive" "$rounds"); py+=("$s")
  read -r o b bytes_rust < <("$READ_ALL" "$archive" "$rounds"); rust_owned+=("$o"); rust_borrowed+=("$b")
  read -r s bytes_zip < <(python_reader zipfile "$WHEEL" "$rounds"); zip+=("$s")
done
load_after="$(bench_load)"
[ "$bytes_py" = "$bytes_rust" ] || bench_die "Python read $bytes_py bytes, Rust $bytes_rust"
py_s="$(bench_median <(printf "%s\n" "${py[@]}"))"
own_s="$(bench_median <(printf "%s\n" "${rust_owned[@]}"))"
bor_s="$(bench_median <(printf "%s\n" "${rust_borrowed[@]}"))"
zip_s="$(bench_median <(printf "%s\n" "${zip[@]}"))"
entries="$("$PY" -c 'import sys, mfarchive; print(len(mfarchive.open(sys.argv[1])))' "$archive")"
ratio_owned="$(bench_ratio "$py_s" "$own_s")"
ratio_borrowed="$(bench_ratio "$py_s" "$bor_s")"
speedup_zip="$(bench_ratio "$zip_s" "$py_s")"
verdict() { awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN { ok = (dir == "le") ? v <= t : v >= t; print ok ? "met" : "NOT met" }'; }

cat >"$BENCH_RESULTS/python.md" <<MD
## Python package (mfarchive): reading every entry

Measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit ${BENCH_COMMIT:-$(git -C "$REPO_DIR" rev-parse --short HEAD)}, load average $load_before before and $load_after after.
Arcade 3.3.3: $entries entries, $bytes_py bytes of content, default settings; the wheel holds the same files
(zip deflate). The archive is packed with \`mfarchive.pack\` (the rules and bytes of \`mf pack\`). Each reader opens the archive and reads every entry whole, checksums verified, warm page cache;
the median of $rounds in-process rounds, taken 3 times interleaved, and the median of those.

| reader | median | Python ÷ this |
|---|---|---|
| Python \`mfarchive\`: \`for e in archive: archive.read(e)\` | $(bench_fmt_secs "$py_s") | 1.00 |
| Rust \`AnyArchive::read\` into owned buffers (what \`bytes\` are) | $(bench_fmt_secs "$own_s") | $ratio_owned |
| Rust \`AnyArchive::read\`, raw entries borrowed from the mapping | $(bench_fmt_secs "$bor_s") | $ratio_borrowed |
| Python \`zipfile\` reading the wheel | $(bench_fmt_secs "$zip_s") | $(bench_ratio "$py_s" "$zip_s") |

Targets: Python ≤ 1.2× the Rust library: $ratio_owned× against owned reads ($(verdict "$ratio_owned" 1.2 le)), $ratio_borrowed× against
borrowed reads ($(verdict "$ratio_borrowed" 1.2 le)); ≥ 2× faster than zipfile: $speedup_zip× ($(verdict "$speedup_zip" 2 ge)).
MD
bench_log "python: mfarchive $py_s s, rust owned $own_s s, borrowed $bor_s s, zipfile $zip_s s"

#!/usr/bin/env bash
# Benchmark of `mf diff` / `mf apply` against delta tools, on two release pairs:
#   1. arcade 3.3.2 -> 3.3.3 wheels from PyPI, unzipped and packed;
#   2. a generated pair: one 512 MiB entry (half compressible, half random) with scattered edits,
#      insertions and deletions, plus a few hundred small files.
# Anchors: Panda3D build_patch/apply_patch (on multifiles made with `multify -c -T 0`), bsdiff/bspatch,
# xdelta3 -9, zstd -19 --long=31 --patch-from, HDiffPatch (pip hdiffpatch), all on the same two .mf
# files. Each tool is timed with /usr/bin/time -v (wall time, peak RSS), median of $RUNS runs.
# Writes bench/results/diff.md. Usage: bench/suites/diff.sh [arcade|generated|all]
#
# Standalone: sources bench/lib.sh when present (shared helpers), otherwise defines its own.
# Environment: MF (an mf binary; default: build target/release/mf), RUNS (default 3),
# ANCHOR_TIMEOUT (seconds per command, default 900), WORK (scratch directory), ANCHORS (0: mf only).
# The 512 MiB pair uses RUNS_GENERATED (default 1) and ANCHOR_TIMEOUT_GENERATED (default 180): bsdiff and
# build_patch need many minutes and gigabytes there, and a capped "timed out" is the useful answer.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${WORK:-$ROOT/bench/work/diff}
RESULTS=$ROOT/bench/results/diff.md
RUNS=${RUNS:-3}
ANCHOR_TIMEOUT=${ANCHOR_TIMEOUT:-900}
WHICH=${1:-all}
mkdir -p "$WORK" "$(dirname "$RESULTS")"

if [ -f "$ROOT/bench/lib.sh" ]; then
  # shellcheck source=/dev/null
  source "$ROOT/bench/lib.sh"
fi

# --- helpers (used whether or not lib.sh exists, under names it does not define) ----------------

# diffbench_measure OUTVAR-PREFIX CMD...: runs CMD under /usr/bin/time -v with a timeout; sets
# ${prefix}_secs, ${prefix}_rss_mb, ${prefix}_status ("ok", "timed out", "failed").
diffbench_measure() {
  local prefix=$1; shift
  local log; log=$(mktemp)
  local status=ok rc=0
  timeout "$ANCHOR_TIMEOUT" /usr/bin/time -v "$@" >"$log.out" 2>"$log" || rc=$?
  if [ "$rc" -eq 124 ]; then
    status="timed out (${ANCHOR_TIMEOUT}s)"
  elif [ "$rc" -ne 0 ]; then
    status="failed"
  fi
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}' || true)
  rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}' || true)
  printf -v "${prefix}_secs" '%s' "$(python3 -c "
w='${wall:-0}'.split(':'); s=0.0
for p in w: s=s*60+float(p or 0)
print(f'{s:.2f}')")"
  printf -v "${prefix}_rss_mb" '%s' "$(( ${rss:-0} / 1024 ))"
  printf -v "${prefix}_status" '%s' "$status"
  if [ "$status" = failed ]; then
    echo "  command failed: $*" >&2
    tail -5 "$log" >&2
  fi
  rm -f "$log" "$log.out"
}

# diffbench_median CMD...: runs diffbench_measure $RUNS times; median time, max RSS.
diffbench_median() {
  local prefix=$1; shift
  local times=() rss_max=0 status=ok
  for _ in $(seq "$RUNS"); do
    diffbench_measure one "$@"
    status=$one_status
    [ "$status" = ok ] || break
    times+=("$one_secs")
    [ "$one_rss_mb" -gt "$rss_max" ] && rss_max=$one_rss_mb
  done
  local median="-"
  if [ ${#times[@]} -gt 0 ]; then
    median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  fi
  printf -v "${prefix}_secs" '%s' "$median"
  printf -v "${prefix}_rss_mb" '%s' "$rss_max"
  printf -v "${prefix}_status" '%s' "$status"
}

size_of() { [ -f "$1" ] && stat -c %s "$1" || echo "-"; }

# --- tools ---------------------------------------------------------------------------------------

setup_tools() {
  export DEBIAN_FRONTEND=noninteractive
  local missing=()
  command -v bsdiff >/dev/null || missing+=(bsdiff)
  command -v xdelta3 >/dev/null || missing+=(xdelta3)
  command -v zstd >/dev/null || missing+=(zstd)
  command -v unzip >/dev/null || missing+=(unzip)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$ROOT/bench/.venv/bin/python" ]; then
    python3 -m venv "$ROOT/bench/.venv"
  fi
  "$ROOT/bench/.venv/bin/pip" install -q panda3d hdiffpatch
  VENV=$ROOT/bench/.venv/bin
  PANDA_BIN=$("$VENV/python" -c "import panda3d, os; print(os.path.join(os.path.dirname(panda3d.__file__), '..', '..', '..', '..', 'bin'))")
  for tool in multify build_patch apply_patch; do
    if ! command -v "$tool" >/dev/null && [ ! -x "$VENV/$tool" ]; then
      echo "Panda3D tool $tool not found in $VENV" >&2
    fi
  done
  export PATH="$VENV:$PATH"
  if [ -z "${MF:-}" ]; then
    cargo build --release -p mf-cli >/dev/null
    MF=$ROOT/target/release/mf
  fi
}

# HDiffPatch through its Python wrapper (the pip package has no CLI).
hdiff_script() {
  cat >"$WORK/hdiff.py" <<'PY'
import sys, hdiffpatch
mode, a, b, out = sys.argv[1:5]
old = open(a, "rb").read()
if mode == "diff":
    new = open(b, "rb").read()
    open(out, "wb").write(hdiffpatch.diff(old, new, hdiffpatch.COMPRESSION_ZSTD, validate=False))
else:
    patch = open(b, "rb").read()
    open(out, "wb").write(hdiffpatch.apply(old, patch))
PY
}

# --- pairs ---------------------------------------------------------------------------------------

make_arcade_pair() {
  local dir=$WORK/arcade
  mkdir -p "$dir"
  if [ ! -f "$dir/v1.mf" ]; then
    (cd "$dir" && "$VENV/pip" download -q --no-deps arcade==3.3.2 arcade==3.3.3 -d wheels 2>/dev/null ||
      { "$VENV/pip" download -q --no-deps arcade==3.3.2 -d wheels && "$VENV/pip" download -q --no-deps arcade==3.3.3 -d wheels; })
    rm -rf "$dir/t1" "$dir/t2"
    unzip -q "$dir"/wheels/arcade-3.3.2-*.whl -d "$dir/t1"
    unzip -q "$dir"/wheels/arcade-3.3.3-*.whl -d "$dir/t2"
    "$MF" pack "$dir/t1" -o "$dir/v1.mf"
    "$MF" pack "$dir/t2" -o "$dir/v2.mf"
    (cd "$dir/t1" && multify -c -f "$dir/v1.p3d.mf" -T 0 . >/dev/null)
    (cd "$dir/t2" && multify -c -f "$dir/v2.p3d.mf" -T 0 . >/dev/null)
  fi
  PAIR_DIR=$dir
}

make_generated_pair() {
  local dir=$WORK/generated
  mkdir -p "$dir"
  if [ ! -f "$dir/v1.mf" ]; then
    python3 - "$dir" <<'PY'
import os, random, sys
d = sys.argv[1]
rng = random.Random(42)
half = 256 << 20
words = [b"alpha", b"beta", b"gamma", b"delta", b"mesh", b"sprite", b"texture", b"sound"]
words += [b"\n"]
def text(n, seed):
    r = random.Random(seed)
    out = b" ".join(r.choices(words, k=n // 5 + 16))
    return out[:n]
big = bytearray(text(half, 1) + b"".join(rng.randbytes(1 << 20) for _ in range(half >> 20)))
small = {f"assets/f{i:03}.txt": text(rng.randint(500, 40000), 100 + i) for i in range(300)}
def write(tree, data, files):
    os.makedirs(f"{d}/{tree}/assets", exist_ok=True)
    open(f"{d}/{tree}/big.dat", "wb").write(data)
    for p, c in files.items():
        open(f"{d}/{tree}/{p}", "wb").write(c)
write("t1", big, small)
new = bytearray(big)
for _ in range(200):  # scattered edits, insertions, deletions
    at = rng.randrange(len(new) - 5000)
    kind = rng.random()
    if kind < 0.4:
        new[at:at + 64] = rng.randbytes(64)
    elif kind < 0.7:
        new[at:at] = rng.randbytes(rng.randint(1, 4000))
    else:
        del new[at:at + rng.randint(1, 4000)]
files2 = dict(small)
for i in range(0, 300, 10):
    p = f"assets/f{i:03}.txt"
    files2[p] = files2[p][:100] + b"changed " + files2[p][100:]
write("t2", new, files2)
PY
    "$MF" pack "$dir/t1" -o "$dir/v1.mf"
    "$MF" pack "$dir/t2" -o "$dir/v2.mf"
    (cd "$dir/t1" && multify -c -f "$dir/v1.p3d.mf" -T 0 . >/dev/null)
    (cd "$dir/t2" && multify -c -f "$dir/v2.p3d.mf" -T 0 . >/dev/null)
  fi
  PAIR_DIR=$dir
}

# --- one pair ------------------------------------------------------------------------------------

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 | $7 | $8 |"); }

bench_tool() {
  # name, diff command, apply command, patch path, output path, expected output
  local name=$1 diff_cmd=$2 apply_cmd=$3 patch=$4 out=$5 expect=$6
  rm -f "$patch" "$out"
  diffbench_median d bash -c "$diff_cmd"
  local psize="-" a_secs="-" a_rss="-" ok="-"
  if [ "$d_status" = ok ]; then
    psize=$(size_of "$patch")
    diffbench_median a bash -c "$apply_cmd"
    if [ "$a_status" = ok ]; then
      a_secs=$a_secs; a_rss=$a_rss_mb
      cmp -s "$out" "$expect" && ok=yes || ok=NO
    else
      a_secs=$a_status
    fi
    row "$name" "$psize" "$d_secs" "$d_rss_mb" "$a_secs" "$a_rss" "$ok" "$PAIR_NAME"
  else
    row "$name" "-" "$d_status" "$d_rss_mb" "-" "-" "-" "$PAIR_NAME"
  fi
  echo "  $name: patch $psize B, diff $d_secs s / ${d_rss_mb} MB, apply $a_secs s / $a_rss MB, identical: $ok" >&2
}

bench_pair() {
  local d=$PAIR_DIR mem_args=${1:-}
  local o=$d/out; mkdir -p "$o"
  echo "== $PAIR_NAME" >&2
  bench_tool "mf diff/apply $mem_args" "$MF diff $mem_args $d/v1.mf $d/v2.mf -o $o/mf.mfp >/dev/null" \
    "$MF apply $o/mf.mfp $d/v1.mf -o $o/mf.out >/dev/null" "$o/mf.mfp" "$o/mf.out" "$d/v2.mf"
  # ANCHORS=0 measures mf alone (for a quick check of the memory target).
  [ "${ANCHORS:-1}" = 1 ] || return 0
  bench_tool "Panda3D build_patch/apply_patch" "build_patch -o $o/p3d.pch $d/v1.p3d.mf $d/v2.p3d.mf >/dev/null" \
    "cp $d/v1.p3d.mf $o/p3d.out && cp $o/p3d.pch $o/p3d.pch.keep && apply_patch $o/p3d.pch $o/p3d.out >/dev/null; mv -f $o/p3d.pch.keep $o/p3d.pch" \
    "$o/p3d.pch" "$o/p3d.out" "$d/v2.p3d.mf"
  bench_tool "bsdiff/bspatch" "bsdiff $d/v1.mf $d/v2.mf $o/bs.patch" "bspatch $d/v1.mf $o/bs.out $o/bs.patch" \
    "$o/bs.patch" "$o/bs.out" "$d/v2.mf"
  bench_tool "xdelta3 -9" "xdelta3 -9 -f -e -s $d/v1.mf $d/v2.mf $o/x.vcdiff" "xdelta3 -f -d -s $d/v1.mf $o/x.vcdiff $o/x.out" \
    "$o/x.vcdiff" "$o/x.out" "$d/v2.mf"
  bench_tool "zstd -19 --long=31 --patch-from" "zstd -q -f -19 --long=31 --patch-from=$d/v1.mf $d/v2.mf -o $o/z.zst" \
    "zstd -q -f -d --long=31 --patch-from=$d/v1.mf $o/z.zst -o $o/z.out" "$o/z.zst" "$o/z.out" "$d/v2.mf"
  bench_tool "HDiffPatch (pip hdiffpatch, zstd)" "$VENV/python $WORK/hdiff.py diff $d/v1.mf $d/v2.mf $o/h.patch" \
    "$VENV/python $WORK/hdiff.py apply $d/v1.mf $o/h.patch $o/h.out" "$o/h.patch" "$o/h.out" "$d/v2.mf"
}

setup_tools
hdiff_script
if [ "$WHICH" = arcade ] || [ "$WHICH" = all ]; then
  make_arcade_pair; PAIR_NAME=arcade; bench_pair
fi
if [ "$WHICH" = generated ] || [ "$WHICH" = all ]; then
  make_generated_pair; PAIR_NAME=generated-512M
  RUNS=${RUNS_GENERATED:-1} ANCHOR_TIMEOUT=${ANCHOR_TIMEOUT_GENERATED:-180} bench_pair "--memory-limit 512M"
fi

{
  echo "# mf diff/apply vs delta tools"
  echo
  echo "Generated by \`bench/suites/diff.sh $WHICH\` on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores,"
  echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM. Median of $RUNS runs (wall seconds); RSS is the"
  echo "peak of the runs in MB (/usr/bin/time -v). Anchors are capped at ${ANCHOR_TIMEOUT}s on the arcade pair and"
  echo "${ANCHOR_TIMEOUT_GENERATED:-180}s (one run, RUNS_GENERATED=${RUNS_GENERATED:-1}) on the 512 MiB pair (\"timed out\")."
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). Rows of one pair ran back to back."
  echo
  echo "| tool | patch bytes | diff s | diff RSS MB | apply s | apply RSS MB | output identical | pair |"
  echo "|---|---:|---:|---:|---:|---:|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Panda3D's patch is between its own multifiles (\`multify -c -T 0\` of the same trees); the others"
  echo "are between the two .mf files. \"output identical\" compares the rebuilt file with the real new file."
} >"$RESULTS"
echo "wrote $RESULTS" >&2

#!/usr/bin/env bash
# Apply time of mf against Panda3D's apply_patch on the diff suite's binary pairs, interleaved RUNS
# times (default 5) so both see the same machine; prints each run and the medians. The diff suite
# times each anchor once (they take minutes to diff), which is too noisy for a ratio of two
# one-second applies. Needs bench/suites/diff.sh to have run on the pairs (patches, multifiles);
# then `bench/suites/diff.sh report && bench/run --report` puts the medians in RESULTS.md.
# Usage: bench/apply_vs_apply_patch.sh [PAIR...]   (default: duckdb xgboost)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-$ROOT/bench/work/diff}
CACHE=${BENCH_CACHE:-$ROOT/bench/work/cache}
MF=${MF:-$ROOT/target/release/mf}
P3D=$(dirname "$(scripts/panda3d-venv)")
RUNS=${RUNS:-5}
scratch=$(mktemp -d "$WORK/apply-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
[ $# -gt 0 ] || set -- duckdb xgboost
for pair in "$@"; do
  d=$WORK/$pair
  p=$(ls -d "$CACHE/pairs/$pair"-* | head -1)
  # The same patches and commands as the suite's rows (the Panda3D patch is built once here).
  [ -f "$d/out/mf.mfp" ] || { echo "no $d/out/mf.mfp: run bench/suites/diff.sh $pair first" >&2; exit 1; }
  "$P3D/build_patch" -o "$scratch/p3d.pch" "$p/v1.p3d.mf" "$p/v2.p3d.mf" >/dev/null 2>&1
  : >"$scratch/mf.t"; : >"$scratch/p3d.t"
  for run in $(seq "$RUNS"); do
    rm -f "$scratch/mf.out"
    /usr/bin/time -f '%e %U %S %M' -o "$scratch/t" "$MF" apply "$d/out/mf.mfp" "$d/v1.mf" -o "$scratch/mf.out" >/dev/null
    cmp -s "$scratch/mf.out" "$d/v2.mf" || { echo "$pair: mf's output differs" >&2; exit 1; }
    cat "$scratch/t" >>"$scratch/mf.t"
    /usr/bin/time -f '%e %U %S %M' -o "$scratch/t" bash -c "cp $p/v1.p3d.mf $scratch/p3d.out && cp $scratch/p3d.pch $scratch/p3d.keep && $P3D/apply_patch $scratch/p3d.keep $scratch/p3d.out >/dev/null 2>&1"
    cmp -s "$scratch/p3d.out" "$p/v2.p3d.mf" || { echo "$pair: apply_patch's output differs" >&2; exit 1; }
    cat "$scratch/t" >>"$scratch/p3d.t"
    echo "$pair run $run: mf $(tail -1 "$scratch/mf.t" | cut -d' ' -f1) s, apply_patch $(cut -d' ' -f1 "$scratch/t") s"
  done
  mf_s=$(cut -d' ' -f1 "$scratch/mf.t" | median)
  p3d_s=$(cut -d' ' -f1 "$scratch/p3d.t" | median)
  mf_rss=$(cut -d' ' -f4 "$scratch/mf.t" | sort -n | tail -1)
  echo "$pair: median of $RUNS: mf apply $mf_s s (peak $((mf_rss / 1024)) MiB), apply_patch $p3d_s s, ratio $(awk "BEGIN {printf \"%.2f\", $mf_s / $p3d_s}")"
  # For bench/diff_report.py: its apply-time target row uses these medians (one line: commit, when,
  # runs, mf's median, apply_patch's median, mf's peak RSS in MiB).
  mkdir -p "$WORK/measured"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(git rev-parse --short HEAD)" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$RUNS" \
    "$mf_s" "$p3d_s" "$((mf_rss / 1024))" >"$WORK/measured/$pair.apply"
done

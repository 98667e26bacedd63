#!/usr/bin/env bash
# Apply time of mf against Panda3D's apply_patch on the diff suite's binary pairs, interleaved RUNS
# times (default 5) so both see the same machine; prints each run and the medians. The diff suite
# times each anchor once (they take minutes to diff), which is too noisy for a ratio of two
# one-second applies. Needs bench/suites/diff.sh to have run on the pairs (patches, multifiles);
# then `bench/suites/diff.sh report && bench/run --report` puts the medians in RESULTS.md.
# Usage: bench/apply_vs_apply_patch.sh [PAIR...]   (default: duckdb xgboost)
caller_mf=${MF:-}
source "$(dirname "$0")/lib.sh"
MF=${caller_mf:-$MF}
cd "$REPO_DIR"
WORK=${WORK:-$BENCH_WORK/diff}
CACHE=${BENCH_CACHE:-$BENCH_WORK/cache}
P3D=$(dirname "$(scripts/panda3d-venv)")
RUNS=${RUNS:-5}
# Credited as the diff suite credits its rows: the checkout's commit, marked when the code differs.
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench' || echo '+uncommitted')"
scratch=$(mktemp -d "$WORK/apply-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
[ $# -gt 0 ] || set -- duckdb xgboost
for pair in "$@"; do
  d=$WORK/$pair
  p=$(ls -d "$CACHE/pairs/$pair"-* | head -1)
  # The same patches and commands as the suite's rows (the Panda3D patch is built once here).
  [ -f "$d/out/mf.mfp" ] || bench_die "no $d/out/mf.mfp: run bench/suites/diff.sh $pair first"
  "$P3D/build_patch" -o "$scratch/p3d.pch" "$p/v1.p3d.mf" "$p/v2.p3d.mf" >/dev/null 2>&1
  : >"$scratch/mf.t"; : >"$scratch/p3d.t"
  for run in $(seq "$RUNS"); do
    rm -f "$scratch/mf.out"
    /usr/bin/time -f '%e %U %S %M' -o "$scratch/t" "$MF" apply "$d/out/mf.mfp" "$d/v1.mf" -o "$scratch/mf.out" >/dev/null
    cmp -s "$scratch/mf.out" "$d/v2.mf" || bench_die "$pair: mf's output differs"
    cat "$scratch/t" >>"$scratch/mf.t"
    /usr/bin/time -f '%e %U %S %M' -o "$scratch/t" bash -c "cp $p/v1.p3d.mf $scratch/p3d.out && cp $scratch/p3d.pch $scratch/p3d.keep && $P3D/apply_patch $scratch/p3d.keep $scratch/p3d.out >/dev/null 2>&1"
    cmp -s "$scratch/p3d.out" "$p/v2.p3d.mf" || bench_die "$pair: apply_patch's output differs"
    cat "$scratch/t" >>"$scratch/p3d.t"
    echo "$pair run $run: mf $(tail -1 "$scratch/mf.t" | cut -d' ' -f1) s, apply_patch $(cut -d' ' -f1 "$scratch/t") s"
  done
  for tool in mf p3d; do
    cut -d' ' -f1 "$scratch/$tool.t" >"$scratch/$tool.secs"
  done
  cut -d' ' -f4 "$scratch/mf.t" >"$scratch/mf.rss"
  mf_s=$(bench_median "$scratch/mf.secs")
  p3d_s=$(bench_median "$scratch/p3d.secs")
  mf_rss=$(bench_max "$scratch/mf.rss")
  echo "$pair: median of $RUNS: mf apply $mf_s s (peak $((mf_rss / 1024)) MiB), apply_patch $p3d_s s, ratio $(awk "BEGIN {printf \"%.2f\", $mf_s / $p3d_s}")"
  # For bench/diff_report.py: its apply-time target row uses these medians (one line: commit, when,
  # runs, mf's median, apply_patch's median, mf's peak RSS in MiB).
  mkdir -p "$WORK/measured"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$commit" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$RUNS" \
    "$mf_s" "$p3d_s" "$((mf_rss / 1024))" >"$WORK/measured/$pair.apply"
done

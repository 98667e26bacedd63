#!/usr/bin/env bash
# Benchmark of `mf diff` / `mf apply` against delta tools, on four release pairs:
#   arcade     arcade 3.3.2 -> 3.3.3 wheels from PyPI, unzipped and packed (asset-heavy, tiny change);
#   generated  one 512 MiB entry (half compressible, half random) with scattered edits, insertions and
#              deletions, plus a few hundred small files; mf runs with --memory-limit 512M;
#   duckdb     duckdb 1.1.2 -> 1.1.3 (cp311 manylinux x86_64): one 62 MB native library dominates;
#   xgboost    xgboost 2.1.2 -> 2.1.3 (manylinux_2_28 x86_64): libxgboost.so is 250 MB uncompressed.
# The two binary pairs ("binary") carry issue 12's targets: mf runs at default settings and under
# --memory-limit 512M on the two .mf files (`mf pack` of the unzipped wheels); the anchors run on the
# uncompressed trees: an uncompressed tar of each tree, and for Panda3D `multify -c -T 0` multifiles.
# On arcade and generated the anchors run on the two .mf files, as they always did here, so the figures
# stay comparable with earlier runs; mf's figures there are checked against bench/diff-reference.tsv.
#
# Anchors: Panda3D build_patch/apply_patch (scripts/panda3d-venv), bsdiff/bspatch, xdelta3 -9,
# zstd -19 --long=31 --patch-from, HDiffPatch through its pip package (`hdiffpatch`, zstd; the issue's
# reference) and HDiffPatch's own hdiffz/hpatchz CLI (default -m, -c-zstd), built from the C sources that
# the pip package's sdist vendors. Each command is timed with /usr/bin/time -v (wall time, peak RSS);
# median time of RUNS runs, peak RSS the largest of them. Every rebuilt file is compared with the real one.
#
# Usage: bench/suites/diff.sh [PAIR...]   PAIR: arcade generated duckdb xgboost binary all (default all)
#        bench/suites/diff.sh prepare     (only install the tools and build the pairs' inputs)
#        bench/suites/diff.sh report      (only re-write bench/results/diff.md from the last measurements)
# Each pair's measurements land in $WORK/measured/PAIR.tsv and bench/results/diff.md is re-assembled from
# every pair measured so far (each pair says when and at which commit it was measured).
#
# Environment: MF (an mf binary; default: build target/release/mf), WORK (scratch, default bench/work/diff),
# BENCH_CACHE (downloads, unpacked pairs and built anchors, reusable across worktrees; default
# bench/work/cache), ANCHORS (0: mf only), HDIFFZ (0: skip the hdiffz CLI rows).
# Repeats and caps (seconds per command, "timed out" is then the answer), per pair (mf's own commands
# are capped at MF_TIMEOUT, default 3600):
#   RUNS (arcade, 3), ANCHOR_TIMEOUT (arcade, 900),
#   RUNS_GENERATED (1), ANCHOR_TIMEOUT_GENERATED (180),
#   RUNS_BINARY (1), ANCHOR_TIMEOUT_DUCKDB (600), ANCHOR_TIMEOUT_XGBOOST (600),
#   BSDIFF_TIMEOUT_BINARY (240: bsdiff's suffix sort needs ~17 bytes a byte and many minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${WORK:-$ROOT/bench/work/diff}
CACHE=${BENCH_CACHE:-$ROOT/bench/work/cache}
RESULTS=$ROOT/bench/results/diff.md
REFERENCE=$ROOT/bench/diff-reference.tsv
mkdir -p "$WORK/measured" "$CACHE" "$(dirname "$RESULTS")"

# lib.sh sets MF to the repository's release build: keep the caller's MF, if any.
MF_GIVEN=${MF:-}
if [ -f "$ROOT/bench/lib.sh" ]; then
  # shellcheck source=/dev/null
  source "$ROOT/bench/lib.sh"
fi
MF=$MF_GIVEN

# --- measuring ------------------------------------------------------------------------------------

# diffbench_measure PREFIX CAP CMD...: runs CMD under /usr/bin/time -v, killed after CAP seconds; sets
# ${PREFIX}_secs, ${PREFIX}_cpu (user+sys s), ${PREFIX}_rss_mb (MiB), ${PREFIX}_status ("ok",
# "timed out (CAPs)", "failed").
diffbench_measure() {
  local prefix=$1 cap=$2; shift 2
  local log; log=$(mktemp)
  local status=ok rc=0
  timeout "$cap" /usr/bin/time -v "$@" >"$log.out" 2>"$log" || rc=$?
  if [ "$rc" -eq 124 ]; then
    status="timed out (${cap}s)"
  elif [ "$rc" -ne 0 ]; then
    status="failed"
  fi
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}' || true)
  rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}' || true)
  printf -v "${prefix}_cpu" '%s' "$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$log")"
  printf -v "${prefix}_secs" '%s' "$(awk -v w="${wall:-0}" 'BEGIN { n = split(w, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }')"
  printf -v "${prefix}_rss_mb" '%s' "$(( ${rss:-0} / 1024 ))"
  printf -v "${prefix}_status" '%s' "$status"
  if [ "$status" = failed ]; then
    echo "  command failed: $*" >&2
    tail -5 "$log" >&2
  fi
  rm -f "$log" "$log.out"
}

# diffbench_median PREFIX CAP CMD...: diffbench_measure $PAIR_RUNS times; median wall and CPU time,
# largest RSS.
diffbench_median() {
  local prefix=$1 cap=$2; shift 2
  local times=() cpus=() rss_max=0 status=ok
  for _ in $(seq "$PAIR_RUNS"); do
    diffbench_measure one "$cap" "$@"
    status=$one_status
    [ "$one_rss_mb" -gt "$rss_max" ] && rss_max=$one_rss_mb
    [ "$status" = ok ] || break
    times+=("$one_secs")
    cpus+=("$one_cpu")
  done
  local median="-" cpu="-"
  if [ ${#times[@]} -gt 0 ]; then
    median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    cpu=$(printf '%s\n' "${cpus[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  fi
  printf -v "${prefix}_secs" '%s' "$median"
  printf -v "${prefix}_cpu" '%s' "$cpu"
  printf -v "${prefix}_rss_mb" '%s' "$rss_max"
  printf -v "${prefix}_status" '%s' "$status"
}

size_of() { [ -f "$1" ] && stat -c %s "$1" || echo "-"; }
log() { printf '[diff %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- tools ---------------------------------------------------------------------------------------

setup_tools() {
  export DEBIAN_FRONTEND=noninteractive
  local missing=() tool
  for tool in bsdiff xdelta3 zstd unzip make g++; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ -x /usr/bin/time ] || missing+=(time)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$ROOT/bench/.venv/bin/python" ]; then
    python3 -m venv "$ROOT/bench/.venv"
  fi
  VENV=$ROOT/bench/.venv/bin
  "$VENV/pip" show -q hdiffpatch >/dev/null 2>&1 || "$VENV/pip" install -q hdiffpatch==2.6.0
  local p3d_python
  p3d_python=$("$ROOT/scripts/panda3d-venv")
  P3D=$(dirname "$p3d_python")
  for tool in multify build_patch apply_patch; do
    [ -x "$P3D/$tool" ] || { echo "Panda3D tool $tool not found in $P3D" >&2; exit 1; }
  done
  build_hdiffz
  if [ -z "${MF:-}" ]; then
    MF=$ROOT/target/release/mf
    # bench/run has built it already; run on its own, this suite builds it.
    if [ "${BENCH_MF_BUILT:-0}" != 1 ] || [ ! -x "$MF" ]; then
      (cd "$ROOT" && cargo build --release --locked -q -p mf-cli) >&2
    fi
  fi
  hdiff_script
}

# build_hdiffz: HDiffPatch's own CLI (hdiffz, hpatchz) in $CACHE/bin, compiled from the HDiffPatch and
# zstd sources vendored in the pip package's sdist (the registry is the only source we may download
# from). zstd only; multi-threaded as upstream's default build.
build_hdiffz() {
  HDIFFZ_BIN=$CACHE/bin/hdiffz
  HPATCHZ_BIN=$CACHE/bin/hpatchz
  [ -x "$HDIFFZ_BIN" ] && [ -x "$HPATCHZ_BIN" ] && return 0
  log "building hdiffz/hpatchz from the hdiffpatch==2.6.0 sdist"
  local src=$CACHE/src
  rm -rf "$src" && mkdir -p "$src" "$CACHE/sdist" "$CACHE/bin"
  "$VENV/pip" download -q --no-deps --no-binary=hdiffpatch hdiffpatch==2.6.0 -d "$CACHE/sdist"
  tar xzf "$CACHE"/sdist/hdiffpatch-2.6.0.tar.gz -C "$src"
  local dir=$src/hdiffpatch-2.6.0/hdiffpatch/_c_src/HDiffPatch
  make -C "$dir" -j"$(nproc)" LDEF=0 ZLIB=0 LZMA=0 ZSTD=1 XXH=0 MD5=0 VCD=0 BSD=0 BZIP2=0 DIR_DIFF=0 MT=1 \
    hdiffz hpatchz >"$CACHE/hdiffz-build.log" 2>&1 || { tail -20 "$CACHE/hdiffz-build.log" >&2; exit 1; }
  cp "$dir/hdiffz" "$dir/hpatchz" "$CACHE/bin/"
}

# HDiffPatch through its Python wrapper (the pip package has no CLI): whole files in memory.
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

# pack_mf TREES OUT: (re)packs TREES/t1, TREES/t2 into OUT/v1.mf, OUT/v2.mf with the mf under test
# whenever the binary is newer than the packed files (the container format may change between commits).
pack_mf() {
  local trees=$1 dir=${2:-$1}
  if [ ! -f "$dir/v2.mf" ] || [ "$MF" -nt "$dir/v2.mf" ]; then
    log "mf pack $trees/t1, t2"
    "$MF" pack "$trees/t1" -o "$dir/v1.mf.tmp" >/dev/null && mv "$dir/v1.mf.tmp" "$dir/v1.mf"
    "$MF" pack "$trees/t2" -o "$dir/v2.mf.tmp" >/dev/null && mv "$dir/v2.mf.tmp" "$dir/v2.mf"
  fi
}

# multify_pair DIR: Panda3D multifiles of the two trees, stored uncompressed (-T 0: no timestamps).
multify_pair() {
  local dir=$1 v
  for v in 1 2; do
    [ -f "$dir/v$v.p3d.mf" ] && continue
    (cd "$dir/t$v" && "$P3D/multify" -c -f "$dir/v$v.p3d.mf.tmp" -T 0 . >/dev/null)
    mv "$dir/v$v.p3d.mf.tmp" "$dir/v$v.p3d.mf"
  done
}

make_arcade_pair() {
  local dir=$WORK/arcade
  mkdir -p "$dir"
  if [ ! -d "$dir/t2" ]; then
    "$VENV/pip" download -q --no-deps --only-binary=:all: arcade==3.3.2 -d "$dir/wheels"
    "$VENV/pip" download -q --no-deps --only-binary=:all: arcade==3.3.3 -d "$dir/wheels"
    rm -rf "$dir/t1" "$dir/t2.tmp"
    unzip -q "$dir"/wheels/arcade-3.3.2-*.whl -d "$dir/t1"
    unzip -q "$dir"/wheels/arcade-3.3.3-*.whl -d "$dir/t2.tmp"
    mv "$dir/t2.tmp" "$dir/t2"
  fi
  pack_mf "$dir"
  multify_pair "$dir"
  PAIR_DIR=$dir
}

make_generated_pair() {
  local dir=$WORK/generated
  mkdir -p "$dir"
  if [ ! -f "$dir/t2/big.dat" ]; then
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
  fi
  pack_mf "$dir"
  multify_pair "$dir"
  PAIR_DIR=$dir
}

# make_wheel_pair NAME OLD NEW PLATFORM: the two wheels from PyPI (cp311, PLATFORM), unzipped into
# $CACHE/pairs/NAME-OLD-NEW/t1 and t2, with uncompressed tars (v1.tar, v2.tar, fixed order and
# metadata) and Panda3D multifiles next to them; the .mf files go to $WORK (they depend on mf).
make_wheel_pair() {
  local name=$1 old=$2 new=$3 platform=$4
  local dir=$CACHE/pairs/$name-$old-$new v
  mkdir -p "$dir" "$CACHE/wheels"
  for v in 1 2; do
    local version=$old
    [ "$v" = 2 ] && version=$new
    [ -d "$dir/t$v" ] && continue
    log "downloading $name==$version ($platform)"
    "$VENV/pip" download -q --no-deps --only-binary=:all: --platform "$platform" --python-version 3.11 \
      "$name==$version" -d "$CACHE/wheels"
    local wheel
    wheel=$(ls "$CACHE"/wheels/"$name"-"$version"-*"${platform}"*.whl | head -1)
    rm -rf "$dir/t$v.tmp"
    unzip -q "$wheel" -d "$dir/t$v.tmp"
    mv "$dir/t$v.tmp" "$dir/t$v"
  done
  for v in 1 2; do
    [ -f "$dir/v$v.tar" ] && continue
    tar -C "$dir/t$v" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$dir/v$v.tar.tmp" .
    mv "$dir/v$v.tar.tmp" "$dir/v$v.tar"
  done
  multify_pair "$dir"
  local mfdir=$WORK/$name
  mkdir -p "$mfdir"
  pack_mf "$dir" "$mfdir"
  PAIR_DIR=$dir
  MF_DIR=$mfdir
}

# --- one pair ------------------------------------------------------------------------------------

# want_row KEY: whether ROWS (a space-separated list of keys, default all) asks for this row. Keys: mf,
# mf-limit, hdiffpatch, panda3d, xdelta3, zstd, hdiffz, bsdiff.
want_row() {
  [ -z "${ROWS:-}" ] && return 0
  case " $ROWS " in *" $1 "*) return 0 ;; esac
  return 1
}

# bench_tool NAME DIFF_CMD APPLY_CMD PATCH OUT EXPECTED [CAP]: one row of $MEASURED (tab-separated:
# tool, patch bytes, diff s, diff RSS MiB, apply s, apply RSS MiB, output identical, diff CPU s,
# apply CPU s). A time column holds the status instead when the command timed out or failed.
bench_tool() {
  local name=$1 diff_cmd=$2 apply_cmd=$3 patch=$4 out=$5 expect=$6 cap=${7:-$PAIR_TIMEOUT}
  rm -f "$patch" "$out"
  log "$PAIR_NAME: $name"
  diffbench_median d "$cap" bash -c "$diff_cmd"
  local psize="-" a_secs="-" a_rss="-" a_cpu="-" ok="-"
  if [ "$d_status" = ok ]; then
    psize=$(size_of "$patch")
    diffbench_median a "$cap" bash -c "$apply_cmd"
    a_rss=$a_rss_mb
    if [ "$a_status" = ok ]; then
      cmp -s "$out" "$expect" && ok=yes || ok=NO
    else
      a_secs=$a_status
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$psize" "$d_secs" "$d_rss_mb" "$a_secs" "$a_rss" "$ok" \
      "$d_cpu" "$a_cpu" >>"$MEASURED"
  else
    printf '%s\t-\t%s\t%s\t-\t-\t-\t-\t-\n' "$name" "$d_status" "$d_rss_mb" >>"$MEASURED"
  fi
  rm -f "$out"
  log "  patch $psize B, diff $d_secs s / ${d_rss_mb} MB, apply $a_secs s / $a_rss MB, identical: $ok"
}

# start_pair NAME RUNS CAP DESCRIPTION: opens $WORK/measured/NAME.tsv.tmp with a header of comment lines
# (renamed to NAME.tsv when the pair is done; a run cut short leaves the .tmp, reported as partial).
# With APPEND=1 the rows measured now are added to the pair's last measurements (the report keeps the
# newest row of each tool), e.g. ROWS=mf-limit APPEND=1 to re-measure one row.
start_pair() {
  PAIR_NAME=$1 PAIR_RUNS=$2 PAIR_TIMEOUT=$3
  MEASURED=$WORK/measured/$PAIR_NAME.tsv.tmp
  local commit
  commit="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!bench' || echo '+uncommitted')"
  if [ "${APPEND:-0}" = 1 ] && [ -f "${MEASURED%.tmp}" ]; then
    cp "${MEASURED%.tmp}" "$MEASURED"
    printf '#appended\t%s at %s (rows: %s), load %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit" \
      "${ROWS:-all}" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$MEASURED"
    return 0
  fi
  {
    printf '#pair\t%s\n' "$PAIR_NAME"
    printf '#description\t%s\n' "$4"
    printf '#started\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf '#commit\t%s\n' "$commit"
    printf '#runs\t%s\n' "$PAIR_RUNS"
    printf '#cap\t%s\n' "$PAIR_TIMEOUT"
    printf '#load_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$MEASURED"
}

end_pair() {
  printf '#finished\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" >>"$MEASURED"
  printf '#load_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$MEASURED"
  mv "$MEASURED" "${MEASURED%.tmp}"
}

# bench_mf_rows DIR MEM_ARGS...: mf diff/apply between DIR/v1.mf and DIR/v2.mf, once per MEM_ARGS
# ("" for the default settings).
bench_mf_rows() {
  local d=$1 o=$1/out args; shift
  mkdir -p "$o"
  for args in "$@"; do
    want_row "$([ -z "$args" ] && echo mf || echo mf-limit)" || continue
    bench_tool "mf${args:+ $args}" "$MF diff $args $d/v1.mf $d/v2.mf -o $o/mf.mfp >/dev/null" \
      "$MF apply $o/mf.mfp $d/v1.mf -o $o/mf.out >/dev/null" "$o/mf.mfp" "$o/mf.out" "$d/v2.mf" "${MF_TIMEOUT:-3600}"
  done
}

# bench_anchor_rows DIR OLD NEW [BSDIFF_CAP]: the anchors on DIR/OLD -> DIR/NEW, Panda3D on its multifiles.
# The targets' references (HDiffPatch, build_patch) come first, bsdiff (slowest, capped) last.
bench_anchor_rows() {
  local d=$1 v1=$1/$2 v2=$1/$3 bs_cap=${4:-$PAIR_TIMEOUT}
  local o=$WORK/out-$PAIR_NAME
  mkdir -p "$o"
  want_row hdiffpatch && \
  bench_tool "HDiffPatch (pip hdiffpatch, zstd)" "$VENV/python $WORK/hdiff.py diff $v1 $v2 $o/h.patch" \
    "$VENV/python $WORK/hdiff.py apply $v1 $o/h.patch $o/h.out" "$o/h.patch" "$o/h.out" "$v2"
  want_row panda3d && \
  bench_tool "Panda3D build_patch/apply_patch" "$P3D/build_patch -o $o/p3d.pch $d/v1.p3d.mf $d/v2.p3d.mf >/dev/null" \
    "cp $d/v1.p3d.mf $o/p3d.out && cp $o/p3d.pch $o/p3d.pch.keep && $P3D/apply_patch $o/p3d.pch $o/p3d.out >/dev/null; mv -f $o/p3d.pch.keep $o/p3d.pch" \
    "$o/p3d.pch" "$o/p3d.out" "$d/v2.p3d.mf"
  want_row xdelta3 && \
  bench_tool "xdelta3 -9" "xdelta3 -9 -f -e -s $v1 $v2 $o/x.vcdiff" "xdelta3 -f -d -s $v1 $o/x.vcdiff $o/x.out" \
    "$o/x.vcdiff" "$o/x.out" "$v2"
  want_row zstd && \
  bench_tool "zstd -19 --long=31 --patch-from" "zstd -q -f -19 --long=31 --patch-from=$v1 $v2 -o $o/z.zst" \
    "zstd -q -f -d --long=31 --patch-from=$v1 $o/z.zst -o $o/z.out" "$o/z.zst" "$o/z.out" "$v2"
  if [ "${HDIFFZ:-1}" = 1 ] && want_row hdiffz; then
    bench_tool "HDiffPatch hdiffz -m -c-zstd" "$HDIFFZ_BIN -m -c-zstd -f $v1 $v2 $o/hz.patch >/dev/null" \
      "$HPATCHZ_BIN -f $v1 $o/hz.patch $o/hz.out >/dev/null" "$o/hz.patch" "$o/hz.out" "$v2"
  fi
  want_row bsdiff && \
  bench_tool "bsdiff/bspatch" "bsdiff $v1 $v2 $o/bs.patch" "bspatch $v1 $o/bs.out $o/bs.patch" \
    "$o/bs.patch" "$o/bs.out" "$v2" "$bs_cap"
  rm -f "$o"/*.patch "$o"/*.pch "$o"/*.vcdiff "$o"/*.zst
  return 0
}

run_arcade() {
  make_arcade_pair
  start_pair arcade "${RUNS:-3}" "${ANCHOR_TIMEOUT:-900}" \
    "arcade 3.3.2 → 3.3.3 wheels, unzipped (1,356 files, 85 MiB); anchors on the two .mf files"
  bench_mf_rows "$PAIR_DIR" ""
  [ "${ANCHORS:-1}" = 1 ] && bench_anchor_rows "$PAIR_DIR" v1.mf v2.mf
  end_pair
}

run_generated() {
  make_generated_pair
  start_pair generated-512M "${RUNS_GENERATED:-1}" "${ANCHOR_TIMEOUT_GENERATED:-180}" \
    "generated: one 512 MiB entry with 200 scattered edits + 300 small files; anchors on the two .mf files"
  bench_mf_rows "$PAIR_DIR" "--memory-limit 512M"
  [ "${ANCHORS:-1}" = 1 ] && bench_anchor_rows "$PAIR_DIR" v1.mf v2.mf
  end_pair
}

# run_wheel NAME OLD NEW PLATFORM CAP DESCRIPTION
run_wheel() {
  make_wheel_pair "$1" "$2" "$3" "$4"
  start_pair "$1" "${RUNS_BINARY:-1}" "$5" "$6"
  bench_mf_rows "$MF_DIR" "" "--memory-limit 512M"
  [ "${ANCHORS:-1}" = 1 ] && bench_anchor_rows "$PAIR_DIR" v1.tar v2.tar "${BSDIFF_TIMEOUT_BINARY:-240}"
  end_pair
}

run_duckdb() {
  run_wheel duckdb 1.1.2 1.1.3 manylinux2014_x86_64 "${ANCHOR_TIMEOUT_DUCKDB:-600}" \
    "duckdb 1.1.2 → 1.1.3 (cp311 manylinux2014 x86_64 wheels; duckdb.cpython-311-x86_64-linux-gnu.so 62.4 MB); anchors on uncompressed tars"
}

run_xgboost() {
  run_wheel xgboost 2.1.2 2.1.3 manylinux_2_28_x86_64 "${ANCHOR_TIMEOUT_XGBOOST:-600}" \
    "xgboost 2.1.2 → 2.1.3 (manylinux_2_28 x86_64 wheels; lib/libxgboost.so 250.1 MB, same size in both, 228 MB of its bytes differ in place); anchors on uncompressed tars"
}

report() {
  python3 "$ROOT/bench/diff_report.py" "$WORK/measured" "$REFERENCE" >"$RESULTS.tmp"
  mv "$RESULTS.tmp" "$RESULTS"
  log "wrote $RESULTS"
}

[ $# -gt 0 ] || set -- all
case "$1" in
  report) report; exit 0 ;;
  prepare)
    setup_tools
    make_arcade_pair; make_generated_pair
    make_wheel_pair duckdb 1.1.2 1.1.3 manylinux2014_x86_64
    make_wheel_pair xgboost 2.1.2 2.1.3 manylinux_2_28_x86_64
    exit 0 ;;
esac
pairs=()
for p in "$@"; do
  case "$p" in
    all) pairs+=(duckdb xgboost arcade generated) ;;
    binary) pairs+=(duckdb xgboost) ;;
    arcade | generated | duckdb | xgboost) pairs+=("$p") ;;
    *) echo "unknown pair '$p' (arcade generated duckdb xgboost binary all prepare report)" >&2; exit 2 ;;
  esac
done
setup_tools
for p in "${pairs[@]}"; do
  "run_$p"
done
report

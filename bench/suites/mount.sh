#!/usr/bin/env bash
# Benchmark suite "mount": `mf mount` against squashfuse_ll (zstd squashfs image) and the native
# file system, on the arcade 3.3.3 asset tree and on four large files (two compressible, two random).
# Workloads: ls -lR, find, tar | wc -c, dd bs=1M, fio randread 64k (direct and buffered), each cold
# (caches dropped, daemon restarted) and warm; daemon RssAnon. Writes bench/results/mount.md.
#
# Uses bench/lib.sh when present (bench/run); otherwise runs standalone. Needs root (drop_caches,
# mounting). Environment: BENCH_RUNS (default 3), BIG_MB (default 256), FIO_SECONDS (default 5),
# MF_THREADS (default: mf's own default), SQFS_BLOCK (default 262144, = mf's frame size).
set -euo pipefail

SUITE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -f "$SUITE_DIR/../lib.sh" ]; then
  # shellcheck source=/dev/null
  source "$SUITE_DIR/../lib.sh"
fi
REPO_DIR="${REPO_DIR:-$(cd "$SUITE_DIR/../.." && pwd)}"
BENCH_WORK="${BENCH_WORK:-$REPO_DIR/bench/work}"
BENCH_RESULTS="${BENCH_RESULTS:-$REPO_DIR/bench/results}"
BENCH_RUNS="${BENCH_RUNS:-3}"
MF="${MF:-$REPO_DIR/target/release/mf}"
BIG_MB="${BIG_MB:-256}"
FIO_SECONDS="${FIO_SECONDS:-5}"
SQFS_BLOCK="${SQFS_BLOCK:-262144}"
LEVEL="${LEVEL:-9}"
mkdir -p "$BENCH_WORK" "$BENCH_RESULTS"

# Fallbacks for running without bench/lib.sh (same names and meaning).
declare -F bench_log >/dev/null || bench_log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
declare -F bench_die >/dev/null || bench_die() { bench_log "error: $*"; exit 1; }
declare -F bench_drop_caches >/dev/null || bench_drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
declare -F bench_build_mf >/dev/null || bench_build_mf() {
  (cd "$REPO_DIR" && cargo build --release --locked -q -p mf-cli) >&2
}
declare -F bench_need_apt >/dev/null || bench_need_apt() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
declare -F bench_corpus_arcade >/dev/null || bench_corpus_arcade() {
  local dir="$BENCH_WORK/corpus/arcade-3.3.3"
  local marker="$BENCH_WORK/corpus/.arcade-3.3.3.complete"
  if [ ! -f "$marker" ]; then
    mkdir -p "$BENCH_WORK/download"
    python3 -m pip download -q --no-deps --only-binary :all: arcade==3.3.3 -d "$BENCH_WORK/download" >&2
    rm -rf "$dir" && mkdir -p "$dir"
    python3 -m zipfile -e "$BENCH_WORK/download/arcade-3.3.3-py3-none-any.whl" "$dir"
    touch "$marker"
  fi
  echo "$dir"
}

[ "$(id -u)" -eq 0 ] || bench_die "the mount suite needs root (drop_caches, mounts)"
bench_need_apt fuse3 squashfuse squashfs-tools fio
bench_build_mf

W="$BENCH_WORK/mount"
mkdir -p "$W"
OUT="$BENCH_RESULTS/mount.md"
RAW="$W/raw.tsv"   # dataset, mount, workload, mode, run, seconds or MiB/s, daemon CPU
REPORT_ONLY="${REPORT_ONLY:-0}" # 1: rewrite the report from the last run's raw.tsv

# ---------------------------------------------------------------- datasets
ARCADE_SRC="$(bench_corpus_arcade)"
BIG_SRC="$W/big"
if [ ! -f "$W/.big-$BIG_MB.complete" ]; then
  bench_log "generating 4 x $BIG_MB MiB files"
  rm -rf "$BIG_SRC" && mkdir -p "$BIG_SRC"
  # Compressible: decimal text, and a CSV-like table (zstd -9 gets ~3-5x).
  seq 0 999999999 | head -c "${BIG_MB}M" >"$BIG_SRC/compressible1.txt" || true
  awk 'BEGIN { srand(7); while (1) printf "%d,item_%d,%.3f,%s\n", NR++, int(rand()*100000), rand()*1000, (rand() < 0.5 ? "alpha" : "beta") }' \
    | head -c "${BIG_MB}M" >"$BIG_SRC/compressible2.csv" || true
  head -c "${BIG_MB}M" /dev/urandom >"$BIG_SRC/random1.bin"
  head -c "${BIG_MB}M" /dev/urandom >"$BIG_SRC/random2.dat"
  touch "$W/.big-$BIG_MB.complete"
fi

build_images() { # name src
  local name=$1 src=$2
  if [ ! -f "$W/$name.mf" ] || [ "$MF" -nt "$W/$name.mf" ]; then
    bench_log "mf pack $name"
    "$MF" pack "$src" -o "$W/$name.mf" --level "$LEVEL" >/dev/null
  fi
  if [ ! -f "$W/$name.sqfs" ]; then
    bench_log "mksquashfs $name"
    mksquashfs "$src" "$W/$name.sqfs" -comp zstd -Xcompression-level "$LEVEL" -b "$SQFS_BLOCK" -noappend \
      -no-progress -quiet >/dev/null
  fi
}
build_images arcade "$ARCADE_SRC"
build_images big "$BIG_SRC"

# ---------------------------------------------------------------- mounts
MNT_MF="$W/mnt-mf"
MNT_SQ="$W/mnt-squashfuse"
mkdir -p "$MNT_MF" "$MNT_SQ"

mf_pid() { # the --background daemon serving $MNT_MF
  local p
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "--daemon-child.* $MNT_MF\$\|--daemon-child.* $MNT_MF "; then
      basename "$p"
      return
    fi
  done
}
sq_pid() { pgrep -f "squashfuse_ll .* $MNT_SQ\$" | head -1; }

unmount_all() {
  mountpoint -q "$MNT_MF" && "$MF" umount "$MNT_MF" || true
  mountpoint -q "$MNT_SQ" && fusermount3 -u "$MNT_SQ" || true
  for _ in $(seq 50); do [ -z "$(mf_pid)$(sq_pid)" ] && break; sleep 0.1; done
}
trap unmount_all EXIT

# mount_kind KIND DATASET: (re)starts the daemon of KIND (mf | squashfuse | native) for DATASET and
# sets M to the directory to read.
mount_kind() {
  local kind=$1 dataset=$2
  unmount_all
  case $kind in
    native) if [ "$dataset" = arcade ]; then M=$ARCADE_SRC; else M=$BIG_SRC; fi ;;
    mf)
      "$MF" ${MF_THREADS:+--threads "$MF_THREADS"} mount --background "$W/$dataset.mf" "$MNT_MF"
      M=$MNT_MF ;;
    squashfuse)
      squashfuse_ll "$W/$dataset.sqfs" "$MNT_SQ"
      for _ in $(seq 100); do mountpoint -q "$MNT_SQ" && break; sleep 0.05; done
      M=$MNT_SQ ;;
  esac
}

now() { date +%s.%N; }

# daemon_cpu KIND: user+system CPU seconds the serving daemon has used so far (0 for native).
daemon_cpu() {
  local pid=""
  case $1 in mf) pid=$(mf_pid) ;; squashfuse) pid=$(sq_pid) ;; esac
  if [ -n "$pid" ] && [ -r "/proc/$pid/stat" ]; then
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$pid/stat"
  else
    echo 0
  fi
}
cpu_delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# time_cmd CMD...: prints the wall seconds of CMD (run through sh -c, output discarded).
time_cmd() {
  local start end
  start=$(now)
  sh -c "$1" >/dev/null 2>&1
  end=$(now)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.4f", b - a }'
}

# Workloads: name, command (M is substituted), bytes it reads (for MiB/s; 0 = report seconds).
declare -A WL_CMD WL_BYTES
WL_CMD[ls_lR]='ls -lR "$M" >/dev/null'
WL_CMD[find]='find "$M" -type f | wc -l'
WL_CMD[tar]='tar cf - -C "$M" . | wc -c'
WL_CMD[dd_compressible]='dd if="$M/compressible1.txt" of=/dev/null bs=1M'
WL_CMD[dd_random]='dd if="$M/random1.bin" of=/dev/null bs=1M'

ARCADE_BYTES=$(du -sb --apparent-size "$ARCADE_SRC" | cut -f1)
BIG_FILE_BYTES=$((BIG_MB * 1048576))

sample_rss() {
  local pid kb
  pid=$(mf_pid)
  [ -n "$pid" ] || return 0
  kb=$(awk '/^RssAnon/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
  [ "${kb:-0}" -gt "$rss_max" ] && rss_max=$kb
  return 0
}

run_workload() { # dataset kind workload
  local dataset=$1 kind=$2 wl=$3 cmd run secs
  cmd=${WL_CMD[$wl]}
  # Cold: page cache dropped and daemon restarted before every run.
  for run in $(seq "$BENCH_RUNS"); do
    mount_kind "$kind" "$dataset"
    bench_drop_caches
    c0=$(daemon_cpu "$kind")
    secs=$(M=$M time_cmd "M='$M'; $cmd")
    c1=$(daemon_cpu "$kind")
    [ "$kind" = mf ] && sample_rss
    printf '%s\t%s\t%s\tcold\t%s\t%s\t%s\n' "$dataset" "$kind" "$wl" "$run" "$secs" "$(cpu_delta "$c0" "$c1")" >>"$RAW"
  done
  # Warm: one untimed run, then the timed ones on the same daemon.
  mount_kind "$kind" "$dataset"
  M=$M time_cmd "M='$M'; $cmd" >/dev/null
  for run in $(seq "$BENCH_RUNS"); do
    c0=$(daemon_cpu "$kind")
    secs=$(time_cmd "M='$M'; $cmd")
    c1=$(daemon_cpu "$kind")
    [ "$kind" = mf ] && sample_rss
    printf '%s\t%s\t%s\twarm\t%s\t%s\t%s\n' "$dataset" "$kind" "$wl" "$run" "$secs" "$(cpu_delta "$c0" "$c1")" >>"$RAW"
  done
}

# fio randread 64 KiB over one file: prints MiB/s.
fio_bw() { # file direct
  fio --name=rr --readonly --filename="$1" --rw=randread --bs=64k --numjobs=4 --ioengine=libaio --iodepth=32 \
    --direct="$2" --time_based --runtime="$FIO_SECONDS" --group_reporting --output-format=terse --terse-version=3 \
    2>/dev/null | awk -F';' '{ printf "%.1f", $7 / 1024 }'
}

run_fio() { # kind file_name direct
  local kind=$1 name=$2 direct=$3 bw
  mount_kind "$kind" big
  bench_drop_caches
  for mode in cold warm; do
    c0=$(daemon_cpu "$kind")
    bw=$(fio_bw "$M/$name" "$direct")
    c1=$(daemon_cpu "$kind")
    [ "$kind" = mf ] && sample_rss
    # CPU per GiB read, so that runs of different throughput compare.
    cpu=$(awk -v c="$(cpu_delta "$c0" "$c1")" -v bw="$bw" -v s="$FIO_SECONDS" 'BEGIN { printf "%.2f", (bw > 0 ? c / (bw * s / 1024) : 0) }')
    printf 'big\t%s\tfio_%s_direct%s\t%s\t1\t%s\t%s\n' "$kind" "${name%%.*}" "$direct" "$mode" "$bw" "$cpu" >>"$RAW"
  done
}

rss_max=0
if [ "$REPORT_ONLY" != 1 ]; then
: >"$RAW"
# ---------------------------------------------------------------- correctness first
for dataset in arcade big; do
  src=$ARCADE_SRC; [ "$dataset" = big ] && src=$BIG_SRC
  for kind in mf squashfuse; do
    mount_kind "$kind" "$dataset"
    if ! diff -r "$src" "$M" >/dev/null; then bench_die "$kind mount of $dataset differs from the source"; fi
  done
done
unmount_all

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
bench_log "running (BENCH_RUNS=$BENCH_RUNS, load $LOAD_BEFORE)"
# The three file systems take turns on each workload, so a change in the machine's load hits all.
KINDS="native squashfuse mf"
for wl in ls_lR find tar; do for kind in $KINDS; do run_workload arcade "$kind" "$wl"; done; done
for wl in dd_compressible dd_random; do for kind in $KINDS; do run_workload big "$kind" "$wl"; done; done
for name in compressible1.txt random1.bin; do
  for direct in 1 0; do
    for kind in $KINDS; do run_fio "$kind" "$name" "$direct"; done
  done
done
unmount_all
echo "$rss_max" >"$W/rss_max_kib"
echo "$LOAD_BEFORE" >"$W/load_before"
cut -d' ' -f1-3 /proc/loadavg >"$W/load_after"
fi
rss_max=$(cat "$W/rss_max_kib")
LOAD_BEFORE=$(cat "$W/load_before")
LOAD_AFTER=$(cat "$W/load_after")

# ---------------------------------------------------------------- report
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
value() { # dataset kind workload mode [column: 6 = time or MiB/s, 7 = daemon CPU]
  awk -F'\t' -v d="$1" -v k="$2" -v w="$3" -v m="$4" -v c="${5:-6}" '$1 == d && $2 == k && $3 == w && $4 == m { print $c }' "$RAW" | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "nan" || b == "nan") print "n/a"; else printf "%.2f", a / b }'; }

{
  echo "## mount: \`mf mount\` vs squashfuse_ll vs native"
  echo
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, kernel $(uname -r); load average $LOAD_BEFORE before,"
  echo "$LOAD_AFTER after. Absolute numbers move with the machine's load; the three file systems took turns on"
  echo "each workload in one run, so the ratios are the comparison to read."
  echo
  echo "Command: \`BENCH_RUNS=$BENCH_RUNS BIG_MB=$BIG_MB FIO_SECONDS=$FIO_SECONDS bench/suites/mount.sh\`"
  echo
  echo "- mf: \`mf ${MF_THREADS:+--threads $MF_THREADS }mount --background\` (defaults: 4 threads, 64 MiB frame cache, read-ahead 1024 KiB), archive \`mf pack --level $LEVEL\` (256 KiB frames)."
  echo "- squashfuse: \`squashfuse_ll\` $(dpkg-query -W -f='${Version}' squashfuse) (single-threaded), image \`mksquashfs -comp zstd -Xcompression-level $LEVEL -b $SQFS_BLOCK\`."
  echo "- native: the source directory on $(df --output=fstype "$W" | tail -1 | tr -d ' ')."
  echo "- Datasets: arcade 3.3.3 wheel unzipped ($(find "$ARCADE_SRC" -type f | wc -l) files, $(awk -v b="$ARCADE_BYTES" 'BEGIN{printf "%.1f", b/1048576}') MiB);"
  echo "  four $BIG_MB MiB files (compressible1.txt: decimal text; compressible2.csv: CSV; random1.bin, random2.dat: /dev/urandom)."
  echo "- Archive sizes: arcade mf $(du -m "$W/arcade.mf" | cut -f1) MiB, sqfs $(du -m "$W/arcade.sqfs" | cut -f1) MiB; big mf $(du -m "$W/big.mf" | cut -f1) MiB, sqfs $(du -m "$W/big.sqfs" | cut -f1) MiB."
  echo "- Cold = \`sync; echo 3 > /proc/sys/vm/drop_caches\` and the daemon restarted before each run; warm = after one untimed run."
  echo "  Times are medians of $BENCH_RUNS runs (seconds, lower is better); fio is one ${FIO_SECONDS}s run (MiB/s, higher is better;"
  echo "  \`fio --rw=randread --bs=64k --numjobs=4 --ioengine=libaio --iodepth=32 --direct=D\`)."
  echo
  echo "| dataset | workload | mode | native | squashfuse | mf | mf vs squashfuse | mf vs native |"
  echo "|---|---|---|---:|---:|---:|---:|---:|"
  for row in arcade:ls_lR arcade:find arcade:tar big:dd_compressible big:dd_random; do
    d=${row%%:*}; wl=${row#*:}
    for mode in cold warm; do
      n=$(value "$d" native "$wl" "$mode"); s=$(value "$d" squashfuse "$wl" "$mode"); m=$(value "$d" mf "$wl" "$mode")
      echo "| $d | $wl | $mode | $n s | $s s | $m s | $(ratio "$s" "$m")x faster | $(ratio "$n" "$m")x |"
    done
  done
  for wl in fio_compressible1_direct1 fio_compressible1_direct0 fio_random1_direct1 fio_random1_direct0; do
    for mode in cold warm; do
      n=$(value big native "$wl" "$mode"); s=$(value big squashfuse "$wl" "$mode"); m=$(value big mf "$wl" "$mode")
      echo "| big | $wl | $mode | $n MiB/s | $s MiB/s | $m MiB/s | $(ratio "$m" "$s")x faster | $(ratio "$m" "$n")x |"
    done
  done
  echo
  echo "Daemon CPU (user + system seconds per run, median; for fio: CPU seconds per GiB read). Less"
  echo "sensitive to the machine's load than wall time:"
  echo
  echo "| dataset | workload | mode | squashfuse CPU | mf CPU | squashfuse / mf |"
  echo "|---|---|---|---:|---:|---:|"
  for row in arcade:ls_lR arcade:find arcade:tar big:dd_compressible big:dd_random big:fio_compressible1_direct1 big:fio_compressible1_direct0 big:fio_random1_direct1 big:fio_random1_direct0; do
    d=${row%%:*}; wl=${row#*:}
    for mode in cold warm; do
      s=$(value "$d" squashfuse "$wl" "$mode" 7); m=$(value "$d" mf "$wl" "$mode" 7)
      echo "| $d | $wl | $mode | $s | $m | $(ratio "$s" "$m") |"
    done
  done
  echo
  echo "mf daemon anonymous memory (largest RssAnon sampled after each workload): $((rss_max / 1024)) MiB"
  echo "(target: under the 64 MiB cache + 32 MiB = 96 MiB)."
  echo
  echo "Ratios: \"mf vs squashfuse\" > 1 means mf is faster; \"mf vs native\" is native time / mf time"
  echo "(or mf MiB/s / native MiB/s), so 0.80 means mf reaches 80% of native speed."
} >"$OUT"
bench_log "wrote $OUT"
cat "$OUT"

# Shared helpers for bench/run and bench/suites/*.sh. Source it; do not run it.
#
# Conventions for a suite script bench/suites/NAME.sh:
#   - it sources this file, calls the install helpers it needs (bench_need_apt, bench_need_pip,
#     bench_corpus_arcade, bench_build_mf), keeps its scratch files under "$BENCH_WORK/NAME",
#   - it writes its section of the report, Markdown starting with a "## " heading, to
#     "$BENCH_RESULTS/NAME.md"; bench/run puts the sections together into bench/RESULTS.md.
# Timings are wall-clock medians of $BENCH_RUNS runs (default 3); peak RSS comes from /usr/bin/time -v.

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
BENCH_WORK="$BENCH_DIR/work"
BENCH_RESULTS="$BENCH_DIR/results"
BENCH_VENV="$BENCH_DIR/.venv"
BENCH_RUNS="${BENCH_RUNS:-3}"
MF="$REPO_DIR/target/release/mf"
mkdir -p "$BENCH_WORK" "$BENCH_RESULTS"

bench_log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 1; }

_bench_apt_updated=0
# bench_need_apt PKG...: installs the Debian packages that are not installed yet (needs root).
bench_need_apt() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || bench_die "missing Debian packages ${missing[*]}; install them or run as root"
  bench_log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$_bench_apt_updated" = 0 ]; then
    apt-get update -qq >&2
    _bench_apt_updated=1
  fi
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

# bench_need_pip PKG[==VERSION]...: creates bench/.venv if needed and pip-installs what is missing.
bench_need_pip() {
  if [ ! -x "$BENCH_VENV/bin/python" ]; then
    bench_log "creating $BENCH_VENV"
    python3 -m venv "$BENCH_VENV"
  fi
  local spec name
  for spec in "$@"; do
    name="${spec%%[=<>]*}"
    "$BENCH_VENV/bin/pip" show -q "$name" >/dev/null 2>&1 && continue
    bench_log "pip install $spec"
    "$BENCH_VENV/bin/pip" install -q "$spec" >&2
  done
}

# bench_corpus_wheel NAME VERSION GLOB [PIP-ARGS...]: the wheel NAME==VERSION from PyPI (the file
# matching "NAME-VERSION-GLOB.whl"; PIP-ARGS pick a platform), unzipped and cached in
# bench/work/corpus/NAME-VERSION; prints its directory.
bench_corpus_wheel() {
  local name="$1" version="$2" glob="$3"
  shift 3
  local dir="$BENCH_WORK/corpus/$name-$version"
  local marker="$BENCH_WORK/corpus/.$name-$version.complete"
  if [ ! -f "$marker" ]; then
    bench_need_pip pip
    local dl="$BENCH_WORK/download"
    mkdir -p "$dl"
    bench_log "downloading $name==$version"
    "$BENCH_VENV/bin/pip" download -q --no-deps --only-binary :all: "$@" "$name==$version" -d "$dl" >&2
    local wheel
    # shellcheck disable=SC2086 # GLOB is a pattern
    wheel="$(ls "$dl"/$name-$version-$glob.whl 2>/dev/null | head -1)"
    [ -n "$wheel" ] || bench_die "pip downloaded no $glob wheel for $name==$version"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$BENCH_VENV/bin/python" -m zipfile -e "$wheel" "$dir"
    touch "$marker"
  fi
  echo "$dir"
}

# bench_corpus_arcade [VERSION]: the arcade wheel of VERSION (default 3.3.3), unzipped (media-heavy).
bench_corpus_arcade() {
  bench_corpus_wheel arcade "${1:-3.3.3}" '*'
}

# bench_corpus_duckdb [VERSION]: the duckdb wheel of VERSION (default 1.1.3; CPython 3.11, manylinux
# x86-64: one 62 MB native library), unzipped. The native-library tree of issue 13.
bench_corpus_duckdb() {
  bench_corpus_wheel duckdb "${1:-1.1.3}" 'cp311-*' --platform manylinux2014_x86_64 --python-version 3.11
}

# bench_archive_content ARCHIVE: path, size, mode and xxh3 of every entry, a line each: what an update
# must reproduce (an archive updated in place holds the release's content, not its bytes).
bench_archive_content() {
  "$MF" list --json "$1" | python3 -c 'import json, sys
for e in json.load(sys.stdin): print(e["path"], e["size"], e["mode"], e["xxh3"])'
}

# bench_free_port: a TCP port free on loopback now.
bench_free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# bench_start_nginx DIR ROOT LOG_FORMAT RATE RTT_MS [HTTP_LINE...]: nginx serving ROOT as static files
# on loopback (config, pid, error log, temp files and access.log, in LOG_FORMAT, under DIR), and
# bench/throttle.py in front of it emulating a link of RATE bytes/s and RTT_MS of round trip (0: none).
# Each HTTP_LINE is added to nginx's http block. Sets BENCH_NGINX_PORT (direct), BENCH_WAN_PORT
# (through the throttle), BENCH_THROTTLE_PID and NGINX_VERSION; bench_stop_nginx DIR stops both.
bench_start_nginx() {
  local dir="$1" root="$2" log_format="$3" rate="$4" rtt_ms="$5"
  shift 5
  mkdir -p "$dir/tmp"
  BENCH_NGINX_PORT="$(bench_free_port)"
  BENCH_WAN_PORT="$(bench_free_port)"
  [ "$BENCH_NGINX_PORT" != "$BENCH_WAN_PORT" ] || BENCH_WAN_PORT=$((BENCH_NGINX_PORT + 1))
  {
    echo "worker_processes 1;"
    echo "pid $dir/nginx.pid;"
    echo "error_log $dir/error.log warn;"
    # Workers would run as nobody and might not read the work tree.
    [ "$(id -u)" -eq 0 ] && echo "user root;"
    echo "events { worker_connections 256; }"
    echo "http {"
    echo "  default_type application/octet-stream;"
    local line d
    for line in "$@"; do echo "  $line"; done
    echo "  sendfile on;"
    echo "  log_format bench '$log_format';"
    for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $dir/tmp/$d;"; done
    echo "  access_log $dir/access.log bench;"
    echo "  server { listen 127.0.0.1:$BENCH_NGINX_PORT; root $root; }"
    echo "}"
  } >"$dir/nginx.conf"
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" || bench_die "nginx did not start (see $dir/error.log)"
  python3 "$BENCH_DIR/throttle.py" "$BENCH_WAN_PORT" "$BENCH_NGINX_PORT" "$rate" "$rtt_ms" >"$dir/throttle.log" 2>&1 &
  BENCH_THROTTLE_PID=$!
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$BENCH_NGINX_PORT/" && curl -s -o /dev/null "http://127.0.0.1:$BENCH_WAN_PORT/" && break
    sleep 0.1
  done
  NGINX_VERSION="$(nginx -v 2>&1 | sed 's|.*/||')"
}

# bench_stop_nginx DIR: stops what bench_start_nginx DIR started (safe to call twice, or before it).
bench_stop_nginx() {
  if [ -n "${BENCH_THROTTLE_PID:-}" ]; then
    kill "$BENCH_THROTTLE_PID" 2>/dev/null || true
    wait "$BENCH_THROTTLE_PID" 2>/dev/null || true
    BENCH_THROTTLE_PID=""
  fi
  if [ -f "$1/nginx.pid" ]; then
    kill -QUIT "$(cat "$1/nginx.pid")" 2>/dev/null || true
    rm -f "$1/nginx.pid"
  fi
}

# bench_build_mf: builds the mf binary in release mode ($MF).
bench_build_mf() {
  [ "${BENCH_MF_BUILT:-0}" = 1 ] && [ -x "$MF" ] && return 0
  bench_log "cargo build --release -p mf-cli"
  (cd "$REPO_DIR" && cargo build --release --locked -q -p mf-cli) >&2
  [ -x "$MF" ] || bench_die "no $MF after the build"
}

# bench_drop_caches: flushes dirty pages and, when allowed (root), drops the page cache.
bench_drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# bench_run_once OUT_PREFIX CMD...: runs CMD once under /usr/bin/time -v, appending the wall time
# (seconds), CPU time (user+sys seconds) and peak RSS (KiB; for a pipeline run through sh -c, the
# largest process) to OUT_PREFIX.{wall,cpu,rss}. Output of CMD goes to OUT_PREFIX.log.
# Set BENCH_COLD=1 to drop the page cache before each timed command. With BENCH_STDOUT=FILE, CMD's
# standard output goes to FILE instead (replaced each run: e.g. a --json report to read afterwards).
bench_run_once() {
  local prefix="$1"
  shift
  [ "${BENCH_COLD:-0}" = 1 ] && bench_drop_caches
  local tv="$prefix.timev" start end out="${BENCH_STDOUT:-$prefix.log}"
  [ -n "${BENCH_STDOUT:-}" ] && : >"$out"
  start=$EPOCHREALTIME
  if ! /usr/bin/time -v -o "$tv" "$@" >>"$out" 2>>"$prefix.log"; then
    end=$EPOCHREALTIME
    bench_log "command failed: $* (see $prefix.log${BENCH_STDOUT:+, $out})"
    tail -5 "$prefix.log" >&2
    [ -n "${BENCH_STDOUT:-}" ] && tail -5 "$out" >&2
    return 1
  fi
  end=$EPOCHREALTIME
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.4f\n", e - s }' >>"$prefix.wall"
  awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f\n", u + s }' "$tv" >>"$prefix.cpu"
  awk -F': ' '/Maximum resident set size/ { print $2 }' "$tv" >>"$prefix.rss"
}

# bench_median FILE: median of the numbers in FILE (one a line).
bench_median() {
  sort -g "$1" | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bench_max FILE: largest number in FILE.
bench_max() {
  sort -g "$1" | tail -1
}

# bench_reset PREFIX: forgets earlier measurements under PREFIX.
bench_reset() {
  rm -f "$1".wall "$1".cpu "$1".rss "$1".log "$1".timev
}

# bench_load: the load averages, for the report.
bench_load() {
  cut -d' ' -f1-3 /proc/loadavg
}

# Formatting helpers for the Markdown tables.
bench_fmt_secs() { awk -v v="$1" 'BEGIN { printf (v < 10 ? "%.2f s" : "%.1f s"), v }'; }
bench_fmt_mib() { awk -v v="$1" 'BEGIN { printf "%.2f MiB", v / 1048576 }'; }
bench_fmt_kib_as_mib() { awk -v v="$1" 'BEGIN { printf "%.0f MiB", v / 1024 }'; }
bench_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
bench_ratio3() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.3f", a / b }'; }

#!/usr/bin/env bash
# Suite "lazy": `mf mount --repo` (an archive mounted straight from its release repository, fetched on
# demand) against downloading the full archive first, over an emulated WAN link: nginx on loopback behind
# bench/throttle.py giving BENCH_LAZY_RTT_MS of round-trip time (default 50) and BENCH_LAZY_RATE bytes/s
# from server to client (default 12.5e6: 100 Mbit/s) shared by all connections. Issue 16's targets:
#   - mount to first byte of a small file: at most 4 round trips plus transfer time;
#   - reading a start-up trace (5% of the files) fetches at most 10% of the archive's bytes plus its index;
#   - a sequential read of a large entry reaches at least 80% of the link's bandwidth;
#   - the start-up trace is fully read in at most 0.25x the time of downloading the full archive first;
#   - once filled, reads are as fast as a local `mf mount` of the same archive.
# Corpora: the arcade 3.3.3 wheel (real, asset-heavy: 1,356 files, 89 MB) and a generated game release
# (bench/gen_game.py --scale 0.25: models, scripts, textures, audio, a 50 MiB video, three paks).
#
# The start-up trace: the files whose SHA-256 of their path is smallest, 5% of the files by count, among
# files of at most 16 MiB (a start-up reads menus, scripts and first-level assets, not whole level paks).
# They are read once through a local `mf mount --record-trace`, which writes the trace; `mf pack
# --order-from TRACE` makes the "ordered" archive, whose traced entries come first. Both archives (default
# order and ordered) are published with `mf release add --sign` into their own repository.
# Bytes are nginx's $body_bytes_sent summed over a measurement's requests. Writes bench/results/lazy.md.
source "$(dirname "$0")/../lib.sh"
bench_need_apt nginx curl time fuse3
bench_build_mf

W="$BENCH_WORK/lazy"
rm -rf "$W"
mkdir -p "$W"
RTT_MS="${BENCH_LAZY_RTT_MS:-50}"
RATE="${BENCH_LAZY_RATE:-12500000}"
LOAD_START="$(bench_load)"

# ---- corpora --------------------------------------------------------------------------------------
ARCADE="$(bench_corpus_arcade)"
GAME_DIR="$BENCH_WORK/corpus/game-0.25"
if [ ! -f "$GAME_DIR/.complete" ]; then
  bench_log "generating the game corpus (gen_game.py --scale 0.25)"
  rm -rf "$GAME_DIR"
  python3 "$BENCH_DIR/gen_game.py" "$GAME_DIR" --scale 0.25 >&2
  touch "$GAME_DIR/.complete"
fi
CORPORA=(arcade game)
declare -A SOURCE=([arcade]="$ARCADE" [game]="$GAME_DIR/v1")

# ---- nginx behind the WAN proxy -------------------------------------------------------------------
SERVE="$W/serve"
NG="$W/nginx"
mkdir -p "$SERVE"
MOUNTS=()
cleanup() {
  local m
  for m in "${MOUNTS[@]}"; do mountpoint -q "$m" && { "$MF" umount "$m" || fusermount3 -u -z "$m"; } 2>/dev/null; done
  bench_stop_nginx "$NG"
  return 0
}
trap cleanup EXIT
bench_start_nginx "$NG" "$SERVE" '$request_uri $status $body_bytes_sent "$http_range"' "$RATE" "$RTT_MS" \
  "keepalive_timeout 60s;" "keepalive_requests 100000;"
PORT_NGINX="$BENCH_NGINX_PORT"
PORT_WAN="$BENCH_WAN_PORT"
wan_url() { echo "http://127.0.0.1:$PORT_WAN/$1"; }
log_mark() { wc -l <"$NG/access.log"; }
# log_since MARK: "BYTES REQUESTS" of the access log lines after MARK.
log_since() { tail -n +"$(($1 + 1))" "$NG/access.log" | awk '{ b += $3; n++ } END { printf "%d %d\n", b, n }'; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.4f\n", e - s }'; }

"$MF" keygen "$W/publisher" >/dev/null
PUB="$W/publisher.pub"

# ---- per corpus: archives, trace, repositories ----------------------------------------------------
declare -A ARCHIVE_SIZE INDEX_BYTES TRACE_FILES TRACE_BYTES FULL_PATH SMALL LARGE LARGE_SIZE FILES
for c in "${CORPORA[@]}"; do
  src="${SOURCE[$c]}"
  bench_log "[$c] packing and recording the start-up trace"
  "$MF" pack "$src" -o "$W/$c.mf" >/dev/null
  # The start-up set, as paths relative to the corpus (deterministic: smallest SHA-256 of the path).
  python3 - "$src" "$W/$c.startup" <<'PY'
import hashlib, math, os, sys
root, out = sys.argv[1], sys.argv[2]
files = []
for base, dirs, names in os.walk(root):
    for name in names:
        path = os.path.join(base, name)
        if os.path.isfile(path) and not os.path.islink(path):
            files.append((os.path.relpath(path, root), os.path.getsize(path)))
want = math.ceil(len(files) * 0.05)
small = sorted((f for f in files if f[1] <= 16 << 20), key=lambda f: hashlib.sha256(f[0].encode()).digest())
with open(out, "w") as f:
    for rel, _ in small[:want]:
        f.write(rel + "\n")
PY
  FILES[$c]="$(find "$src" -type f | wc -l)"
  TRACE_FILES[$c]="$(wc -l <"$W/$c.startup")"
  TRACE_BYTES[$c]="$(cd "$src" && tr '\n' '\0' <"$W/$c.startup" | xargs -0 stat -c %s | awk '{ s += $1 } END { print s }')"
  mnt="$W/mnt-$c-local"
  mkdir -p "$mnt"
  MOUNTS+=("$mnt")
  "$MF" mount --background --record-trace "$W/$c.trace" "$W/$c.mf" "$mnt"
  (cd "$mnt" && tr '\n' '\0' <"$W/$c.startup" | xargs -0 cat >/dev/null)
  "$MF" umount "$mnt"
  "$MF" pack "$src" --order-from "$W/$c.trace" -o "$W/$c-ordered.mf" >/dev/null
  for kind in default ordered; do
    archive="$W/$c.mf"
    [ "$kind" = ordered ] && archive="$W/$c-ordered.mf"
    "$MF" release add "$SERVE/$c-$kind" 1.0.0 "$archive" --sign "$W/publisher.key" >/dev/null
  done
  ARCHIVE_SIZE[$c]="$(stat -c %s "$W/$c-ordered.mf")"
  INDEX_BYTES[$c]="$("$MF" info --json "$W/$c-ordered.mf" | python3 -c 'import json, sys; print(json.load(sys.stdin)["index_size"])')"
  FULL_PATH[$c]="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["signed"]["versions"][-1]["full"]["path"])' "$SERVE/$c-ordered/manifest.json")"
  # A small file to read first (the trace's first), and the largest entry for the sequential read.
  SMALL[$c]="$(head -1 "$W/$c.startup")"
  LARGE[$c]="$(cd "$src" && find . -type f -printf '%s %P\n' | sort -n | tail -1 | cut -d' ' -f2-)"
  LARGE_SIZE[$c]="$(stat -c %s "$src/${LARGE[$c]}")"
done

# mount_repo NAME REPO CACHE [ARGS...]: mounts REPO lazily at $W/mnt-NAME (background daemon).
mount_repo() {
  local name="$1" repo="$2" cache="$3"
  shift 3
  local mnt="$W/mnt-$name"
  mkdir -p "$mnt" "$cache"
  MOUNTS+=("$mnt")
  "$MF" mount --background --repo "$(wan_url "$repo")" --key "$PUB" --cache "$cache" "$@" "$mnt"
  echo "$mnt"
}
umount_repo() { "$MF" umount "$1"; }

# read_in_order MOUNT LIST: reads every file of LIST (paths, one a line) under MOUNT whole, in order.
read_in_order() { (cd "$1" && tr '\n' '\0' <"$2" | xargs -0 cat >/dev/null); }

declare -A SEQ_BYTES FB_TIME FB_BYTES FB_REQ TR_BYTES TR_REQ TR_TIME TRD_BYTES SEQ_TIME FULL_TIME TRF_TIME FILLED_TIME LOCAL_TIME
runs="$BENCH_RUNS"
for c in "${CORPORA[@]}"; do
  bench_log "[$c] mount to first byte, $runs runs"
  : >"$W/fb.t"; : >"$W/fb.b"; : >"$W/fb.n"
  for r in $(seq "$runs"); do
    cache="$W/cache-fb-$c-$r"
    mark="$(log_mark)"
    start="$(now)"
    mnt="$(mount_repo "fb-$c" "$c-ordered" "$cache" --no-fill)"
    head -c 1 "$mnt/${SMALL[$c]}" >/dev/null
    end="$(now)"
    umount_repo "$mnt"
    elapsed "$start" "$end" >>"$W/fb.t"
    read -r bytes reqs < <(log_since "$mark")
    echo "$bytes" >>"$W/fb.b"
    echo "$reqs" >>"$W/fb.n"
    rm -rf "$cache"
  done
  FB_TIME[$c]="$(bench_median "$W/fb.t")"
  FB_BYTES[$c]="$(bench_median "$W/fb.b")"
  FB_REQ[$c]="$(bench_median "$W/fb.n")"

  bench_log "[$c] start-up trace without fill (bytes fetched), default and ordered archives"
  for kind in ordered default; do
    cache="$W/cache-tr-$c-$kind"
    mark="$(log_mark)"
    start="$(now)"
    mnt="$(mount_repo "tr-$c" "$c-$kind" "$cache" --no-fill)"
    read_in_order "$mnt" "$W/$c.startup"
    end="$(now)"
    umount_repo "$mnt"
    read -r bytes reqs < <(log_since "$mark")
    if [ "$kind" = ordered ]; then
      TR_BYTES[$c]="$bytes"; TR_REQ[$c]="$reqs"; TR_TIME[$c]="$(elapsed "$start" "$end")"
    else
      TRD_BYTES[$c]="$bytes"
    fi
    rm -rf "$cache"
  done

  bench_log "[$c] sequential read of ${LARGE[$c]} ($(bench_fmt_mib "${LARGE_SIZE[$c]}"))"
  cache="$W/cache-seq-$c"
  mnt="$(mount_repo "seq-$c" "$c-ordered" "$cache" --no-fill)"
  mark="$(log_mark)"
  start="$(now)"
  cat "$mnt/${LARGE[$c]}" >/dev/null
  end="$(now)"
  umount_repo "$mnt"
  SEQ_TIME[$c]="$(elapsed "$start" "$end")"
  read -r SEQ_BYTES[$c] _ < <(log_since "$mark")
  rm -rf "$cache"

  bench_log "[$c] downloading the full archive first (curl), $runs runs"
  : >"$W/full.t"
  for r in $(seq "$runs"); do
    start="$(now)"
    curl -sS -f -o "$W/full-$c.mf" "$(wan_url "$c-ordered/${FULL_PATH[$c]}")"
    end="$(now)"
    elapsed "$start" "$end" >>"$W/full.t"
    cmp -s "$W/full-$c.mf" "$W/$c-ordered.mf" || bench_die "curl fetched a different archive"
  done
  FULL_TIME[$c]="$(bench_median "$W/full.t")"
  rm -f "$W/full-$c.mf"

  bench_log "[$c] start-up trace with the background fill on, then waiting for the fill"
  cache="$W/cache-fill-$c"
  start="$(now)"
  mnt="$(mount_repo "fill-$c" "$c-ordered" "$cache")"
  read_in_order "$mnt" "$W/$c.startup"
  end="$(now)"
  TRF_TIME[$c]="$(elapsed "$start" "$end")"
  sha="$(sha256sum "$W/$c-ordered.mf" | cut -c1-64)"
  for _ in $(seq 1200); do
    [ -f "$cache/$sha.mf" ] && break
    sleep 0.5
  done
  [ -f "$cache/$sha.mf" ] || bench_die "the fill of $c did not complete within 10 minutes"
  [ "$(sha256sum "$cache/$sha.mf" | cut -c1-64)" = "$sha" ] || bench_die "the filled archive of $c differs"

  bench_log "[$c] reading every file once filled vs a local mf mount (cold page cache), $runs runs"
  local_mnt="$W/mnt-$c-local"
  "$MF" mount --background "$W/$c-ordered.mf" "$local_mnt"
  (cd "${SOURCE[$c]}" && find . -type f -printf '%P\n' | sort) >"$W/$c.all"
  : >"$W/filled.t"; : >"$W/local.t"
  for r in $(seq "$runs"); do
    for which in filled local; do
      target="$mnt"
      [ "$which" = local ] && target="$local_mnt"
      bench_drop_caches
      start="$(now)"
      read_in_order "$target" "$W/$c.all"
      end="$(now)"
      elapsed "$start" "$end" >>"$W/$which.t"
    done
  done
  FILLED_TIME[$c]="$(bench_median "$W/filled.t")"
  LOCAL_TIME[$c]="$(bench_median "$W/local.t")"
  umount_repo "$mnt"
  "$MF" umount "$local_mnt"
  rm -rf "$cache"
done
LOAD_END="$(bench_load)"

# ---- report ---------------------------------------------------------------------------------------
rtt_s="$(awk -v r="$RTT_MS" 'BEGIN { print r / 1000 }')"
mbit="$(awk -v r="$RATE" 'BEGIN { printf "%.0f", r * 8 / 1e6 }')"
{
  echo "## lazy: \`mf mount --repo\` (fetched on demand) vs downloading the archive first"
  echo
  echo "_Measured $(date -u '+%Y-%m-%d %H:%M UTC') at mf commit ${BENCH_COMMIT:-$(git -C "$REPO_DIR" rev-parse --short HEAD)}; load average $LOAD_START at the start, $LOAD_END at the end._"
  echo
  echo "Reproduce with \`bench/run lazy\` (as root: installs nginx, curl and fuse3, downloads the arcade 3.3.3 wheel,"
  echo "generates the game corpus with bench/gen_game.py --scale 0.25). nginx $NGINX_VERSION serves each repository on loopback"
  echo "behind bench/throttle.py emulating a link of ${RTT_MS} ms round-trip time (each direction delayed by half, and one"
  echo "more round trip before a new connection's first request: the TCP handshake) and $mbit Mbit/s from server to client"
  echo "shared by all connections. Each repository holds one version published with \`mf release add --sign\`; mounts"
  echo "are \`mf mount --background --repo URL --key publisher.pub --cache NEW_DIR [--no-fill] MOUNTPOINT\`. Bytes are"
  echo "nginx's \`\$body_bytes_sent\`. Start-up trace: 5% of the files by count (smallest SHA-256 of the path among"
  echo "files ≤ 16 MiB), recorded with \`mf mount --record-trace\` and laid first with \`mf pack --order-from\`; read"
  echo "whole, in trace order, with \`cat\`. Medians of $runs runs where a count is given; single runs otherwise."
  echo
  echo "| corpus | archive | files | start-up trace | mount → first byte | requests | bytes | round trips (time − transfer) ÷ RTT | target ≤ 4 |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for c in "${CORPORA[@]}"; do
    transfer="$(awk -v b="${FB_BYTES[$c]}" -v r="$RATE" 'BEGIN { print b / r }')"
    trips="$(awk -v t="${FB_TIME[$c]}" -v x="$transfer" -v r="$rtt_s" 'BEGIN { printf "%.1f", (t - x) / r }')"
    met="$(awk -v t="$trips" 'BEGIN { print (t <= 4 ? "met" : "NOT met") }')"
    echo "| $c | $(bench_fmt_mib "${ARCHIVE_SIZE[$c]}") | ${FILES[$c]} | ${TRACE_FILES[$c]} files, $(bench_fmt_mib "${TRACE_BYTES[$c]}") | $(bench_fmt_secs "${FB_TIME[$c]}") | ${FB_REQ[$c]} | $(bench_fmt_mib "${FB_BYTES[$c]}") | $trips | $met |"
  done
  echo
  echo "| corpus | trace bytes fetched, ordered archive (no fill) | of archive | bound: 10% of archive + index | target | same, default order | requests (ordered) |"
  echo "|---|---|---|---|---|---|---|"
  for c in "${CORPORA[@]}"; do
    bound="$(awk -v a="${ARCHIVE_SIZE[$c]}" -v i="${INDEX_BYTES[$c]}" 'BEGIN { printf "%.0f", a * 0.10 + i }')"
    share="$(awk -v b="${TR_BYTES[$c]}" -v a="${ARCHIVE_SIZE[$c]}" 'BEGIN { printf "%.1f%%", 100 * b / a }')"
    dshare="$(awk -v b="${TRD_BYTES[$c]}" -v a="${ARCHIVE_SIZE[$c]}" 'BEGIN { printf "%.1f%%", 100 * b / a }')"
    met="$(awk -v b="${TR_BYTES[$c]}" -v n="$bound" 'BEGIN { print (b <= n ? "met" : "NOT met") }')"
    echo "| $c | $(bench_fmt_mib "${TR_BYTES[$c]}") | $share | $(bench_fmt_mib "$bound") | $met | $(bench_fmt_mib "${TRD_BYTES[$c]}") ($dshare) | ${TR_REQ[$c]} |"
  done
  echo
  echo "The link's use is the bytes fetched (nginx) over the time of the read; a compressed entry's content arrives"
  echo "faster than that (its content rate is given too)."
  echo
  echo "| corpus | sequential read (no fill) | content | fetched | link use | of the link | target ≥ 80% | content rate |"
  echo "|---|---|---|---|---|---|---|---|"
  for c in "${CORPORA[@]}"; do
    rate="$(awk -v s="${SEQ_BYTES[$c]}" -v t="${SEQ_TIME[$c]}" 'BEGIN { print s / t }')"
    content="$(awk -v s="${LARGE_SIZE[$c]}" -v t="${SEQ_TIME[$c]}" 'BEGIN { printf "%.1f Mbit/s", s / t * 8 / 1e6 }')"
    share="$(awk -v x="$rate" -v r="$RATE" 'BEGIN { printf "%.0f%%", 100 * x / r }')"
    met="$(awk -v x="$rate" -v r="$RATE" 'BEGIN { print (x >= 0.8 * r ? "met" : "NOT met") }')"
    echo "| $c | \`${LARGE[$c]}\` in $(bench_fmt_secs "${SEQ_TIME[$c]}") | $(bench_fmt_mib "${LARGE_SIZE[$c]}") | $(bench_fmt_mib "${SEQ_BYTES[$c]}") | $(awk -v x="$rate" 'BEGIN { printf "%.1f Mbit/s", x * 8 / 1e6 }') | $share | $met | $content |"
  done
  echo
  echo "| corpus | start-up trace read, mounted with fill | download the full archive first (curl) | ratio | target ≤ 0.25 | trace alone, no fill |"
  echo "|---|---|---|---|---|---|"
  for c in "${CORPORA[@]}"; do
    ratio="$(bench_ratio "${TRF_TIME[$c]}" "${FULL_TIME[$c]}")"
    met="$(awk -v x="$ratio" 'BEGIN { print (x <= 0.25 ? "met" : "NOT met") }')"
    echo "| $c | $(bench_fmt_secs "${TRF_TIME[$c]}") | $(bench_fmt_secs "${FULL_TIME[$c]}") | $ratio | $met | $(bench_fmt_secs "${TR_TIME[$c]}") |"
  done
  echo
  echo "| corpus | every file read once filled (cold page cache) | local \`mf mount\` of the same archive | ratio | target ≤ 1 (within noise) |"
  echo "|---|---|---|---|---|"
  for c in "${CORPORA[@]}"; do
    ratio="$(bench_ratio "${FILLED_TIME[$c]}" "${LOCAL_TIME[$c]}")"
    met="$(awk -v x="$ratio" 'BEGIN { print (x <= 1.10 ? "met" : "NOT met") }')"
    echo "| $c | $(bench_fmt_secs "${FILLED_TIME[$c]}") | $(bench_fmt_secs "${LOCAL_TIME[$c]}") | $ratio | $met |"
  done
  echo
} >"$BENCH_RESULTS/lazy.md"
bench_log "wrote $BENCH_RESULTS/lazy.md"

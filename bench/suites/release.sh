#!/usr/bin/env bash
# Suite "release": publishing consecutive arcade releases with `mf release add --sign` and updating
# from each older release to the newest with `mf update`, served by nginx on loopback, against
# downloading the newest full archive (curl) — for an archive, and for a plain install folder (against
# curl + `mf extract`). Writes bench/results/release.md.
#
# Two repositories are published from the same releases: "direct" (--patch-from-last covering every
# older release, so each has a direct patch to the newest) and "default" (the default --patch-from-last,
# so the oldest releases reach the newest through a chain of patches or the full download).
# Bytes are what nginx sent ($body_bytes_sent in its access log, summed over the requests of one
# command) and what `mf update --json` reports. Times are wall-clock medians of the rounds; before each
# timed update the old release is reinstalled and the client's state (downloads cache) removed, so every
# run downloads everything it needs. The commands are interleaved round by round.
# Two routes to nginx: direct (loopback, where the network costs almost nothing) and through
# bench/throttle.py, a proxy whose server-to-client bytes share one token bucket of BENCH_RELEASE_RATE
# bytes/s (default 12,500,000: a 100 Mbit/s link).
# Knobs: BENCH_RUNS (rounds; at least 5 unless BENCH_RELEASE_RUNS says otherwise), BENCH_RELEASE_VERSIONS
# (the releases, oldest first), BENCH_RELEASE_RATE (bytes/s), BENCH_RELEASE_PROVENANCE (a sentence put at
# the top of the report, saying where the measured mf came from when it is not this checkout).

source "$(dirname "$0")/../lib.sh"

MEASURED_COMMIT="${BENCH_COMMIT:-$(git -C "$REPO_DIR" rev-parse --short HEAD)$(git -C "$REPO_DIR" diff --quiet HEAD -- . ':!bench' || echo ' (with uncommitted changes)')}"
bench_need_apt nginx curl time
bench_build_mf
"$MF" release add --help >/dev/null 2>&1 || bench_die "$MF has no 'release add' command"
"$MF" update --help >/dev/null 2>&1 || bench_die "$MF has no 'update' command"

read -r -a VERSIONS <<<"${BENCH_RELEASE_VERSIONS:-3.1.0 3.2.0 3.3.0 3.3.1 3.3.2 3.3.3}"
[ ${#VERSIONS[@]} -ge 2 ] || bench_die "BENCH_RELEASE_VERSIONS needs at least two releases"
NEWEST="${VERSIONS[-1]}"
OLDER=("${VERSIONS[@]:0:${#VERSIONS[@]}-1}")
RATE="${BENCH_RELEASE_RATE:-12500000}"
[[ "$RATE" =~ ^[0-9]+$ ]] || bench_die "BENCH_RELEASE_RATE must be bytes per second, e.g. 12500000"
RUNS="${BENCH_RELEASE_RUNS:-$((BENCH_RUNS > 5 ? BENCH_RUNS : 5))}"
declare -A CORPUS
for v in "${VERSIONS[@]}"; do
  CORPUS[$v]="$(bench_corpus_arcade "$v")"
done

W="$BENCH_WORK/release"
T="$W/times"
SERVE="$W/serve"   # nginx's root: one directory per repository
NG="$W/nginx"
rm -rf "$W"
mkdir -p "$T" "$SERVE" "$W/install" "$W/pristine"
LOAD_START="$(bench_load)"
REPOS=(direct default)
declare -A PATCH_ARGS=([direct]="--patch-from-last $((${#VERSIONS[@]} - 1))" [default]="")

# ---- nginx on loopback ----------------------------------------------------------------------------
trap 'bench_stop_nginx "$NG"' EXIT
bench_start_nginx "$NG" "$SERVE" '$server_port $request_uri $status $body_bytes_sent $bytes_sent "$http_range"' "$RATE" 0 \
  "types { application/json json; }" "keepalive_timeout 30s;"
PORT_FAST="$BENCH_NGINX_PORT"
PORT_SLOW="$BENCH_WAN_PORT"
url_of() { # SPEED REPO
  if [ "$1" = fast ]; then echo "http://127.0.0.1:$PORT_FAST/$2"; else echo "http://127.0.0.1:$PORT_SLOW/$2"; fi
}

# Bytes of one command: remember the access log's length before, sum $body_bytes_sent after.
log_mark() { wc -l <"$NG/access.log"; }
log_since() { tail -n "+$(($1 + 1))" "$NG/access.log"; }
# log_account MARK PREFIX: appends the body bytes and the request count since MARK to PREFIX.{bytes,reqs}
# and the requested paths (one line per command) to PREFIX.paths.
log_account() {
  local lines
  lines="$(log_since "$1")"
  awk '{ s += $4 } END { print s + 0 }' <<<"$lines" >>"$2.bytes"
  awk 'END { print NR }' <<<"$lines" >>"$2.reqs"
  awk '{ printf "%s%s", sep, $2; sep = " " } END { print "" }' <<<"$lines" >>"$2.paths"
}

# timed PREFIX CMD...: bench_run_once, with stdout (the --json report) in PREFIX.out, replaced each run.
timed() { BENCH_STDOUT="$1.out" bench_run_once "$@"; }

# ---- manifest look-ups ----------------------------------------------------------------------------
# manifest_query REPO EXPR: evaluates a Python expression over the manifest's signed part `m`
# (with `by` = versions by name).
manifest_query() {
  python3 - "$SERVE/$1/manifest.json" "$2" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["signed"]
by = {v["version"]: v for v in m["versions"]}
print(eval(sys.argv[2]))
PY
}
full_path() { manifest_query "$1" "by['$2']['full']['path']"; }
full_sha() { manifest_query "$1" "by['$2']['full']['sha256']"; }
full_size() { manifest_query "$1" "by['$2']['full']['size']"; }
# describe_paths REPO "PATH...": the objects fetched, as "a→b" for patches, "full b" for full archives and
# "N file tables (bytes)" for file tables (the manifest is left out).
describe_paths() {
  python3 - "$SERVE/$1/manifest.json" "$2" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["signed"]
names, tables = {}, {}
for v in m["versions"]:
    names[v["full"]["path"]] = "full " + v["version"]
    tables[v["files"]["path"]] = v["files"]["size"]
    for p in v.get("patches", []):
        names[p["path"]] = f'{p["from"]}→{v["version"]}'
paths = [q.split("/", 2)[-1] for q in sys.argv[2].split()]
pieces = []
fetched_tables = [tables[p] for p in paths if p in tables]
if fetched_tables:
    pieces.append(f"{len(fetched_tables)} file table{'s' if len(fetched_tables) > 1 else ''} ({sum(fetched_tables):,} B)")
pieces += [names[p] for p in paths if p in names]
print(", ".join(pieces) if pieces else "-")
PY
}
# json_field FILE KEY: a top-level field of an `mf update --json` report ("?" when absent, "-" when null).
json_field() {
  python3 - "$1" "$2" <<'PY'
import json, sys
try:
    doc = json.load(open(sys.argv[1]))
except ValueError:
    doc = {}
value = doc.get(sys.argv[2], "?") if isinstance(doc, dict) else "?"
print("-" if value is None else value)
PY
}
# record_fallback PREFIX: counts a run whose report says the patch route failed (field fell_back).
record_fallback() {
  case "$(json_field "$1.out" fell_back)" in
    - | "?") ;;
    *) echo 1 >>"$1.fell_back" ;;
  esac
}
# json_route FILE: the route of an `mf update --json` report, as "a→b, full c".
json_route() {
  python3 - "$1" <<'PY'
import json, sys
route = json.load(open(sys.argv[1])).get("route") or []
print(", ".join(f'{p["from"]}→{p["to"]}' if p.get("from") else f'full {p["to"]}' for p in route) or "-")
PY
}

# ---- publishing -----------------------------------------------------------------------------------
"$MF" keygen "$W/publisher" >/dev/null
KEY="$W/publisher.key"
PUB="$W/publisher.pub"
[ -f "$KEY" ] && [ -f "$PUB" ] || bench_die "mf keygen did not write $KEY and $PUB"
for repo in "${REPOS[@]}"; do
  for v in "${VERSIONS[@]}"; do
    bench_log "publishing $v into $repo (load $(bench_load))"
    # shellcheck disable=SC2086
    timed "$T/publish.$repo.$v" "$MF" release add "$SERVE/$repo" "$v" "${CORPUS[$v]}" --sign "$KEY" ${PATCH_ARGS[$repo]} --json
    cp "$T/publish.$repo.$v.out" "$T/publish.$repo.$v.json"
    du -sb --apparent-size "$SERVE/$repo" | cut -f1 >"$T/publish.$repo.$v.size"
  done
done
NEWEST_SHA="$(full_sha direct "$NEWEST")"
NEWEST_SIZE="$(full_size direct "$NEWEST")"
[ "$NEWEST_SHA" = "$(full_sha default "$NEWEST")" ] || bench_die "the two repositories hold different archives of $NEWEST"
NEWEST_PATH="$(full_path direct "$NEWEST")"
bench_archive_content "$SERVE/direct/$NEWEST_PATH" >"$W/newest.content"

# Folder mode is measured when this mf can do it (a --check into an empty folder succeeds); otherwise
# the report says why not.
FOLDER_MODE=1
FOLDER_PROBLEM=""
mkdir -p "$W/probe"
if ! FOLDER_PROBLEM="$("$MF" update --repo "$(url_of fast direct)" --key "$PUB" --check --json --dir "$W/probe" 2>&1 >/dev/null)"; then
  FOLDER_MODE=0
  bench_log "folder mode not measured: $FOLDER_PROBLEM"
fi
rm -rf "$W/probe"

# Installed states: each older release's archive as the repository holds it, and its extraction.
for v in "${VERSIONS[@]}"; do
  cp "$SERVE/direct/$(full_path direct "$v")" "$W/pristine/$v.mf"
  if [ "$FOLDER_MODE" = 1 ]; then "$MF" extract "$W/pristine/$v.mf" -C "$W/pristine/$v" >/dev/null; fi
done
INSTALL="$W/install"
install_archive() { rm -rf "$INSTALL/a"; mkdir -p "$INSTALL/a"; [ "$1" = none ] || cp "$W/pristine/$1.mf" "$INSTALL/a/app.mf"; }
install_folder() { rm -rf "$INSTALL/d"; if [ "$1" = none ]; then mkdir -p "$INSTALL/d"; else cp -a "$W/pristine/$1" "$INSTALL/d"; fi; }
check_archive() {
  cmp -s <(bench_archive_content "$INSTALL/a/app.mf") "$W/newest.content" || bench_die "updated archive does not hold $NEWEST ($1)"
}
check_folder() {
  diff -r -q --exclude=.mf-update "$INSTALL/d" "$W/pristine/$NEWEST" >/dev/null || bench_die "updated folder differs from $NEWEST ($1)"
}

# One measured update: reinstall (untimed), update (timed), account bytes, check the result.
update_archive() { # SPEED REPO FROM
  local p="$T/update.archive.$1.$2.$3" mark
  install_archive "$3"
  mark="$(log_mark)"
  timed "$p" "$MF" update --repo "$(url_of "$1" "$2")" --key "$PUB" --json "$INSTALL/a/app.mf"
  log_account "$mark" "$p"
  json_field "$p.out" fetched_bytes >>"$p.json_bytes"
  record_fallback "$p"
  check_archive "$*"
}
update_folder() { # SPEED REPO FROM
  local p="$T/update.folder.$1.$2.$3" mark
  install_folder "$3"
  mark="$(log_mark)"
  timed "$p" "$MF" update --repo "$(url_of "$1" "$2")" --key "$PUB" --json --dir "$INSTALL/d"
  log_account "$mark" "$p"
  json_field "$p.out" fetched_bytes >>"$p.json_bytes"
  echo "$(json_field "$p.out" files_written) written, $(json_field "$p.out" files_deleted) deleted" >"$p.files"
  record_fallback "$p"
  check_folder "$*"
}
# The anchors: the newest full archive with curl; for a folder, that and `mf extract` into a new folder.
full_download() { # SPEED
  local p="$T/full.archive.$1" mark
  rm -f "$INSTALL/full.mf"
  mark="$(log_mark)"
  timed "$p" curl -sS -f -o "$INSTALL/full.mf" "$(url_of "$1" direct)/$NEWEST_PATH"
  log_account "$mark" "$p"
  [ "$(sha256sum "$INSTALL/full.mf" | cut -c1-64)" = "$NEWEST_SHA" ] || bench_die "curl fetched a wrong archive"
}
full_download_extract() { # SPEED
  local p="$T/full.folder.$1" mark
  rm -rf "$INSTALL/full.mf" "$INSTALL/fx"
  mark="$(log_mark)"
  timed "$p" sh -c "curl -sS -f -o '$INSTALL/full.mf' '$(url_of "$1" direct)/$NEWEST_PATH' && '$MF' extract '$INSTALL/full.mf' -C '$INSTALL/fx'"
  log_account "$mark" "$p"
  diff -r -q "$INSTALL/fx" "$W/pristine/$NEWEST" >/dev/null || bench_die "curl + mf extract gave a wrong folder"
}

# Planned routes (`--check`), once per repository and release (they do not depend on the speed).
for repo in "${REPOS[@]}"; do
  for v in "${OLDER[@]}"; do
    install_archive "$v"
    "$MF" update --repo "$(url_of fast "$repo")" --key "$PUB" --check --json "$INSTALL/a/app.mf" >"$T/check.$repo.$v.json" 2>"$T/check.$repo.$v.log" ||
      bench_die "mf update --check failed ($repo, $v): $(tail -3 "$T/check.$repo.$v.log")"
  done
done

FROMS=("${OLDER[@]}" none) # none: a fresh install (no archive, empty folder)
for round in $(seq "$RUNS"); do
  for speed in fast slow; do
    bench_log "round $round/$RUNS, $speed server (load $(bench_load))"
    full_download "$speed"
    for repo in "${REPOS[@]}"; do
      for v in "${FROMS[@]}"; do
        [ "$repo" = default ] && [ "$v" = none ] && continue # the same full download as in "direct"
        update_archive "$speed" "$repo" "$v"
      done
    done
    if [ "$FOLDER_MODE" = 1 ]; then
      full_download_extract "$speed"
      for repo in "${REPOS[@]}"; do
        for v in "${FROMS[@]}"; do
          [ "$repo" = default ] && [ "$v" = none ] && continue
          update_folder "$speed" "$repo" "$v"
        done
      done
    fi
  done
done
LOAD_END="$(bench_load)"
bench_stop_nginx "$NG"
trap - EXIT

# ---- report ---------------------------------------------------------------------------------------
med() { bench_median "$T/$1.wall"; }
cpu() { bench_median "$T/$1.cpu"; }
rss() { bench_max "$T/$1.rss"; }
# one_value FILE: the value every run gave, or "min–max" when the runs disagree.
one_value() {
  local lo hi
  lo="$(sort -g "$1" | head -1)"
  hi="$(sort -g "$1" | tail -1)"
  if [ "$lo" = "$hi" ]; then echo "$lo"; else echo "$lo–$hi"; fi
}
fmt_bytes() { # exact bytes, with thousands separators
  awk -v v="$1" 'BEGIN { if (v !~ /^[0-9]+$/) { print v; exit } s = sprintf("%d", v); o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }'
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9.]+$/ || b == 0) print "n/a"; else if (a / b < 0.001) printf "%.3f%%", 100 * a / b; else printf "%.2f%%", 100 * a / b }'; }
rate_mbit="$(awk -v r="$RATE" 'BEGIN { printf "%.0f", r * 8 / 1e6 }')"
FULL_BYTES="$(one_value "$T/full.archive.fast.bytes")"

# update_table MODE ANCHOR-LABEL: one table per repository, anchor first.
update_table() {
  local mode="$1" anchor="$2" repo v p a_fast a_slow
  a_fast="$(med "full.$mode.fast")"
  a_slow="$(med "full.$mode.slow")"
  echo "| installed → $NEWEST | repository | pieces fetched | bytes sent (nginx) | bytes (mf --json) | of the full download | requests | time, loopback | vs anchor | time, $rate_mbit Mbit/s | vs anchor | CPU | peak RSS |"
  echo "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  p="$T/full.$mode.fast"
  echo "| **anchor: $anchor** | - | full $NEWEST | $(fmt_bytes "$(one_value "$p.bytes")") | - | 100% | $(one_value "$p.reqs") | $(bench_fmt_secs "$a_fast") | 1.00 | $(bench_fmt_secs "$a_slow") | 1.00 | $(bench_fmt_secs "$(cpu "full.$mode.fast")") | $(bench_fmt_kib_as_mib "$(rss "full.$mode.fast")") |"
  for repo in "${REPOS[@]}"; do
    for v in "${FROMS[@]}"; do
      [ "$repo" = default ] && [ "$v" = none ] && continue
      p="update.$mode.fast.$repo.$v"
      local bytes
      bytes="$(one_value "$T/$p.bytes")"
      local fell=""
      [ -f "$T/$p.fell_back" ] && fell=" (**fell back to the full download in $(wc -l <"$T/$p.fell_back") of $RUNS runs**)"
      [ -f "$T/$p.files" ] && fell="$fell; files $(cat "$T/$p.files")"
      echo "| $([ "$v" = none ] && echo "nothing (fresh install)" || echo "$v") | $repo | $(describe_paths "$repo" "$(tail -1 "$T/$p.paths")")$fell | $(fmt_bytes "$bytes") | $(fmt_bytes "$(one_value "$T/$p.json_bytes")") | $(pct "$bytes" "$FULL_BYTES") | $(one_value "$T/$p.reqs") | $(bench_fmt_secs "$(med "$p")") | $(bench_ratio "$(med "$p")" "$a_fast") | $(bench_fmt_secs "$(med "update.$mode.slow.$repo.$v")") | $(bench_ratio "$(med "update.$mode.slow.$repo.$v")" "$a_slow") | $(bench_fmt_secs "$(cpu "$p")") | $(bench_fmt_kib_as_mib "$(rss "$p")") |"
    done
  done
}

{
  echo "## release: publishing and \`mf update\` vs downloading the full archive"
  echo
  echo "_Measured $(date -u '+%Y-%m-%d %H:%M UTC') at mf commit $MEASURED_COMMIT; load average $LOAD_START at the start, $LOAD_END at the end._"
  echo
  # Where the measured build came from, when it is not simply this checkout (e.g. a scratch merge).
  if [ -n "${BENCH_RELEASE_PROVENANCE:-}" ]; then
    echo "**$BENCH_RELEASE_PROVENANCE**"
    echo
  fi
  echo "Reproduce with \`bench/run release\` (as root: installs nginx and curl with apt-get, downloads the arcade wheels"
  echo "${VERSIONS[*]} from PyPI into bench/work/corpus, builds mf in release mode). Each release is its unpacked wheel,"
  echo "published in order with \`mf release add REPO VERSION DIR --sign publisher.key --json\` into two repositories:"
  echo "**direct** (\`${PATCH_ARGS[direct]}\`: every older release has a patch straight to $NEWEST) and **default**"
  echo "(no \`--patch-from-last\`: the default window). Both are served as static files by nginx $NGINX_VERSION on loopback,"
  echo "once directly and once through bench/throttle.py, a proxy that gives all connections together $rate_mbit Mbit/s from"
  echo "server to client (one token bucket; no added latency), like a slow link. Updates run"
  echo "\`mf update --repo URL --key publisher.pub --json app.mf\` (archive) or \`... --dir DIR\` (folder); before each run"
  echo "the old release is reinstalled (its archive from the repository, or that archive extracted with \`mf extract\`) and"
  echo "the client's state directory removed, so nothing is cached. Every result is checked: the archive's SHA-256"
  echo "equals $NEWEST's, the folder equals $NEWEST's extraction. Bytes are nginx's \`\$body_bytes_sent\` summed over"
  echo "the command's requests (mf's include the signed manifest, $(fmt_bytes "$(stat -c %s "$SERVE/direct/manifest.json")") bytes in the direct repository), and the"
  echo "figure mf's own \`--json\` report gives; times are wall-clock medians of $RUNS"
  echo "rounds (commands interleaved round by round), CPU is user+sys, peak RSS the largest of the runs"
  echo "(/usr/bin/time -v). The machine was shared with other jobs compiling Rust, so read the ratios and bytes"
  echo "before the seconds."
  echo
  echo "### Publishing (\`mf release add --sign\`, one run each)"
  echo
  echo "| release | files | unpacked | full archive | add, direct | CPU | peak RSS | patches made | repository after | add, default | patches made | repository after |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for v in "${VERSIONS[@]}"; do
    np_direct="$(manifest_query direct "len(by['$v']['patches'])")"
    np_default="$(manifest_query default "len(by['$v']['patches'])")"
    echo "| $v | $(find "${CORPUS[$v]}" -type f | wc -l) | $(bench_fmt_mib "$(du -sb --apparent-size "${CORPUS[$v]}" | cut -f1)") | $(bench_fmt_mib "$(full_size direct "$v")") | $(bench_fmt_secs "$(med "publish.direct.$v")") | $(bench_fmt_secs "$(cpu "publish.direct.$v")") | $(bench_fmt_kib_as_mib "$(rss "publish.direct.$v")") | $np_direct | $(bench_fmt_mib "$(cat "$T/publish.direct.$v.size")") | $(bench_fmt_secs "$(med "publish.default.$v")") | $np_default | $(bench_fmt_mib "$(cat "$T/publish.default.$v.size")") |"
  done
  echo
  echo "Patch sizes in bytes (direct repository; rows: from, columns: to; \"-\" where no patch was stored):"
  echo
  python3 - "$SERVE/direct/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["signed"]
names = [v["version"] for v in m["versions"]]
size = {(p["from"], v["version"]): p["size"] for v in m["versions"] for p in v.get("patches", [])}
full = {v["version"]: v["full"]["size"] for v in m["versions"]}
print("| from \\ to | " + " | ".join(names[1:]) + " |")
print("|---|" + "--:|" * (len(names) - 1))
for a in names[:-1]:
    cells = [f"{size[(a, b)]:,}" if (a, b) in size else "-" for b in names[1:]]
    print(f"| {a} | " + " | ".join(cells) + " |")
print("| *full archive* | " + " | ".join(f"{full[b]:,}" for b in names[1:]) + " |")
PY
  echo
  echo "### Archive: \`mf update ARCHIVE\` from each older release to $NEWEST"
  echo
  echo "Anchor: \`curl -o new.mf URL/$NEWEST_PATH\` (the newest full archive, $(fmt_bytes "$NEWEST_SIZE") bytes)."
  echo
  update_table archive "curl the full archive"
  echo
  echo "### Folder: \`mf update --dir INSTALL_DIR\` from each older release's extracted folder to $NEWEST"
  echo
  if [ "$FOLDER_MODE" = 1 ]; then
    echo "Anchor: \`curl -o new.mf URL/full/….mf && mf extract new.mf -C NEW_DIR\` (download and unpack everything)."
    echo
    update_table folder "curl + mf extract"
  else
    echo "**Not measured:** this build of mf cannot update a folder (\`mf update --check --dir EMPTY_DIR\` said: $FOLDER_PROBLEM)."
  fi
  echo
  echo "Routes as \`mf update --check --json\` planned them (archive mode; \`route\` and \`route_bytes\` of its report):"
  echo
  echo "| installed | repository | planned route | planned bytes (manifest excluded) |"
  echo "|---|---|---|--:|"
  for repo in "${REPOS[@]}"; do
    for v in "${OLDER[@]}"; do
      echo "| $v | $repo | $(json_route "$T/check.$repo.$v.json") | $(fmt_bytes "$(json_field "$T/check.$repo.$v.json" route_bytes)") |"
    done
  done
} >"$BENCH_RESULTS/release.md"
bench_log "wrote $BENCH_RESULTS/release.md"

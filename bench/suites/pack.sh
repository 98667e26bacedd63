#!/usr/bin/env bash
# Suite "pack": mf pack / extract / list against Panda3D multify, tar|zstd and squashfs, on the arcade
# 3.3.3 wheel and on a generated tree of 100,000 small files (1 GiB); and, for issue 13 (ratio), mf's
# defaults and `--best` against squashfs and the solid bound `tar | zstd -19 --long=27` on arcade and on
# the duckdb 1.1.3 wheel (a native-library tree). Writes bench/results/pack.md.
#
# Every measured command runs $BENCH_RUNS times (default 3) and the median is reported. The tools are
# interleaved round by round (mf, multify, tar|zstd, mksquashfs, then again), so background load hits
# them alike and the ratios stay meaningful even when the absolute times do not.
# Knobs: BENCH_RUNS, BENCH_RUNS_LARGE (runs on the 1 GiB set; default 1; 0 skips that set),
# BENCH_COLD=1 (drop the page cache before every timed command; default: warm cache, after one untimed
# warm-up read).

source "$(dirname "$0")/../lib.sh"

MEASURED_COMMIT="${BENCH_COMMIT:-$(git -C "$REPO_DIR" rev-parse --short HEAD)$(git -C "$REPO_DIR" diff --quiet HEAD -- . ':!bench' || echo ' (with uncommitted changes)')}"
bench_need_apt squashfs-tools zstd time
bench_need_pip panda3d zstandard
bench_build_mf
CORPUS="$(bench_corpus_arcade)"
DUCKDB="$(bench_corpus_duckdb)"
MULTIFY="$BENCH_VENV/bin/multify"
W="$BENCH_WORK/pack"
T="$W/times"
rm -rf "$W"
mkdir -p "$W/out" "$W/x" "$T"
# Extract and list are quick and noisier than pack: at least 5 runs. The 1 GiB set takes minutes per
# mksquashfs run, so it is measured once unless asked.
RUNS_SHORT=$((BENCH_RUNS > 5 ? BENCH_RUNS : 5))
RUNS_LARGE="${BENCH_RUNS_LARGE:-1}"
LOAD_START="$(bench_load)"

TOOLS=(mf multify tarzst sqfs)
# Issue 13's settings and anchor, packed (not extracted) beside the others: the release-build preset
# and the solid, no-random-access bound.
RATIO_TOOLS=(mfbest tarzst19)
declare -A NAME=(
  [mf]="mf pack (defaults)"
  [multify]="Panda3D multify -c -z"
  [tarzst]="tar cf - \\| zstd -3 -T0"
  [sqfs]="mksquashfs -comp zstd"
  [mfbest]="mf pack --best"
  [tarzst19]="tar cf - \\| zstd -19 --long=27 -T0"
)
declare -A EXT=([mf]=mf [multify]=p3d.mf [tarzst]=tar.zst [sqfs]=sqfs [mfbest]=best.mf [tarzst19]=tar19.zst)

# archive_of SET TOOL: where TOOL's archive of SET goes.
archive_of() { echo "$W/out/$1.${EXT[$2]}"; }

pack_cmd() { # SET SRC TOOL -> command words
  local out
  out="$(archive_of "$1" "$3")"
  case "$3" in
    mf) echo "$MF" pack "$2" -o "$out" ;;
    mfbest) echo "$MF" pack "$2" -o "$out" --best ;;
    multify) echo "$MULTIFY" -c -z -f "$out" -C "$2" . ;;
    tarzst) echo sh -c "tar cf - -C '$2' . | zstd -3 -T0 -q > '$out'" ;;
    sqfs) echo mksquashfs "$2" "$out" -comp zstd -noappend -quiet -no-progress ;;
  esac
}
extract_cmd() { # SET TOOL DEST
  local in
  in="$(archive_of "$1" "$2")"
  case "$2" in
    mf) echo "$MF" extract "$in" -C "$3" ;;
    multify) echo "$MULTIFY" -x -f "$in" -C "$3" ;;
    tarzst) echo sh -c "mkdir -p '$3' && zstd -dc '$in' | tar xf - -C '$3'" ;;
    sqfs) echo unsquashfs -q -n -d "$3" "$in" ;;
  esac
}
list_cmd() { # SET TOOL
  local in
  in="$(archive_of "$1" "$2")"
  case "$2" in
    mf) echo "$MF" list "$in" ;;
    multify) echo "$MULTIFY" -t -f "$in" ;;
    tarzst) echo sh -c "zstd -dc '$in' | tar tf -" ;;
    sqfs) echo unsquashfs -l "$in" ;;
  esac
}

# run_step SET PHASE TOOL CMD-STRING: one timed run (the command string has no spaces inside words
# except in the sh -c script, which is passed whole).
run_step() {
  local set="$1" phase="$2" tool="$3"
  shift 3
  bench_run_once "$T/$set.$phase.$tool" "$@"
}

pack_round() { # SET SRC TOOL...
  local set="$1" src="$2" tool
  shift 2
  for tool in "$@"; do
    rm -f "$(archive_of "$set" "$tool")"
    if [ "$tool" = tarzst ]; then
      run_step "$set" pack "$tool" sh -c "tar cf - -C '$src' . | zstd -3 -T0 -q > '$(archive_of "$set" "$tool")'"
    elif [ "$tool" = tarzst19 ]; then
      run_step "$set" pack "$tool" sh -c "tar cf - -C '$src' . | zstd -19 --long=27 -T0 -q > '$(archive_of "$set" "$tool")'"
    else
      # shellcheck disable=SC2046
      run_step "$set" pack "$tool" $(pack_cmd "$set" "$src" "$tool")
    fi
  done
}

extract_round() { # SET TOOL...
  local set="$1" tool dest
  shift
  for tool in "$@"; do
    dest="$W/x/$set.$tool"
    rm -rf "$dest"
    case "$tool" in
      tarzst) run_step "$set" extract "$tool" sh -c "mkdir -p '$dest' && zstd -dc '$(archive_of "$set" tarzst)' | tar xf - -C '$dest'" ;;
      # shellcheck disable=SC2046
      multify) mkdir -p "$dest" && run_step "$set" extract "$tool" $(extract_cmd "$set" "$tool" "$dest") ;;
      # shellcheck disable=SC2046
      *) run_step "$set" extract "$tool" $(extract_cmd "$set" "$tool" "$dest") ;;
    esac
  done
}

list_round() { # SET TOOL...
  local set="$1" tool
  shift
  for tool in "$@"; do
    if [ "$tool" = tarzst ]; then
      run_step "$set" list "$tool" sh -c "zstd -dc '$(archive_of "$set" tarzst)' | tar tf -"
    else
      # shellcheck disable=SC2046
      run_step "$set" list "$tool" $(list_cmd "$set" "$tool")
    fi
    rm -f "$T/$set.list.$tool.log" # listings are long and not needed
  done
}

# Warm the page cache so the first round is not penalised for reading the corpus from disk.
cat_tree() { find "$1" -type f -print0 | xargs -0 cat >/dev/null; }

bench_log "arcade: $(find "$CORPUS" -type f | wc -l) files, $(du -sb "$CORPUS" | cut -f1) bytes; $BENCH_RUNS rounds"
cat_tree "$CORPUS"
for round in $(seq "$BENCH_RUNS"); do
  bench_log "arcade pack round $round (load $(bench_load))"
  pack_round arcade "$CORPUS" "${TOOLS[@]}" "${RATIO_TOOLS[@]}"
done
for round in $(seq "$RUNS_SHORT"); do
  bench_log "arcade extract round $round"
  extract_round arcade "${TOOLS[@]}"
done
for round in $(seq "$RUNS_SHORT"); do
  bench_log "arcade list round $round"
  list_round arcade "${TOOLS[@]}"
done

# Check that what was measured is right: mf's extraction equals the corpus byte for byte, and every
# tool extracted the same number of files.
diff -r "$CORPUS" "$W/x/arcade.mf" >/dev/null || bench_die "mf extract differs from the corpus"
CORPUS_FILES=$(find "$CORPUS" -type f | wc -l)
for tool in "${TOOLS[@]}"; do
  n=$(find "$W/x/arcade.$tool" -type f | wc -l)
  [ "$n" = "$CORPUS_FILES" ] || bench_die "$tool extracted $n files, the corpus has $CORPUS_FILES"
done
rm -rf "$W/x"

# Issue 13's native-library tree: mf (defaults and --best), squashfs and the solid bound, interleaved.
DUCKDB_TOOLS=(mf mfbest tarzst19 sqfs)
bench_log "duckdb: $(find "$DUCKDB" -type f | wc -l) files, $(du -sb "$DUCKDB" | cut -f1) bytes; $BENCH_RUNS rounds"
cat_tree "$DUCKDB"
for round in $(seq "$BENCH_RUNS"); do
  bench_log "duckdb pack round $round (load $(bench_load))"
  pack_round duckdb "$DUCKDB" "${DUCKDB_TOOLS[@]}"
done
# What was measured is right: both mf archives of both trees extract to the tree byte for byte (the
# x86 filter is undone on every frame of the library).
for set in arcade duckdb; do
  src="$CORPUS"
  [ "$set" = duckdb ] && src="$DUCKDB"
  for tool in mf mfbest; do
    "$MF" extract "$(archive_of "$set" "$tool")" -C "$W/x/$set.$tool" >/dev/null
    diff -r "$src" "$W/x/$set.$tool" >/dev/null || bench_die "$tool's extraction of $set differs from the tree"
  done
done
rm -rf "$W/x"

# The generated set: built once and cached (its content depends only on the generator script).
GEN_KEY="$(sha256sum "$BENCH_DIR/gen_small_files.py" | cut -c1-12)"
GEN="$BENCH_WORK/corpus/small-100k-$GEN_KEY"
if [ "$RUNS_LARGE" -gt 0 ] && [ ! -f "$GEN.complete" ]; then
  bench_log "generating 100,000 files (1 GiB) in $GEN"
  rm -rf "$BENCH_WORK"/corpus/small-100k-*
  python3 "$BENCH_DIR/gen_small_files.py" "$GEN" 100000 $((1 << 30))
  touch "$GEN.complete"
fi
bench_log "estimating what squashfs's deduplication, fragments and level are worth (size_gaps.py)"
MF_LEVEL="$("$MF" pack --help | grep -A3 -- '--level' | grep -o 'default: [0-9]*' | head -1 | cut -d' ' -f2)"
SIZE_GAPS="$("$BENCH_VENV/bin/python" "$BENCH_DIR/size_gaps.py" "$CORPUS" "${MF_LEVEL:?cannot read the default level of mf}")"

LARGE_TOOLS=(mf tarzst sqfs)
[ "$RUNS_LARGE" -gt 0 ] && cat_tree "$GEN"
for round in $(seq "$RUNS_LARGE"); do
  bench_log "100k pack round $round (load $(bench_load))"
  pack_round small "$GEN" "${LARGE_TOOLS[@]}"
done
for round in $(seq "$RUNS_LARGE"); do
  bench_log "100k list round $round"
  list_round small "${LARGE_TOOLS[@]}"
done
LOAD_END="$(bench_load)"

# ---- report ---------------------------------------------------------------------------------------
med() { bench_median "$T/$1.wall"; }
cpu() { bench_median "$T/$1.cpu"; }
rss() { bench_max "$T/$1.rss"; }
size() { stat -c %s "$(archive_of "$1" "$2")"; }

mf_size=$(size arcade mf)
sq_size=$(size arcade sqfs)
tar_size=$(size arcade tarzst)
mf_pack=$(med arcade.pack.mf)
sq_pack=$(med arcade.pack.sqfs)
mf_x=$(med arcade.extract.mf)
tar_x=$(med arcade.extract.tarzst)
met() { awk -v a="$1" -v b="$2" 'BEGIN { if (a <= b) print "yes"; else print "**no**" }'; }
size_gap="$(awk -v a="$mf_size" -v b="$sq_size" 'BEGIN { printf "%+.2f%%, %+d bytes", (a / b - 1) * 100, a - b }')"
sq_half="$(awk -v v="$sq_pack" 'BEGIN { print v / 2 }')"

# issue13_report: the ratio table of both trees and issue 13's targets (sizes in bytes: the targets are
# ratios of a few percent).
issue13_report() {
  local set tool s p sq sq_p solid
  echo "### Issue 13: ratio on arcade and on duckdb 1.1.3 (native libraries), defaults and --best"
  echo
  echo "duckdb: the cp311 manylinux x86-64 wheel unzipped ($(find "$DUCKDB" -type f | wc -l) files, $(bench_fmt_mib "$(du -sb --apparent-size "$DUCKDB" | cut -f1)"), one 62 MB x86-64 library). \`--best\` is zstd $("$MF" pack --help | tr -s ' \n' '  ' | grep -o 'zstd level [0-9]* and [0-9]*[KM] frames' | head -1 | sed 's/zstd //'). The solid bound is \`tar cf - | zstd -19 --long=27 -T0\` (no random access). Same rounds as above (medians of $BENCH_RUNS)."
  echo
  echo "| tree | tool | pack | pack CPU | pack peak RSS | archive bytes | × squashfs | × tar\\|zstd -19 --long | pack × mksquashfs |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|"
  for set in arcade duckdb; do
    sq=$(size "$set" sqfs)
    solid=$(size "$set" tarzst19)
    sq_p=$(med "$set.pack.sqfs")
    for tool in mf mfbest sqfs tarzst19; do
      s=$(size "$set" "$tool")
      p=$(med "$set.pack.$tool")
      echo "| $set | ${NAME[$tool]} | $(bench_fmt_secs "$p") | $(bench_fmt_secs "$(cpu "$set.pack.$tool")") | $(bench_fmt_kib_as_mib "$(rss "$set.pack.$tool")") | $s | $(bench_ratio3 "$s" "$sq") | $(bench_ratio3 "$s" "$solid") | $(bench_ratio "$p" "$sq_p") |"
    done
  done
  echo
  echo "#### Targets (issue 13)"
  echo
  echo "| target | arcade | met | duckdb | met |"
  echo "|---|---|---|---|---|"
  row() { # LABEL TOOL REF LIMIT KIND(size|time)
    local line="| $1 |" set v r lim
    for set in arcade duckdb; do
      if [ "$5" = size ]; then
        v=$(size "$set" "$2")
        r=$(size "$set" "$3")
        lim=$(awk -v r="$r" -v l="$4" 'BEGIN { printf "%d", r * l }')
        line="$line $v vs ≤ $lim bytes ($(bench_ratio3 "$v" "$r")×) | $(met "$v" "$lim") |"
      else
        v=$(med "$set.pack.$2")
        r=$(med "$set.pack.$3")
        lim=$(awk -v r="$r" -v l="$4" 'BEGIN { print r * l }')
        line="$line $(bench_fmt_secs "$v") vs ≤ $(bench_fmt_secs "$lim") ($(bench_ratio "$v" "$r")×) | $(met "$v" "$lim") |"
      fi
    done
    echo "$line"
  }
  local line="| defaults: archive ≤ 0.95× squashfs (arcade), ≤ 0.85× (duckdb) |" set v r lim
  for set in arcade duckdb; do
    lim=0.95
    [ "$set" = duckdb ] && lim=0.85
    v=$(size "$set" mf)
    r=$(size "$set" sqfs)
    lim=$(awk -v r="$r" -v l="$lim" 'BEGIN { printf "%d", r * l }')
    line="$line $v vs ≤ $lim bytes ($(bench_ratio3 "$v" "$r")×) | $(met "$v" "$lim") |"
  done
  echo "$line"
  row "defaults: pack ≤ 0.5× mksquashfs" mf sqfs 0.5 time
  row "\`--best\`: archive ≤ 1.10× tar\\|zstd -19 --long" mfbest tarzst19 1.10 size
  row "\`--best\`: pack ≤ 2× mksquashfs" mfbest sqfs 2 time
  echo
}

{
  echo "## pack: mf vs multify, tar|zstd, mksquashfs"
  echo
  echo "_Measured $(date -u '+%Y-%m-%d %H:%M UTC') at mf commit $MEASURED_COMMIT; load average $LOAD_START at the start, $LOAD_END at the end._"
  echo
  mf_cmd="$(pack_cmd arcade CORPUS mf | sed "s|$REPO_DIR/||g; s|$W/out/||g")"
  cache_state=warm
  [ "${BENCH_COLD:-0}" = 1 ] && cache_state="dropped before each command"
  sed -e "s|@MF_CMD@|$mf_cmd|" -e "s|@RUNS@|$BENCH_RUNS|" -e "s|@RUNS_SHORT@|$RUNS_SHORT|" -e "s|@CACHE@|$cache_state|" <<'TEXT'
Commands: `@MF_CMD@`, `multify -c -z -f X -C CORPUS .`, `tar cf - -C CORPUS . | zstd -3 -T0`,
`mksquashfs CORPUS X -comp zstd -noappend` (zstd level 15, 128 KiB blocks, all cores). Extract:
`mf extract X -C D`, `multify -x`, `zstd -dc X | tar x`, `unsquashfs -d D`. List: `mf list`, `multify -t`,
`zstd -dc X | tar t`, `unsquashfs -l`. Times are wall-clock medians of @RUNS@ runs (pack) or @RUNS_SHORT@ runs
(extract, list), the tools interleaved round by round; CPU is user+sys; peak RSS is the largest of the runs
(for a pipeline, its largest process); page cache @CACHE@. mf pack fsyncs the archive before
TEXT
  echo "renaming it into place (its no-partial-output guarantee); the other tools do not sync."
  echo
  echo "### arcade 3.3.3 ($CORPUS_FILES files, $(bench_fmt_mib "$(du -sb --apparent-size "$CORPUS" | cut -f1)"))"
  echo
  echo "| tool | pack | pack CPU | pack peak RSS | archive | size vs squashfs | size vs tar.zst | pack time vs squashfs | extract | extract CPU | extract vs tar -x | list |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for tool in "${TOOLS[@]}"; do
    s=$(size arcade "$tool")
    p=$(med "arcade.pack.$tool")
    x=$(med "arcade.extract.$tool")
    echo "| ${NAME[$tool]} | $(bench_fmt_secs "$p") | $(bench_fmt_secs "$(cpu "arcade.pack.$tool")") | $(bench_fmt_kib_as_mib "$(rss "arcade.pack.$tool")") | $(bench_fmt_mib "$s") | $(bench_ratio "$s" "$sq_size") | $(bench_ratio "$s" "$tar_size") | $(bench_ratio "$p" "$sq_pack") | $(bench_fmt_secs "$x") | $(bench_fmt_secs "$(cpu "arcade.extract.$tool")") | $(bench_ratio "$x" "$tar_x") | $(bench_fmt_secs "$(med "arcade.list.$tool")") |"
  done
  echo
  echo "Archive sizes in bytes: mf $mf_size, multify $(size arcade multify), tar.zst $tar_size, squashfs $sq_size."
  echo
  echo "### Targets (issue 2, arcade, default settings)"
  echo
  echo "| target | measured | met |"
  echo "|---|---|---|"
  echo "| archive ≤ mksquashfs -comp zstd | $mf_size vs $sq_size bytes ($size_gap) | $(met "$mf_size" "$sq_size") |"
  echo "| pack ≤ ½ × mksquashfs | $(bench_fmt_secs "$mf_pack") vs $(bench_fmt_secs "$sq_pack") (ratio $(bench_ratio "$mf_pack" "$sq_pack"); CPU ratio $(bench_ratio "$(cpu arcade.pack.mf)" "$(cpu arcade.pack.sqfs)")) | $(met "$mf_pack" "$sq_half") |"
  echo "| extract ≤ zstd -dc \\| tar x | $(bench_fmt_secs "$mf_x") vs $(bench_fmt_secs "$tar_x") (ratio $(bench_ratio "$mf_x" "$tar_x")) | $(met "$mf_x" "$tar_x") |"
  echo
  issue13_report
  echo "### Where the size difference to squashfs comes from (bench/size_gaps.py, zstd library estimates)"
  echo
  echo "$SIZE_GAPS"
  echo
  echo "### Generated: 100,000 small files, 1 GiB (bench/gen_small_files.py: 60% text-like, 40% random)"
  echo
  if [ "$RUNS_LARGE" -eq 0 ]; then
    echo "Not measured in this run (BENCH_RUNS_LARGE=0)."
  else
    echo "Medians of $RUNS_LARGE run(s) (BENCH_RUNS_LARGE); list medians of the same number of runs."
    echo
    echo "| tool | pack | pack CPU | pack peak RSS | archive | list | list peak RSS |"
    echo "|---|--:|--:|--:|--:|--:|--:|"
    for tool in "${LARGE_TOOLS[@]}"; do
      echo "| ${NAME[$tool]} | $(bench_fmt_secs "$(med "small.pack.$tool")") | $(bench_fmt_secs "$(cpu "small.pack.$tool")") | $(bench_fmt_kib_as_mib "$(rss "small.pack.$tool")") | $(bench_fmt_mib "$(size small "$tool")") | $(bench_fmt_secs "$(med "small.list.$tool")") | $(bench_fmt_kib_as_mib "$(rss "small.list.$tool")") |"
    done
  fi
} >"$BENCH_RESULTS/pack.md"
bench_log "wrote $BENCH_RESULTS/pack.md"

#!/usr/bin/env bash
# Regenerates the writer-made part of the seed corpus (deterministic; the files are committed).
# Regression inputs found by fuzzing (corpus/open_and_read/regress-*) are kept by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p mf-format --example fuzz_seeds -- fuzz/corpus/open_and_read
cargo run -q -p mf-diff --example patch_seeds -- fuzz/corpus/patch_apply
# Panda3D multifiles, laid out field by field (regress-* inputs the fuzzer found are kept by hand).
cargo run -q -p mf-panda3d --example panda3d_seeds -- fuzz/corpus/panda3d

# Folder-journal seeds (hand-written JSON; the target's tables know versions 1.0 and 2.0).
j=fuzz/corpus/folder_journal
mkdir -p "$j"
printf '%s' '{"type":"mf-folder-journal","from":"1.0","to":"2.0","done":true,"operations":[{"op":"replace","path":"a.txt","staged":"s7"},{"op":"delete","path":"old.txt"}],"created_dirs":[]}' > "$j/done.json"
printf '%s' '{"type":"mf-folder-journal","from":null,"to":"2.0","done":false,"operations":[{"op":"replace","path":"a.txt","staged":"s0"},{"op":"replace","path":"dir/b.bin","staged":"s1"},{"op":"replace","path":"dir/sub/c.txt","staged":"s2"}],"created_dirs":["dir","dir/sub"]}' > "$j/install-2.0.json"
printf '%s' '{"type":"mf-folder-journal","from":"lookup-fails","to":"2.0","done":false,"operations":[{"op":"replace","path":"new.txt","staged":"s12345678901234567890"}],"created_dirs":[]}' > "$j/lookup-fails.json"
printf '%s' '{"type":"mf-folder-journal","from":"2.0","to":"1.0","done":false,"operations":[{"op":"replace","path":"../escape","staged":"../../etc/x"},{"op":"delete","path":".mf-update/journal.json"}],"created_dirs":["/tmp"]}' > "$j/refused-escape.json"
printf '%s' '{"type":"mf-folder-journal","from":"lookup-fails","to":"9.9","done":false,"operations":[{"op":"delete","path":"new.txt"}],"created_dirs":[]}' > "$j/refused-unknown-version.json"
printf '%s' '{"type":"mf-folder-journal","from":"1.0","to":"2.0","done":false,"operations":[{"op":"replace","path":"a.txt","staged":"s0"},{"op":"replace","path":"dir/sub/c.txt","staged":"s1"},{"op":"replace","path":"new.txt","staged":"s2"},{"op":"delete","path":"old.txt"},{"op":"delete","path":"gone/x"}],"created_dirs":["dir/sub"]}' > "$j/update-1.0-2.0.json"

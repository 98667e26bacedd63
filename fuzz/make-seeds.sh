#!/usr/bin/env bash
# Regenerates the writer-made part of the seed corpus (deterministic; the files are committed).
# Regression inputs found by fuzzing (corpus/open_and_read/regress-*) are kept by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p mf-format --example fuzz_seeds -- fuzz/corpus/open_and_read
cargo run -q -p mf-diff --example patch_seeds -- fuzz/corpus/patch_apply

#!/bin/sh
# Starts the sample game from its install folder.
cd "$(dirname "$0")/.." && exec python3 scripts/main.py "$@"

#!/usr/bin/env python3
"""Writes a deterministic tree of many small files for the benchmark.

Usage: gen_small_files.py DIR [FILES] [TOTAL_BYTES]   (defaults: 100000 files, 1 GiB)

The same arguments always give the same bytes (Python's seeded Mersenne Twister is stable across
versions). About 60% of the files are text-like (words drawn from a small vocabulary, so they compress
roughly like source code or JSON, and end in .txt/.json/.py), the rest are random bytes (.bin,
incompressible). Files are spread over 100 directories; sizes vary from 1 byte up to about twice the
mean, and the last file absorbs the rounding so the total is exact.
"""

import os
import random
import sys

SEED = 20260101
EXTENSIONS_TEXT = ("txt", "json", "py")


def main() -> None:
    out = sys.argv[1]
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    total = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 30
    rng = random.Random(SEED)

    vocabulary = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10)))
        for _ in range(4000)
    ]
    # A 16 MiB pool of text; each text file is a slice of it at a random offset, so files differ
    # from one another but compress like text.
    words = rng.choices(vocabulary, k=3_000_000)
    lines = []
    for start in range(0, len(words), 12):
        lines.append(" " * (4 * rng.randint(0, 3)) + " ".join(words[start : start + 12]) + "\n")
    pool = "".join(lines).encode()
    while len(pool) < 16 << 20:
        pool += pool
    pool = pool[: 16 << 20]

    mean = total / files
    sizes = [rng.randint(1, int(2 * mean) - 1) for _ in range(files)]
    drift = total - sum(sizes)
    # Spread the rounding over the files so none becomes huge or negative.
    step = 1 if drift > 0 else -1
    i = 0
    while drift != 0:
        if sizes[i % files] + step >= 1:
            sizes[i % files] += step
            drift -= step
        i += 1

    for d in range(100):
        os.makedirs(os.path.join(out, f"d{d:02}"), exist_ok=True)
    for n, size in enumerate(sizes):
        if rng.random() < 0.6:
            at = rng.randrange(0, len(pool) - size)
            data = pool[at : at + size]
            ext = EXTENSIONS_TEXT[n % 3]
        else:
            data = rng.randbytes(size)
            ext = "bin"
        with open(os.path.join(out, f"d{n % 100:02}", f"f{n:06}.{ext}"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

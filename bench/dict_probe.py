#!/usr/bin/env python3
"""Would a trained zstd dictionary pay for mf's solid blocks? (issue 13)

Usage: dict_probe.py DIR [FRAME_KIB]   (bench/.venv/bin/python; needs the pip package zstandard,
which `bench/run pack` installs there)

Takes the files a default `mf pack` puts in solid blocks (1 byte to 64 KiB), in an order close to
mf's kind order (by extension, then path), cuts their concatenation into frames (default 256 KiB, mf's
default frame size) and compresses each at level 9, mf's default, without and with a dictionary
trained on those files. The dictionary would be stored once per archive, so it counts against the
saving. An estimate of the effect, not a reproduction of mf's writer.
"""

import os
import sys

import zstandard

LEVEL = 9
SOLID_LIMIT = 64 << 10


def main() -> None:
    root = sys.argv[1]
    frame = int(sys.argv[2]) << 10 if len(sys.argv) > 2 else 256 << 10
    files = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.islink(path) and 0 < os.path.getsize(path) <= SOLID_LIMIT:
                files.append(path)
    files.sort(key=lambda p: (os.path.splitext(p)[1], p))
    contents = [open(p, "rb").read() for p in files]
    stream = b"".join(contents)
    frames = [stream[i : i + frame] for i in range(0, len(stream), frame)]
    plain = sum(len(zstandard.ZstdCompressor(level=LEVEL).compress(f)) for f in frames)
    print(f"- {len(files)} files of up to 64 KiB, {len(stream):,} bytes, in {len(frames)} frames of "
          f"{frame >> 10} KiB at level {LEVEL}: {plain:,} bytes without a dictionary.")
    for size in (16 << 10, 64 << 10, 110 << 10):
        trained = zstandard.train_dictionary(size, contents, level=LEVEL)
        compressor = zstandard.ZstdCompressor(level=LEVEL, dict_data=trained)
        framed = sum(len(compressor.compress(f)) for f in frames)
        stored = len(trained.as_bytes())
        saving = plain - framed - stored
        print(f"- {stored:,}-byte dictionary: frames {framed:,} bytes, with the dictionary {framed + stored:,} "
              f"({saving:+,} bytes, {saving / plain:+.2%}).")


if __name__ == "__main__":
    main()

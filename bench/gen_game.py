#!/usr/bin/env python3
"""Generates a game-like release and its next version, deterministically from a seed.

    gen_game.py OUT_DIR [--seed N] [--scale F]

writes OUT_DIR/v1 (about 2.2 GiB at scale 1) and OUT_DIR/v2, the next version: about 1% of the
entries changed (same-size edits, regenerated and grown files), a few added and removed, and a small
edit in the middle of the 160 MiB data/level1.pak. Unchanged files of v2 are hard links to v1's, so
v2 costs only the changed bytes on disk. Also writes OUT_DIR/changed.txt (the changed paths) and
OUT_DIR/edit10m.bin (a changed version of the 10 MiB file models/hero.bam, for `mf add --update`).

The mix, by bytes: compressible models (.bam), scripts/configs (.py, .json, .txt) and shaders
(.glsl); incompressible textures (.dds, .png), audio (.ogg) and video (.mp4); three large packed
files of 100+ MiB (.pak, one of them half incompressible). Compressible content is cut from a pool of
token text, so it compresses about as well as real assets at zstd's middle levels; incompressible
content is PRNG output. Takes seconds: bytes are produced by slicing and by randbytes, never one
character at a time.
"""

import argparse
import os
import random
import shutil

MIB = 1 << 20


def token_pool(rng, size):
    """Text-like bytes: tokens of a vocabulary with numbers, the way model and script files look."""
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10)))
        for _ in range(3000)
    ]
    parts, total = [], 0
    while total < size:
        line = " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 9)))
        line += " %d %.3f %.3f\n" % (rng.randint(0, 9999), rng.random() * 100, rng.random())
        parts.append(line)
        total += len(line)
    return "".join(parts).encode()[:size]


class Maker:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.pool = token_pool(self.rng, 8 * MIB)

    def compressible(self, size):
        """Slices of the token pool, 1-16 KiB each, with a few random bytes between them."""
        rng, pool = self.rng, self.pool
        out, total = [], 0
        while total < size:
            n = rng.randint(1024, 16384)
            at = rng.randrange(0, len(pool) - n)
            out.append(pool[at : at + n])
            out.append(rng.randbytes(rng.randint(0, 24)))
            total += n
        return b"".join(out)[:size]

    def incompressible(self, size):
        return self.rng.randbytes(size)

    def mixed(self, size):
        """Alternating 1 MiB stretches of compressible and incompressible bytes."""
        out, total, flip = [], 0, False
        while total < size:
            n = min(MIB, size - total)
            out.append(self.incompressible(n) if flip else self.compressible(n))
            total += n
            flip = not flip
        return b"".join(out)


def plan(rng, scale):
    """(path, kind, size) of every file of v1."""
    files = []

    def many(count, directory, extensions, kind, low, high):
        for i in range(max(1, int(count * scale))):
            ext = extensions[i % len(extensions)]
            files.append((f"{directory}/{i // 100:02d}/{directory[:3]}{i:05d}.{ext}", kind, rng.randint(low, high)))

    many(600, "models", ["bam", "egg"], "compressible", 64 << 10, 1300 << 10)
    many(2500, "scripts", ["py", "json", "txt"], "compressible", 1 << 10, 40 << 10)
    many(400, "shaders", ["glsl", "vert", "frag"], "compressible", 2 << 10, 20 << 10)
    many(330, "textures", ["dds", "png"], "incompressible", 1 * MIB, 4 * MIB)
    many(150, "audio", ["ogg"], "incompressible", 512 << 10, 4 * MIB)
    files.append(("models/hero.bam", "compressible", 10 * MIB))
    files.append(("video/intro.mp4", "incompressible", int(200 * MIB * scale)))
    files.append(("data/level1.pak", "compressible", int(160 * MIB * scale)))
    files.append(("data/level2.pak", "mixed", int(120 * MIB * scale)))
    files.append(("data/world.pak", "compressible", int(110 * MIB * scale)))
    return files


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies file counts and pak sizes")
    args = parser.parse_args()
    make = Maker(args.seed)
    rng = make.rng
    v1, v2 = os.path.join(args.out, "v1"), os.path.join(args.out, "v2")
    for d in (v1, v2):
        shutil.rmtree(d, ignore_errors=True)
    files = plan(rng, args.scale)
    generate = {"compressible": make.compressible, "incompressible": make.incompressible, "mixed": make.mixed}
    for path, kind, size in files:
        write(os.path.join(v1, path), generate[kind](size))

    # v2: 1% of the entries change (never the paks or the 10 MiB file, handled apart), a few are
    # added and removed, and level1.pak gets a 4 KiB edit in its middle.
    candidates = [f for f in files if not f[0].startswith("data/") and f[0] != "models/hero.bam"]
    changed = rng.sample(candidates, max(1, len(files) // 100))
    removed = set(p for p, _, _ in rng.sample(candidates, 3)) - set(p for p, _, _ in changed)
    new_content = {}
    for i, (path, kind, size) in enumerate(changed):
        with open(os.path.join(v1, path), "rb") as f:
            data = bytearray(f.read())
        if i % 3 == 0:  # a same-size edit in the middle
            at = len(data) // 2
            data[at : at + 64] = make.incompressible(min(64, len(data) - at))
        elif i % 3 == 1:  # regenerated
            data = bytearray(generate[kind](size))
        else:  # grown
            data += generate[kind](max(1024, size // 10))
        new_content[path] = bytes(data)
    with open(os.path.join(v1, "data/level1.pak"), "rb") as f:
        pak = bytearray(f.read())
    middle = len(pak) // 2
    pak[middle : middle + 4096] = make.compressible(4096)
    new_content["data/level1.pak"] = bytes(pak)
    added = {f"models/new/added{i}.bam": make.compressible(rng.randint(100 << 10, 900 << 10)) for i in range(3)}
    for path, _, _ in files:
        if path in removed:
            continue
        target = os.path.join(v2, path)
        if path in new_content:
            write(target, new_content[path])
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.link(os.path.join(v1, path), target)
    for path, data in added.items():
        write(os.path.join(v2, path), data)
    with open(os.path.join(v1, "models/hero.bam"), "rb") as f:
        hero = bytearray(f.read())
    hero[5 * MIB : 5 * MIB + 100] = make.incompressible(100)
    write(os.path.join(args.out, "edit10m.bin"), bytes(hero))
    with open(os.path.join(args.out, "changed.txt"), "w") as f:
        for path in sorted(new_content):
            f.write(f"changed {path}\n")
        for path in sorted(added):
            f.write(f"added {path}\n")
        for path in sorted(removed):
            f.write(f"removed {path}\n")


if __name__ == "__main__":
    main()

"""Fixtures of the mfarchive tests: asset trees, archives packed from them, and the `mf` binary (only
to publish release repositories for the update tests; the package itself never runs it)."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

import mfarchive

REPO_ROOT = Path(__file__).resolve().parents[2]


def noise(size: int, seed: int) -> bytes:
    """Incompressible bytes (stored raw by `Compression::Auto`)."""
    return random.Random(seed).randbytes(size)


def text(size: int, seed: int) -> bytes:
    """Compressible, varied text."""
    rng = random.Random(seed)
    words = [b"tile", b"sprite", b"level", b"score", b"enemy", b"jump", b"music", b"shader"]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
    return bytes(out[:size])


TREE = {
    "readme.txt": b"hello mf\n",
    "scripts/main.py": text(40_000, 1),
    "textures/wall.png": noise(70_000, 2),
    "levels/one/map.json": text(700_000, 3),
    "levels/two/map.json": text(5_000, 4),
    "empty.dat": b"",
}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "assets", TREE)


@pytest.fixture
def packed(tmp_path: Path, tree: Path) -> Path:
    out = tmp_path / "assets.mf"
    assert mfarchive.pack(tree, out) == len(TREE)
    return out


@pytest.fixture(scope="session")
def mf_bin() -> Path:
    """The `mf` binary: $MF_BIN, or the workspace's debug build (scripts/test builds it first)."""
    candidates = [os.environ.get("MF_BIN")]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    candidates += [str(target / "debug" / "mf"), shutil.which("mf")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail("no mf binary: build it (cargo build -p mf-cli) or set MF_BIN", pytrace=False)

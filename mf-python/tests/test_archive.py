"""Reading archives: the mapping API, entries, whole reads, zero-copy views, entry files."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

import mfarchive
from conftest import TREE, noise, text, write_tree


def test_pack_then_read_every_entry_back(packed: Path) -> None:
    with mfarchive.open(packed) as archive:
        assert archive.format == "mf" and len(archive) == len(TREE)
        assert archive.names() == sorted(TREE)
        assert [entry.path for entry in archive] == sorted(TREE)
        for name, data in TREE.items():
            assert name in archive
            entry = archive[name]
            assert (entry.path, entry.size, entry.mode) == (name, len(data), 0o644)
            assert archive.read(name) == data
            assert archive.read(entry) == data
        assert archive.total_size == sum(map(len, TREE.values()))
        assert "nope" not in archive and 42 not in archive
        assert archive.get("nope") is None and archive.get("nope", 7) == 7
        assert archive.verify() == []
    assert archive.closed
    with pytest.raises(ValueError, match="closed"):
        archive.read("readme.txt")


def test_whole_reads_of_every_size_and_compression_ratio(tmp_path: Path) -> None:
    # read() decodes into the bytes object directly unless an entry's size is implausible for its
    # stored bytes (over 32x): zeros compress far beyond that and take the growing path. Small solid
    # entries around them share frames; the big ones span many frames, some with the GIL released.
    files = {
        "zeros.bin": bytes(3_000_000),
        "big.txt": text(2_500_000, 7),
        "noise.bin": noise(300_000, 8),
        **{f"small/{i:02}.txt": text(200 + 700 * i, 20 + i) for i in range(30)},
    }
    out = tmp_path / "sizes.mf"
    mfarchive.pack(write_tree(tmp_path / "sizes", files), out)
    with mfarchive.open(out) as archive:
        zeros = archive["zeros.bin"]
        assert zeros.is_compressed and zeros.size > 32 * zeros.stored_size
        for _ in range(2):
            for entry in archive:
                assert archive.read(entry) == files[entry.path], entry.path
        for name in reversed(sorted(files)):
            assert archive.read(name) == files[name], name


def test_entry_metadata_tells_how_the_entry_is_stored(packed: Path) -> None:
    with mfarchive.open(packed) as archive:
        png = archive["textures/wall.png"]  # precompressed extension: stored as is
        assert (png.compression, png.is_compressed, png.stored_size) == ("none", False, png.size)
        level = archive["levels/one/map.json"]
        assert level.compression == "zstd" and level.is_compressed and level.stored_size < level.size / 2
        assert level.mtime is None  # not recorded by default, as `mf pack`
        assert not level.is_encrypted
        assert "levels/one/map.json" in repr(level)


def test_a_missing_entry_is_a_key_error_naming_it(packed: Path) -> None:
    with mfarchive.open(packed) as archive:
        with pytest.raises(mfarchive.NotFoundError) as caught:
            archive["levels/three/map.json"]
        assert isinstance(caught.value, KeyError)
        assert caught.value.entry == "levels/three/map.json"
        assert caught.value.file == str(packed)
        with pytest.raises(KeyError):
            archive.read("levels")
        with pytest.raises(TypeError):
            archive.read(3)  # type: ignore[arg-type]


def test_read_view_is_a_zero_copy_view_that_outlives_the_archive(packed: Path) -> None:
    archive = mfarchive.open(packed)
    view = archive.read_view("textures/wall.png")
    assert isinstance(view, memoryview) and view.readonly and view.nbytes == len(TREE["textures/wall.png"])
    assert view == TREE["textures/wall.png"]
    second = archive.read_view("textures/wall.png")
    # Both views show the same bytes of the mapping: no copy was made.
    assert view.obj is not second.obj and bytes(view[:16]) == bytes(second[:16])
    archive.close()
    assert bytes(view[-100:]) == TREE["textures/wall.png"][-100:]  # still mapped
    with pytest.raises(TypeError):
        view[0] = 1  # type: ignore[index]
    with mfarchive.open(packed) as archive:
        with pytest.raises(mfarchive.NotRawError, match="levels/one/map.json"):
            archive.read_view("levels/one/map.json")
        assert archive.read_view("empty.dat") == b""


def test_entry_file_reads_seeks_and_wraps_like_a_file(packed: Path) -> None:
    data = TREE["levels/one/map.json"]
    with mfarchive.open(packed) as archive:
        raw = archive.open_entry("levels/one/map.json")
        assert isinstance(raw, io.RawIOBase) and raw.seekable() and raw.readable() and not raw.writable()
        assert raw.name == "levels/one/map.json" and raw.size == len(data)
        assert raw.read(10) == data[:10] and raw.tell() == 10
        assert raw.seek(-5, os.SEEK_END) == len(data) - 5 and raw.read() == data[-5:]
        assert raw.read(10) == b""
        raw.seek(300_000)
        buffer = bytearray(70_000)
        assert raw.readinto(buffer) == 70_000 and buffer == data[300_000:370_000]
        view = memoryview(bytearray(10))
        raw.seek(1)
        assert raw.readinto(view[2:6]) == 4 and bytes(view[2:6]) == data[1:5]
        raw.seek(len(data) + 10)
        assert raw.read(5) == b""
        with pytest.raises(ValueError):
            raw.seek(-1)
        buffered = io.BufferedReader(archive.open_entry("levels/one/map.json"))
        assert buffered.readline() == data.split(b"\n")[0] + b"\n"
        with archive.open_entry(archive["textures/wall.png"]) as f:
            assert f.read() == TREE["textures/wall.png"]
        assert f.closed
        with pytest.raises(ValueError):
            f.read()
    # Entry files keep the archive's data alive after it is closed.
    raw.seek(0)
    assert raw.readall() == data


def test_large_entry_random_reads_through_the_file_object(tmp_path: Path) -> None:
    size = 64 << 20
    rng = random.Random(7)
    # Half compressible, half not: both frame kinds, with frame boundaries every 64 KiB.
    data = text(size // 2, 8) + noise(size // 2, 9)
    out = tmp_path / "big.mf"
    with mfarchive.Writer(out, level=1, frame_size=64 << 10) as writer:
        writer.add("big.bin", data, compression="zstd")
    with mfarchive.open(out) as archive:
        assert archive["big.bin"].is_compressed
        f = archive.open_entry("big.bin")
        for _ in range(300):
            offset = rng.randrange(size)
            length = rng.choice([1, 17, 4096, 65_536, 65_537, 300_000])
            f.seek(offset)
            assert f.read(length) == data[offset : offset + length], (offset, length)
        f.seek(0)
        assert f.read() == data
        assert archive.read("big.bin") == data


def test_threads_sharing_one_archive_read_correctly(packed: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with mfarchive.open(packed) as archive:

        def read_everything(seed: int) -> bool:
            rng = random.Random(seed)
            names = list(TREE)
            for _ in range(40):
                name = rng.choice(names)
                if archive.read(name) != TREE[name]:
                    return False
                with archive.open_entry(name) as f:
                    offset = rng.randrange(len(TREE[name]) + 1)
                    f.seek(offset)
                    if f.read(50_000) != TREE[name][offset : offset + 50_000]:
                        return False
            return True

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(read_everything, range(32)))

"""Bad input: damaged and truncated archives raise exceptions naming file, entry and offset."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import mfarchive
from conftest import TREE


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_compressed_entry_names_entry_and_offset(packed: Path) -> None:
    with mfarchive.open(packed) as archive:
        entry = archive["levels/one/map.json"]
    flip(packed, entry.offset + entry.stored_size // 2)
    with mfarchive.open(packed) as archive:
        with pytest.raises(mfarchive.CorruptError) as caught:
            archive.read("levels/one/map.json")
        error = caught.value
        assert error.file == str(packed) and error.entry == "levels/one/map.json"
        assert error.offset is not None and entry.offset <= error.offset < entry.offset + entry.stored_size
        assert "levels/one/map.json" in str(error) and str(error.offset) in str(error)
        assert archive.read("scripts/main.py") == TREE["scripts/main.py"]  # the others still read
        problems = archive.verify()
        assert [p.entry for p in problems] == ["levels/one/map.json"]
        assert all(isinstance(p, mfarchive.CorruptError) for p in problems)
        with pytest.raises(mfarchive.CorruptError):
            archive.open_entry("levels/one/map.json").read()


def test_a_damaged_raw_entry_fails_its_checksum(packed: Path) -> None:
    with mfarchive.open(packed) as archive:
        entry = archive["textures/wall.png"]
    flip(packed, entry.offset + 10)
    with mfarchive.open(packed) as archive:
        with pytest.raises(mfarchive.CorruptError, match="checksum") as caught:
            archive.read("textures/wall.png")
        assert caught.value.entry == "textures/wall.png"
        with pytest.raises(mfarchive.CorruptError):
            archive.read_view("textures/wall.png")
        assert archive.read_view("textures/wall.png", verify=False)[10] != TREE["textures/wall.png"][10]


@pytest.mark.parametrize("keep", [0, 10, 100, 1000, -40])
def test_a_truncated_archive_is_refused_at_open(packed: Path, keep: int) -> None:
    data = packed.read_bytes()
    packed.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(mfarchive.CorruptError) as caught:
        mfarchive.open(packed)
    assert caught.value.file == str(packed)
    assert caught.value.offset is not None


def test_not_an_archive_and_missing_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes(b"just some text, long enough to have a header and a footer " * 10)
    with pytest.raises(mfarchive.NotAnArchiveError) as caught:
        mfarchive.open(text)
    assert caught.value.offset == 0 and isinstance(caught.value, mfarchive.CorruptError)
    with pytest.raises(mfarchive.MfIOError) as missing:
        mfarchive.open(tmp_path / "missing.mf")
    assert isinstance(missing.value, OSError) and missing.value.errno == errno.ENOENT
    assert missing.value.file == str(tmp_path / "missing.mf")

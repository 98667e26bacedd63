"""extract(): the library's safe extraction."""

from __future__ import annotations

from pathlib import Path

import pytest

import mfarchive
from conftest import TREE


def test_extract_everything_then_a_selection(packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with mfarchive.open(packed) as archive:
        assert archive.extract(out) == len(TREE)
        for name, data in TREE.items():
            assert (out / name).read_bytes() == data
        some = tmp_path / "some"
        assert archive.extract(some, ["levels/", "readme.txt"]) == 3
        assert sorted(str(p.relative_to(some)) for p in some.rglob("*") if p.is_file()) == [
            "levels/one/map.json",
            "levels/two/map.json",
            "readme.txt",
        ]
        with pytest.raises(mfarchive.NotFoundError, match="no entry or directory 'level'"):
            archive.extract(tmp_path / "none", ["level"])
        assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())


def test_extract_refuses_to_overwrite_before_writing_anything(packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "levels/two").mkdir(parents=True)
    (out / "levels/two/map.json").write_bytes(b"mine")
    with mfarchive.open(packed) as archive:
        with pytest.raises(mfarchive.ExistsError) as caught:
            archive.extract(out)
        assert isinstance(caught.value, FileExistsError) and caught.value.entry == "levels/two/map.json"
        assert (out / "levels/two/map.json").read_bytes() == b"mine"
        assert not (out / "readme.txt").exists()
        assert archive.extract(out, overwrite=True) == len(TREE)
        assert (out / "levels/two/map.json").read_bytes() == TREE["levels/two/map.json"]


def test_extract_never_writes_through_a_symlink(packed: Path, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "levels").symlink_to(elsewhere)
    with mfarchive.open(packed) as archive:
        with pytest.raises(mfarchive.ExistsError, match="not a directory"):
            archive.extract(out)
    assert list(elsewhere.iterdir()) == []


def test_damaged_entries_fail_alone(packed: Path, tmp_path: Path) -> None:
    with mfarchive.open(packed) as archive:
        entry = archive["scripts/main.py"]
    data = bytearray(packed.read_bytes())
    data[entry.offset + entry.stored_size // 2] ^= 0x55
    packed.write_bytes(bytes(data))
    out = tmp_path / "out"
    with mfarchive.open(packed) as archive:
        with pytest.raises(mfarchive.ExtractError) as caught:
            archive.extract(out)
    error = caught.value
    # Small entries share solid frames (container 2.0): the damaged frame fails every entry that
    # shares it, and only those; the others are extracted whole.
    assert all(isinstance(f, mfarchive.CorruptError) for f in error.failures)
    assert error.written == len(TREE) - len(error.failures) >= 1
    missing = [name for name in TREE if not (out / name).exists()]  # never a partial file
    assert "scripts/main.py" in missing and len(missing) == len(error.failures)
    for name, content in TREE.items():
        if name not in missing:
            assert (out / name).read_bytes() == content

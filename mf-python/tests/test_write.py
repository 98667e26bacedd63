"""Writing: pack() as `mf pack`, the streaming Writer and its all-or-nothing output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mfarchive
from conftest import TREE


def test_pack_options_match_the_cli_rules(tmp_path: Path, tree: Path) -> None:
    out = tmp_path / "some.mf"
    count = mfarchive.pack([tree], out, exclude=["levels/two"], store=["json"], level=3, frame_size=1 << 16)
    assert count == len(TREE) - 1
    with mfarchive.open(out) as archive:
        assert "levels/two/map.json" not in archive
        assert archive["levels/one/map.json"].compression == "none"
        assert archive.read("scripts/main.py") == TREE["scripts/main.py"]
    with pytest.raises(mfarchive.InvalidOptionError):
        mfarchive.pack(tree, out, frame_size=3000)
    with pytest.raises(ValueError):
        mfarchive.pack(tree, out, level=99)
    with pytest.raises(mfarchive.InvalidOptionError):
        mfarchive.pack(tree / "readme.txt", out)


def test_pack_is_deterministic(tmp_path: Path, tree: Path) -> None:
    first, second = tmp_path / "1.mf", tmp_path / "2.mf"
    mfarchive.pack(tree, first)
    mfarchive.pack(str(tree), second)
    assert first.read_bytes() == second.read_bytes()


def test_writer_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "tool.sh"
    source.write_bytes(b"#!/bin/sh\necho hi\n" * 1000)
    source.chmod(0o755)
    out = tmp_path / "w.mf"
    with mfarchive.Writer(out) as writer:
        writer.add("a.txt", b"alpha", mtime=1_700_000_000.5)
        writer.add("b/raw.bin", bytearray(b"\x00" * 100_000), compression="store", mode=0o600)
        writer.add_file("bin/tool.sh", source)
        with pytest.raises(mfarchive.MfIOError):
            writer.add_file("missing", tmp_path / "missing")  # refused; the writer goes on
        assert len(writer) == 3 and not out.exists()  # nothing at the target before close
    assert writer.closed
    with mfarchive.open(out) as archive:
        assert archive.names() == ["a.txt", "b/raw.bin", "bin/tool.sh"]
        assert archive["a.txt"].mtime == pytest.approx(1_700_000_000.5)
        assert archive["b/raw.bin"].compression == "none" and archive["b/raw.bin"].mode == 0o600
        assert archive["bin/tool.sh"].mode == 0o755 and archive["bin/tool.sh"].is_compressed
        assert archive.read("bin/tool.sh") == source.read_bytes()


def test_an_exception_in_the_block_leaves_the_old_archive_untouched(tmp_path: Path) -> None:
    out = tmp_path / "keep.mf"
    out.write_bytes(b"the previous archive")
    with pytest.raises(RuntimeError):
        with mfarchive.Writer(out) as writer:
            writer.add("x", b"y")
            raise RuntimeError("build step failed")
    assert out.read_bytes() == b"the previous archive"
    assert sorted(os.listdir(tmp_path)) == ["keep.mf"]  # no temp file left behind
    with pytest.raises(ValueError, match="closed"):
        writer.add("z", b"")


def test_bad_entries_are_refused_and_abort_the_writer(tmp_path: Path) -> None:
    out = tmp_path / "bad.mf"
    writer = mfarchive.Writer(out)
    writer.add("ok.txt", b"fine")
    with pytest.raises(mfarchive.InvalidPathError) as caught:
        writer.add("../escape.txt", b"no")
    assert isinstance(caught.value, ValueError) and caught.value.entry == "../escape.txt"
    assert not out.exists() and os.listdir(tmp_path) == []
    writer2 = mfarchive.Writer(out)
    writer2.add("a", b"1")
    with pytest.raises(mfarchive.InvalidPathError):
        writer2.add("a", b"2")  # duplicate
    with pytest.raises(mfarchive.InvalidOptionError):
        mfarchive.Writer(out).add("a", b"", compression="lzma")  # type: ignore[arg-type]
    writer3 = mfarchive.Writer(out)
    writer3.add("a", b"1")
    writer3.abort()
    assert writer3.close() == 0 and not out.exists()

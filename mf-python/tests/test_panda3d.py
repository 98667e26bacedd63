"""Panda3D multifiles open through the same API (read-only), made here by Panda3D itself."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from panda3d import core  # the suite runs in the Panda3D venv (scripts/test)

import mfarchive
from conftest import noise, text

FILES = {
    "models/box.egg": text(300_000, 11),
    "textures/box.png": noise(20_000, 12),
    "readme.txt": b"a multifile\n",
}


def make_multifile(path: Path, password: str | None = None) -> None:
    multifile = core.Multifile()
    assert multifile.openWrite(core.Filename.fromOsSpecific(str(path)))
    if password is not None:
        multifile.setEncryptionFlag(True)
        multifile.setEncryptionPassword(password)
    for name, data in FILES.items():
        stream = core.StringStream(data)
        compression = 6 if name.endswith(".egg") else 0
        multifile.addSubfile(name, stream, compression)
        multifile.flush()
    multifile.close()


def test_a_multifile_reads_like_an_mf_archive(tmp_path: Path) -> None:
    path = tmp_path / "game.mf"
    make_multifile(path)
    with mfarchive.open(path) as archive:
        assert archive.format == "panda3d" and archive.names() == sorted(FILES)
        assert archive["models/box.egg"].compression == "zlib"
        assert archive["textures/box.png"].compression == "none"
        for name, data in FILES.items():
            assert archive.read(name) == data
        assert archive.read_view("textures/box.png") == FILES["textures/box.png"]
        with pytest.raises(mfarchive.NotRawError):
            archive.read_view("models/box.egg")
        egg = FILES["models/box.egg"]
        f = io.BufferedReader(archive.open_entry("models/box.egg"))
        rng = random.Random(3)
        for _ in range(50):
            offset = rng.randrange(len(egg))
            f.seek(offset)
            assert f.read(1000) == egg[offset : offset + 1000]
        assert archive.verify() == []
        assert archive.extract(tmp_path / "out") == 3
        assert (tmp_path / "out/models/box.egg").read_bytes() == egg


def test_encrypted_subfiles_need_the_password(tmp_path: Path) -> None:
    path = tmp_path / "secret.mf"
    make_multifile(path, password="opensesame")
    with mfarchive.open(path) as archive:
        entry = archive["readme.txt"]
        assert entry.is_encrypted
        with pytest.raises(mfarchive.PasswordError) as caught:
            archive.read("readme.txt")
        assert caught.value.entry == "readme.txt"
        with pytest.raises(mfarchive.PasswordError):
            archive.extract(tmp_path / "out")
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with mfarchive.open(path, password="opensesame") as archive:
        assert archive.read("models/box.egg") == FILES["models/box.egg"]
    with mfarchive.open(path, password="wrong") as archive:
        with pytest.raises(mfarchive.PasswordError):
            archive.read("readme.txt")

"""Patches (diff, apply, patch_info) and updates from a local release repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import mfarchive
from conftest import TREE, text, write_tree


@pytest.fixture
def versions(tmp_path: Path, tree: Path) -> tuple[Path, Path]:
    v1, v2 = tmp_path / "v1.mf", tmp_path / "v2.mf"
    mfarchive.pack(tree, v1)
    changed = dict(TREE)
    changed["scripts/main.py"] = TREE["scripts/main.py"].replace(b"jump", b"leap", 3)
    changed["levels/three/map.json"] = text(9_000, 30)
    del changed["levels/two/map.json"]
    mfarchive.pack(write_tree(tmp_path / "assets2", changed), v2)
    return v1, v2


def test_diff_apply_round_trip(tmp_path: Path, versions: tuple[Path, Path]) -> None:
    v1, v2 = versions
    patch = tmp_path / "v1-v2.mfp"
    report = mfarchive.diff(v1, v2, patch, memory_limit="256M")
    assert report["kind"] == "archive" and report["byte_identical"]
    # levels/two was removed and levels/three added: the diff may pair them as a rename-with-changes.
    assert report["counts"]["unchanged"] == 4 and report["counts"]["renamed"] == 0
    touched = {e["path"] for e in report["entries"] if e["change"] in ("changed", "added")}
    assert touched == {"scripts/main.py", "levels/three/map.json"}
    assert report["patch_len"] == patch.stat().st_size < v2.stat().st_size / 5
    info = mfarchive.patch_info(patch)
    assert info["counts"] == report["counts"] and info["new_xxh3"] == report["new_xxh3"]
    assert info["patch_len"] == report["patch_len"] and len(info["entries"]) == len(report["entries"])
    rebuilt = tmp_path / "rebuilt.mf"
    outcome = mfarchive.apply(patch, v1, rebuilt)
    assert outcome["byte_identical"] and outcome["entries"] == 6 and outcome["format"] == "mf"
    assert rebuilt.read_bytes() == v2.read_bytes()
    stat = mfarchive.diff(v1, v2, None)
    assert stat["counts"] == report["counts"]  # a report only: nothing written


def test_apply_to_the_wrong_base_changes_nothing(tmp_path: Path, versions: tuple[Path, Path]) -> None:
    v1, v2 = versions
    patch = tmp_path / "p.mfp"
    mfarchive.diff(v1, v2, patch)
    target = tmp_path / "out.mf"
    target.write_bytes(b"untouched")
    with pytest.raises(mfarchive.WrongBaseError) as caught:
        mfarchive.apply(patch, v2, target)
    assert caught.value.file == str(v2)
    assert target.read_bytes() == b"untouched"
    damaged = bytearray(patch.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    patch.write_bytes(bytes(damaged))
    with pytest.raises(mfarchive.CorruptError):
        mfarchive.apply(patch, v1, target)
    assert target.read_bytes() == b"untouched"
    with pytest.raises(mfarchive.NotAnArchiveError):
        mfarchive.patch_info(v1)


def contents(archive: Path) -> dict[str, bytes]:
    with mfarchive.open(archive) as opened:
        return {entry.path: opened.read(entry) for entry in opened}


def publish(mf_bin: Path, repo: Path, key: Path, version: str, source: Path) -> None:
    subprocess.run(
        [str(mf_bin), "release", "add", str(repo), version, str(source), "--sign", str(key)],
        check=True,
        capture_output=True,
    )


def test_update_an_archive_and_a_folder_from_a_local_repository(
    tmp_path: Path, versions: tuple[Path, Path], mf_bin: Path
) -> None:
    v1, v2 = versions
    subprocess.run([str(mf_bin), "keygen", "release"], cwd=tmp_path, check=True, capture_output=True)
    key, pub = tmp_path / "release.key", tmp_path / "release.pub"
    repo = tmp_path / "repo"
    publish(mf_bin, repo, key, "1.0", v1)

    game = tmp_path / "game.mf"
    first = mfarchive.update(repo, pub, game)
    assert first["installed"] == {"state": "missing"} and first["target"] == "1.0" and first["changed"]
    assert game.read_bytes() == v1.read_bytes()

    publish(mf_bin, repo, key, "1.1", v2)
    check = mfarchive.update(str(repo), pub.read_text().strip(), game, check=True)
    assert check["check_only"] and [p["kind"] for p in check["route"]] == ["patch"]
    assert game.read_bytes() == v1.read_bytes()

    calls: list[tuple[int, int, str]] = []
    second = mfarchive.update(repo, pub, game, progress=lambda done, total, label: calls.append((done, total, label)))
    assert second["installed"] == {"state": "version", "version": "1.0"} and second["target"] == "1.1"
    # Patched in place: the new version's entries, written where they changed, not its exact bytes.
    assert second["in_place"] and 0 < second["bytes_written"] < v2.stat().st_size
    assert game.read_bytes() != v2.read_bytes() and contents(game) == contents(v2)
    assert calls and calls[-1][0] == calls[-1][1] == check["route_bytes"] and "patch 1.0 -> 1.1" in calls[-1][2]
    assert mfarchive.update(repo, pub, game)["route"] == []
    assert mfarchive.update(repo, pub, game, verify=True)["route"] == []

    rebuilt = tmp_path / "rebuilt.mf"
    rebuilt.write_bytes(v1.read_bytes())
    outcome = mfarchive.update(repo, pub, rebuilt, rebuild=True)
    assert not outcome["in_place"] and rebuilt.read_bytes() == v2.read_bytes()

    folder = tmp_path / "install"
    folder.mkdir()
    outcome = mfarchive.update(repo, pub, folder, to="1.0")
    assert outcome["files_written"] == len(TREE) and (folder / "readme.txt").read_bytes() == TREE["readme.txt"]
    outcome = mfarchive.update(repo, pub, folder)
    assert outcome["target"] == "1.1" and not (folder / "levels/two/map.json").exists()
    assert (folder / "levels/three/map.json").read_bytes() == text(9_000, 30)


def test_update_refuses_an_untrusted_repository(tmp_path: Path, versions: tuple[Path, Path], mf_bin: Path) -> None:
    v1, _ = versions
    for name in ("release", "other"):
        subprocess.run([str(mf_bin), "keygen", name], cwd=tmp_path, check=True, capture_output=True)
    repo = tmp_path / "repo"
    publish(mf_bin, repo, tmp_path / "release.key", "1.0", v1)
    game = tmp_path / "game.mf"
    with pytest.raises(mfarchive.SignatureError):
        mfarchive.update(repo, tmp_path / "other.pub", game)
    assert not game.exists()
    with pytest.raises(mfarchive.InvalidOptionError, match="allow_unsigned"):
        mfarchive.update(repo, None, game)
    with pytest.raises(mfarchive.NotFoundError):
        mfarchive.update(repo, tmp_path / "release.pub", game, to="9.9")
    with pytest.raises(mfarchive.MfError):
        mfarchive.update(tmp_path / "no-repo", tmp_path / "release.pub", game)

"""The Panda3D example (examples/python/panda3d_load.py) runs in the Panda3D venv and loads its model and
texture from an mf archive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "python" / "panda3d_load.py"


def test_the_example_loads_a_textured_model_from_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "game.mf"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo", str(archive)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["model"] == "crate.egg"
    assert report["geom_nodes"] == 1 and report["vertices"] == 4
    assert report["bounds"] == [[-1.0, 0.0, -1.0], [1.0, 0.0, 1.0]]
    assert report["texture"] == {"name": "crate", "size": [64, 32]}
    direct = report["direct_texture"]
    assert direct["size"] == [64, 32] and direct["left"] == [1.0, 0.0, 0.0] and direct["right"] == [0.0, 0.0, 1.0]

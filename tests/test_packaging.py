"""The wheel carries everything the embedded default needs: configs, teacher catalog, search spaces.

Built from this checkout with the environment's own setuptools (no download), installed into a
scratch folder without dependencies, then used from a directory that has no search_spaces/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_search_spaces_and_finds_them_by_name(tmp_path: Path) -> None:
    wheel_dir, target, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = wheel_dir.glob("mtard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"mtard/search_spaces/{p.name}" for p in (ROOT / "search_spaces").glob("*.yaml")}
    assert shipped and shipped <= names
    assert {"mtard/teachers.yaml", "mtard/configs/digits_mtard.yaml"} <= names

    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    elsewhere.mkdir()
    probe = ("from mtard.search.space import load_space; s = load_space('digits_tiny'); "
             "print(s.source); print(s.fixed_config().data.name)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(target)}, timeout=120)
    assert out.returncode == 0, out.stderr
    source, dataset = out.stdout.split()
    assert Path(source) == target / "mtard" / "search_spaces" / "digits_tiny.yaml"
    assert dataset == "digits"

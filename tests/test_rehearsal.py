"""The cloud workflow rehearsed on one machine: fake multi-node cluster, `ray job submit`, checks.

`launch/rehearse.sh` does the real work and exits non-zero when any check fails (job status,
pareto.csv written, trial workers on >= 2 fake worker nodes and never on the head, no leaked
placement group, teachers staged in the storage and fetched by the fake nodes, corrupted copies
refused). It submits tests/rehearsal/space.yaml: two trials of a tiny MLP student whose tiny
teachers are already in the driver's teacher cache (trained once per test session), which the
fake nodes do not share (they start with an empty one). Training a missing teacher on first use
is tested in test_teachers.py; `launch/rehearse.sh` alone rehearses the shipped digits_tiny.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_catalog_text

ROOT = Path(__file__).resolve().parents[1]
SPACE = "tests/rehearsal/space.yaml"


def test_the_rehearsal_catalog_is_the_tiny_test_catalog() -> None:
    # The job reads the committed copy; the session's teachers were trained from this text.
    assert (ROOT / "tests" / "rehearsal" / "catalog.yaml").read_text() == tiny_catalog_text()


@pytest.mark.slow
def test_rehearsal_end_to_end(_trained_teacher_store: tuple[Path, Path]) -> None:
    _, driver_cache = _trained_teacher_store
    # The scripts run `ray` and `mtard`; use the ones of the environment under test, which CI
    # (like the README) installs into .venv without activating it.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MTARD_TEACHERS": str(driver_cache), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(
        ["bash", "launch/rehearse.sh", "--space", SPACE, "--timeout", "600"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    tail = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, tail
    assert "pareto.csv" in proc.stdout + proc.stderr and "REHEARSAL PASSED" in proc.stdout + proc.stderr, tail

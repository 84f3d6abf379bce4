"""The cloud workflow rehearsed on one machine: fake multi-node cluster, `ray job submit`, checks.

`launch/rehearse.sh` does the real work and exits non-zero when any check fails (job status,
pareto.csv written, trial workers on >= 2 fake worker nodes and never on the head, no leaked
placement group, teachers staged in the storage and fetched by the fake nodes, corrupted copies
refused). Two trials keep it to a few minutes; the four digits teachers are trained once by the
search driver inside the submitted job, as a new user's first search would, into this test's
teacher directory, which the fake nodes do not share (they start with an empty one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_rehearsal_end_to_end(tmp_path: Path) -> None:
    # The scripts run `ray` and `mtard`; use the ones of the environment under test, which CI
    # (like the README) installs into .venv without activating it.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MTARD_TEACHERS": str(tmp_path / "teachers"),
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(
        ["bash", "launch/rehearse.sh", "--space", "digits_tiny", "--timeout", "1200", "--", "--num-samples", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    tail = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, tail
    assert "pareto.csv" in proc.stdout + proc.stderr, tail

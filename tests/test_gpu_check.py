"""benchmarks/gpu_check.sh: its plumbing, on a machine without CUDA (the GPU parts say so and skip)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_script_parses_and_asks_for_an_output_directory() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    usage = subprocess.run(["bash", str(SCRIPT)], check=False, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the real check runs there, not this plumbing test")
def test_quick_run_without_cuda_writes_its_files_and_skips_the_gpu_parts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "--quick"], check=False, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cuda"] == 0 and summary["quick"] == 1
    assert summary["tests"]["status"] == "ok" and "no CUDA device" in (out / "tests.log").read_text()
    assert summary["step_cost"]["status"] == "ok" and summary["bf16"]["status"] == "ok"
    assert summary["search"]["status"].startswith("skipped: no CUDA")
    figures = json.loads((out / "step_cost.json").read_text())["results"]
    assert [(r["setting"], r["variant"]) for r in figures] == [("digits", "fp32"), ("digits", "bf16")]
    assert all(r["median_ms"]["step"] > 0 and r["step_over_synced"] > 0 for r in figures)
    bf16 = json.loads((out / "bf16_robustness.json").read_text())
    assert set(bf16["pgd_acc"]) == {"fp32", "bf16", "bf16_attack_fp32_verdict"} and bf16["samples"] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["env.txt", "summary.json", "tests.log", "step_cost.log", "step_cost.json", "bf16_robustness.log", "bf16_robustness.json", "search.log"])

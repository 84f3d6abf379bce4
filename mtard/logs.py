"""Per-epoch metrics of a plain run: JSONL (exact), CSV (spreadsheets) and TensorBoard scalars.

Searches do not use this: Ray Tune's own logger writes each trial's scalars.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path


def _group(key: str) -> str:
    """TensorBoard tag: validation metrics under val/, loss parts and schedule under train/."""
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    return f"train/{key}"


class MetricsLog:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self._writer = None

    def write(self, metrics: dict) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        new = not self.csv.exists()
        # The first row fixes the columns; a later odd row (e.g. a divergence notice) keeps them.
        fields = list(metrics) if new else self.csv.open().readline().strip().split(",")
        with open(self.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(metrics)
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tb"))
        step = int(metrics["epoch"])
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(_group(key), value, step)
        self._writer.flush()


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

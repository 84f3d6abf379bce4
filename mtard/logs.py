"""Per-epoch metrics of a plain run: JSONL (exact), CSV (spreadsheets) and TensorBoard scalars.

Searches do not use this: Ray Tune's own logger writes each trial's scalars.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from mtard.storage import append_line, drop_torn_lines, read_json_lines


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
        append_line(self.jsonl, json.dumps(metrics))
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

    def repair(self, checkpointed: dict) -> str | None:
        """On --resume: drop lines of metrics.jsonl torn by a crash, and write the checkpoint's epoch
        again if its line was among them (the checkpoint is saved before its line). Says what it did."""
        if not drop_torn_lines(self.jsonl):
            return None
        epoch = checkpointed.get("epoch")
        if epoch is not None and not any(row.get("epoch") == epoch for row in read_json_lines(self.jsonl)):
            self.write(checkpointed)
            return f"{self.jsonl}: a line torn by a crash was replaced with epoch {epoch}'s metrics from the checkpoint"
        return f"{self.jsonl}: removed a line torn by a crash"


def read_metrics(run_dir: Path) -> list[dict]:
    return read_json_lines(run_dir / "metrics.jsonl")

"""A training run's folder: checked before any work starts, so nothing computed is lost.

`mtard train` writes one run into one folder (`config.yaml`, `checkpoint.pt`,
`metrics.jsonl`, TensorBoard events). Starting a second run in the same folder would
replace the first one's checkpoint and mix two runs in its metrics, and resuming with
another config would continue a checkpoint under settings it was not trained with.
`check_run_dir` refuses both, and an unwritable folder, before the first epoch.

The file names of a run's folder are defined here once (`CHECKPOINT_FILE`, `BEST_FILE`), and
`RunFolder` says where each file of a Ray Train run or a Tune trial is in the storage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtard.config import TrainConfig, config_from_dict, read_yaml, to_dict
from mtard.errors import MtardError
from mtard.storage import join

CHECKPOINT_FILE = "checkpoint.pt"  # a run's checkpoint inside its folder (plain runs, Ray Train, Tune)
#: The selected epoch's checkpoint, in the run's directory beside the last checkpoint(s).
BEST_FILE = "best.pt"
TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's kept checkpoints
# Checkpoint folders Ray keeps per Ray Train run or Tune trial: resuming needs only the latest;
# keeping all would cost GBs per CIFAR run. `best.pt` is kept apart from them.
CHECKPOINTS_TO_KEEP = 2

#: Reported every epoch: the epoch the run stands for so far (`eval.select`) and its validation
#: numbers. A search takes its objectives from the selected epoch by naming these.
SELECTION_METRICS = ("selected_epoch", "selected_score", "selected_val_clean_acc", "selected_val_pgd_acc")
#: Metrics every run reports every epoch (`mtard.loop.fit`): what a search may take as an objective.
#: The selected_* metrics are the selected epoch's values (eval.select: best); under `last` they equal the epoch's own.
EPOCH_METRICS = (
    "val_clean_acc", "val_pgd_acc", "selected_val_clean_acc", "selected_val_pgd_acc", "selected_score",
    "loss", "train_time_s", "samples_per_s", "lr",
)


def failure_report(epoch: int, error: str, *, diverged: bool) -> dict:
    """What a run reports when it ends without a result: `diverged: 1` (the loss became NaN/inf) or
    `failed: 1` (an mtard error), the message, and NaN for every epoch metric, so no objective is ever
    missing from it, only not a number. Both causes are deterministic: a restart would end the same way."""
    nan = float("nan")
    return {"epoch": epoch, "diverged" if diverged else "failed": 1.0, "error": error, **{m: nan for m in (*EPOCH_METRICS, *SELECTION_METRICS)}}

# Files that mean "this folder holds (part of) a trained run". config.yaml alone does not:
# it is written at the start, so a run that failed before its first epoch lost nothing.
RESULT_FILES = (CHECKPOINT_FILE, "metrics.jsonl", TRAIN_SNAPSHOT)


def checkpoint_dir(checkpoint: str) -> str:
    """The `checkpoint_*` folder holding a `checkpoint.pt` location (path or URI): what Tune calls a checkpoint's path."""
    return checkpoint.rsplit("/", 1)[0]


@dataclass(frozen=True)
class RunFolder:
    """Where the files of one Ray Train run or Tune trial are in the storage (a local path or a URI).

    Each kept epoch's checkpoint is `checkpoint_*/checkpoint.pt` (Ray prunes all but the newest
    few), the selected epoch's `best.pt` sits beside those folders (so pruning never removes it),
    and a Ray Train run keeps its `checkpoint_manager_snapshot.json` there too.
    """

    location: str

    @classmethod
    def of_checkpoint(cls, checkpoint: str) -> RunFolder:
        """The run that holds a `checkpoint_*/checkpoint.pt` location."""
        return cls(checkpoint_dir(checkpoint_dir(checkpoint)))

    @property
    def best(self) -> str:
        return join(self.location, BEST_FILE)

    @property
    def snapshot(self) -> str:
        return join(self.location, TRAIN_SNAPSHOT)

    def checkpoint(self, dir_name: str) -> str:
        """`checkpoint.pt` in the run's checkpoint folder `dir_name` (`checkpoint_000003`)."""
        return join(self.location, dir_name, CHECKPOINT_FILE)

# Fields that may differ from the saved config on --resume: where things are and how fast
# they run, not what is trained. `optim.epochs` may grow to train a finished run further.
RESUMABLE_FIELDS = (
    "out_dir",
    "data.root",
    "data.download",
    "data.num_workers",
    "optim.epochs",
    "eval.batch_size",
    "runtime.device",
    "runtime.bf16",
    "runtime.channels_last",
    "runtime.threads",
    "runtime.progress",
    "runtime.compile",
    "runtime.divergence_check_every",
    "scaling.*",
    # Where the teachers' files are, not which teachers: the driver re-stages them on every launch.
    "teachers.robustbench_dir",
    "teachers.staged_store",
    "teachers.staged.*",
)


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "resources":  # scaling.resources is a value, not a section
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _may_change(path: str) -> bool:
    return any(path == f or (f.endswith(".*") and path.startswith(f[:-1])) for f in RESUMABLE_FIELDS)


def config_changes(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """'field (old -> new)' for every field outside RESUMABLE_FIELDS that differs."""
    old, cur = _flatten(to_dict(saved)), _flatten(to_dict(new))
    return [f"{p} ({old[p]!r} -> {cur[p]!r})" for p in cur if not _may_change(p) and old.get(p) != cur[p]]


def _ensure_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MtardError(
            f"cannot create the run folder {run_dir} ({err.strerror}): choose another --out-dir or --name"
        ) from err
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise MtardError(f"the run folder {run_dir} is not writable: fix its permissions or choose another --out-dir")


def check_run_dir(run_dir: Path, cfg: TrainConfig, *, resume: bool) -> None:
    """Before training: the folder is writable; without --resume it holds no earlier run;
    with --resume the config matches the one the run was started with (RESUMABLE_FIELDS aside)."""
    _ensure_writable(run_dir)
    found = [name for name in RESULT_FILES if (run_dir / name).exists()]
    if not resume:
        if found:
            raise MtardError(
                f"{run_dir} already holds a run ({', '.join(found)}): continue it with --resume, "
                f"choose another --name, or delete the folder to start over"
            )
        return
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return  # nothing to compare with; the trainer says whether there is a checkpoint to resume
    try:
        saved = config_from_dict(read_yaml(saved_path))
    except MtardError as err:
        raise MtardError(f"--resume: the saved config {saved_path} cannot be read ({err}); start a new run with another --name") from err
    changes = config_changes(saved, cfg)
    if changes:
        raise MtardError(
            f"--resume: the config differs from the one {run_dir} was trained with in {', '.join(changes)}; "
            f"resume with that config ({saved_path}), or start a new run with another --name "
            f"(only {', '.join(RESUMABLE_FIELDS)} may change on resume)"
        )

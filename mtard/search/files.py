"""The layout of an experiment, `<storage>/<name>/`, and its driver-side files.

    space.yaml, base_config.yaml   the resolved space and its base config (what --resume reads)
    study.db                       the Optuna study (SQLite): optuna-dashboard sqlite:///…/study.db
    records.jsonl                  one line per finished trial (appended, fsync'ed: survives a crash)
    checkpoints.json               each trial's newest checkpoint as the driver saw it (resume reads it)
    rungs.jsonl                    MO-ASHA's rung decisions (scheduler: moasha), one line each; resume reads it
    driver.lock, driver.lease      the driver holding the experiment (mtard.search.lock)
    stop_reason.json               why the search started no more trials (budget.total, stop:), if it did
    pareto.csv/json, trials.csv,   the review (mtard.search.render), rewritten after every trial
    hypervolume.csv, review/       review/ is a TensorBoard run: the front figure, hypervolume curves
    trial-<id>/                    Tune's trial dir: result.json, progress.csv, TensorBoard curves +
                                   HParams; a direct trial's checkpoint_*/checkpoint.pt per epoch
                                   and best.pt (`ExperimentFiles.trial_run`, a `mtard.runs.RunFolder`)
    train-<id>/                    a Ray Train trial's run: checkpoint_*/checkpoint.pt per epoch, best.pt
    experiment_state-*.json, …     Tune's own state (Tuner.restore)

On a URI storage (s3://, gs://), Tune and Train write there directly; the driver-side files
live in ~/.cache/mtard/searches/<name> ($MTARD_SEARCH_CACHE) and are copied to
<storage>/<name>/ after every trial.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mtard import storage
from mtard.runs import RunFolder
from mtard.storage import atomic_write, is_uri

SPACE = "space.yaml"
BASE_CONFIG = "base_config.yaml"
STUDY = "study.db"
RECORDS = "records.jsonl"
CHECKPOINTS = "checkpoints.json"
RUNGS = "rungs.jsonl"  # MO-ASHA's decisions, appended and fsync'ed by the rung judge (mtard.search.rung_judge)
STOP_REASON = "stop_reason.json"  # written when budget.total or stop: ends the search (mtard.search.budget)
REVIEW_FILES = ("pareto.csv", "pareto.json", "trials.csv", "hypervolume.csv")
REVIEW_RUN = "review"  # TensorBoard run (sub-directory of the experiment) holding the review
VERIFIED_FILES = ("pareto_verified.json", "pareto_verified.csv")
VERIFIED_DIR = "verified"


def trial_dir_name(trial_id: str) -> str:
    """Tune's trial directory (and trial name, and a direct trial's run name): `trial-<id>`."""
    return f"trial-{trial_id}"


def trial_dirname(trial) -> str:
    """`trial_dir_name` of a Tune trial (Tune's `trial_dirname_creator`)."""
    return trial_dir_name(trial.trial_id)


def train_run_name(trial_id: str) -> str:
    """The Ray Train run of a trial that uses Ray Train: deterministic, so a restart resumes it."""
    return f"train-{trial_id}"


class ExperimentFiles:
    """The driver-side files of an experiment: a local directory, mirrored to a storage URI if any."""

    FILES = (SPACE, BASE_CONFIG, STUDY, RECORDS, CHECKPOINTS, RUNGS, STOP_REASON, *REVIEW_FILES)

    def __init__(self, storage_root: str, name: str):
        self.storage = storage_root
        self.name = name
        self.uri = storage.join(storage_root, name)
        if is_uri(storage_root):
            cache = Path(os.environ.get("MTARD_SEARCH_CACHE", "~/.cache/mtard/searches")).expanduser()
            self.local = (cache / name).resolve()
            self.remote: str | None = self.uri
        else:
            self.local = Path(self.uri)
            self.remote = None

    def trial_run(self, trial_id: str, *, ray_train: bool) -> RunFolder:
        """The folder of trial `trial_id`'s checkpoints and `best.pt`: `trial-<id>/` for a direct trial,
        `train-<id>/` (its Ray Train run) for a Ray Train trial."""
        name = train_run_name(trial_id) if ray_train else trial_dir_name(trial_id)
        return RunFolder(storage.join(self.uri, name))

    @property
    def records(self) -> Path:
        return self.local / RECORDS

    @property
    def study_url(self) -> str:
        return f"sqlite:///{(self.local / STUDY).resolve()}"

    def push(self, names=FILES, dirs=(REVIEW_RUN,)) -> None:
        if self.remote is None:
            return
        paths = [self.local / n for n in names if (self.local / n).is_file()]
        paths += [f for d in dirs if (self.local / d).is_dir() for f in sorted((self.local / d).rglob("*")) if f.is_file()]
        try:
            storage.upload(self.local, paths, self.remote)
        except Exception as err:  # an upload hiccup must not kill the search: the next push retries
            print(f"[search] warning: could not copy results to {self.remote}: {err}", file=sys.stderr)

    def pull(self) -> None:
        """On --resume from a URI: fetch the driver-side files that are not here yet."""
        if self.remote is not None:
            storage.download_missing(self.remote, self.local, self.FILES, dirs=(REVIEW_RUN,))

    # -------- why the search started no more trials

    def read_stop_reason(self) -> str:
        try:
            return str(json.loads((self.local / STOP_REASON).read_text()).get("reason", ""))
        except (OSError, ValueError, AttributeError):
            return ""

    def write_stop_reason(self, reason: str) -> None:
        atomic_write(self.local / STOP_REASON, json.dumps({"reason": reason}) + "\n")

    def clear_stop_reason(self) -> None:
        """On --resume: the search goes on (a larger budget may let it); a new reason is written if it stops again."""
        (self.local / STOP_REASON).unlink(missing_ok=True)

    # -------- each trial's newest checkpoint

    def read_checkpoints(self) -> dict[str, dict]:
        """{trial_id: {"epoch": int, "checkpoint": path/URI of checkpoint.pt}}; {} if none or unreadable."""
        try:
            data = json.loads((self.local / CHECKPOINTS).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_checkpoints(self, data: dict[str, dict]) -> None:
        atomic_write(self.local / CHECKPOINTS, json.dumps(data, indent=1, sort_keys=True) + "\n")

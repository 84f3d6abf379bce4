"""`mtard search SPACE.yaml`: a multi-objective Ray Tune + Optuna search over training runs.

One trial = one Ray Train run (`mtard.distributed.build_trainer`) driven by a plain
Tune function, the *trial driver* (the Ray 2.60 pattern): Tune reserves only the
driver; the Train controller gets the workers' placement group itself.

Layout of an experiment, `<storage>/<name>/` (local storage; see "Cloud storage"):

    space.yaml, base_config.yaml   the resolved space and its base config (what --resume reads)
    study.db                       the Optuna study (SQLite): optuna-dashboard sqlite:///…/study.db
    records.jsonl                  one line per finished trial (appended, fsync'ed: survives a crash)
    pareto.csv/json, trials.csv,   the review (mtard.search.review), rewritten after every trial
    hypervolume.csv, review/       review/ is a TensorBoard run: the front figure, hypervolume curves
    trial-<id>/                    Tune's trial dir: result.json, progress.csv, TensorBoard curves + HParams
    train-<id>/                    the trial's Ray Train run: checkpoint_*/checkpoint.pt per epoch
    experiment_state-*.json, …     Tune's own state (Tuner.restore)

Decisions worth knowing:

* Driver resources. If the cluster defines the custom resource `mtard_driver` (the
  cluster.yaml head does, and a local Ray started by `mtard search` defines it too), a
  trial driver asks for `{"CPU": 0, "mtard_driver": 0.01}`: it stays on the head and takes
  no CPU from the workers. Otherwise it asks for 0.01 CPU. `max_concurrent` (when the
  space leaves it null) = how many trials' worker groups (+ drivers) fit in the cluster's
  CPUs/GPUs, counting what the autoscaler may add, capped by num_samples.
* Objectives and failures. Every epoch reports both objectives; a diverged run reports
  NaN objectives with `diverged: 1` and ends normally. `MtardOptunaSearch` tells Optuna
  such a trial as FAIL (NaN would also become FAIL, with a warning) and a trial stopped
  before its budget as PRUNED (stock OptunaSearch would tell its truncated values as
  COMPLETE); both keep the reason as the Optuna trial's user attribute `mtard_reason`.
* The defaults trial: the base config's value of every searched field is enqueued in the
  study (`points_to_evaluate` → `study.enqueue_trial`); the define-by-run function then
  receives those values from `trial.suggest_*`, and conditional parameters whose condition
  is false are simply absent. Its Tune config carries `is_default: true`.
* Resume (`--resume <storage>/<name>`): `Tuner.restore(resume_unfinished=True,
  resume_errored=False)`. Finished trials are neither lost nor re-run; trials that were
  running continue from their last epoch checkpoint (same Train run name); errored trials
  stay errored (their Optuna trial is already FAIL; re-running them would need a new
  Optuna trial), run a new search to retry them. The searcher (and its Optuna study in
  study.db) comes back from Tune's state; `TUNE_GLOBAL_CHECKPOINT_S=2` keeps that state
  fresh. A trial whose Train run had already finished all its epochs when the driver died
  is reported from its last checkpoint without training (and its identical record is not
  appended again). Optuna trials left RUNNING by a crash (asked, but never recorded in
  Tune's state) are marked FAIL at the end. records.jsonl is read deduplicated by trial id
  (last line wins).
* Ray. `--address` (or $RAY_ADDRESS, as in a `ray job submit` job) joins that cluster;
  otherwise a new local Ray starts (`address="local"`: never another cluster found on the
  machine) and stops at the end. Trial drivers are reused between trials (`reuse_actors`):
  one process per concurrent slot imports torch once. Tune's console output is the legacy
  reporter at verbose=0 (quiet); the `[search]` lines are the live view.
* Cloud storage (s3://, gs://): Tune and Train write there directly; the driver-side files
  (study.db, records.jsonl, the review) live in ~/.cache/mtard/searches/<name>
  ($MTARD_SEARCH_CACHE) and are copied to <storage>/<name>/ after every trial.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.search.optuna import OptunaSearch

from mtard.errors import MtardError
from mtard.search.space import SearchSpace, load_space

CHECKPOINT_FILE = "checkpoint.pt"
DEFAULT_KEY = "is_default"  # Tune config key marking the enqueued defaults trial
DRIVER_RESOURCE = "mtard_driver"
DRIVER_SHARE = 0.01  # of mtard_driver (or of a CPU when the cluster has no mtard_driver)
LOCAL_DRIVER_UNITS = 1000  # mtard_driver units a local Ray started by `mtard search` offers
TUNE_MAX_FAILURES = 0  # Train already restarts failed worker groups; a driver error is deterministic
# Tune's bookkeeping keys: not part of a trial's metrics record.
TUNE_KEYS = {
    "config", "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
    "iterations_since_restore", "experiment_tag", "should_checkpoint",
}


# ---------------------------------------------------------------- storage helpers


def _is_uri(path: str) -> bool:
    return "://" in path


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if _is_uri(base) else str(Path(base, *parts))


def _read_text(location: str) -> str | None:
    """A small file from a local path or a storage URI; None if it does not exist."""
    if not _is_uri(location):
        path = Path(location)
        return path.read_text() if path.is_file() else None
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def train_run_state(train_storage: str, run_name: str) -> dict | None:
    """The last checkpoint of a Ray Train run, from its checkpoint_manager_snapshot.json.

    Returns {"metrics": last checkpointed epoch's metrics, "checkpoint": path/URI of its
    checkpoint.pt, "epochs": [epoch of each checkpoint], "train_time_s": summed}, or None.
    """
    text = _read_text(_join(train_storage, run_name, "checkpoint_manager_snapshot.json"))
    if not text:
        return None
    try:
        snap = json.loads(text)
        latest = snap.get("latest_checkpoint_result") or {}
        results = snap.get("checkpoint_results") or []
    except (ValueError, AttributeError):
        return None
    if not latest.get("checkpoint_dir_name"):
        return None
    metrics = dict(latest.get("metrics") or {})
    all_metrics = [r.get("metrics") or {} for r in results]
    return {
        "metrics": metrics,
        "checkpoint": _join(train_storage, run_name, latest["checkpoint_dir_name"], CHECKPOINT_FILE),
        "epochs": [m.get("epoch") for m in all_metrics],
        "train_time_s": float(sum(m.get("train_time_s", 0.0) or 0.0 for m in all_metrics)),
    }


class ExperimentFiles:
    """The driver-side files of an experiment: a local directory, mirrored to a storage URI if any."""

    FILES = ("space.yaml", "base_config.yaml", "study.db", "records.jsonl", "pareto.csv", "pareto.json", "trials.csv", "hypervolume.csv")

    def __init__(self, storage: str, name: str):
        self.storage = storage
        self.name = name
        self.uri = _join(storage, name)
        if _is_uri(storage):
            cache = Path(os.environ.get("MTARD_SEARCH_CACHE", "~/.cache/mtard/searches")).expanduser()
            self.local = (cache / name).resolve()
            self.remote: str | None = self.uri
        else:
            self.local = Path(self.uri)
            self.remote = None

    def push(self, names=FILES, dirs=("review",)) -> None:
        if self.remote is None:
            return
        import pyarrow.fs

        try:
            fs, root = pyarrow.fs.FileSystem.from_uri(self.remote)
            fs.create_dir(root, recursive=True)  # a no-op on object stores; needed for file://
            local = pyarrow.fs.LocalFileSystem()
            paths = [self.local / n for n in names if (self.local / n).is_file()]
            paths += [f for d in dirs if (self.local / d).is_dir() for f in sorted((self.local / d).rglob("*")) if f.is_file()]
            for path in paths:
                rel = path.relative_to(self.local).as_posix()
                if "/" in rel:
                    fs.create_dir(f"{root}/{rel.rsplit('/', 1)[0]}", recursive=True)
                pyarrow.fs.copy_files(str(path), f"{root}/{rel}", source_filesystem=local, destination_filesystem=fs)
        except Exception as err:  # an upload hiccup must not kill the search: the next push retries
            print(f"[search] warning: could not copy results to {self.remote}: {err}", file=sys.stderr)

    def pull(self) -> None:
        """On --resume from a URI: fetch the driver-side files that are not here yet."""
        if self.remote is None:
            return
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(self.remote)
        self.local.mkdir(parents=True, exist_ok=True)
        local = pyarrow.fs.LocalFileSystem()
        wanted = [f"{root}/{n}" for n in self.FILES]
        try:  # the review's TensorBoard run and its state, so its curves continue
            wanted += [i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(f"{root}/review", recursive=True)) if i.is_file]
        except (FileNotFoundError, OSError):
            pass
        for remote in wanted:
            target = self.local / remote[len(root) + 1:]
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                pyarrow.fs.copy_files(remote, str(target), source_filesystem=fs, destination_filesystem=local)
            except (FileNotFoundError, OSError):
                pass


# ---------------------------------------------------------------- records


def read_records(path: Path) -> list:
    """records.jsonl, deduplicated by trial id (the last line of a trial wins; order of first appearance)."""
    from mtard.search.review import TrialRecord

    by_id: dict[str, Any] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write
            by_id[data["trial_id"]] = TrialRecord.from_dict(data)
    return list(by_id.values())


def append_record(path: Path, record) -> None:
    line = json.dumps(_json_safe(record.to_dict()), ensure_ascii=False)
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"  # a crash mid-write: start on a fresh line
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _same_record(a, b) -> bool:
    if a is None or b is None:
        return False
    dump = lambda r: json.dumps(_json_safe(r.to_dict()), sort_keys=True)  # noqa: E731 (NaN-safe equality)
    return dump(a) == dump(b)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isinf(value) else float("nan")  # json writes NaN; review treats it as missing
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _checkpoint_uri(path: str, storage: str) -> str:
    """Ray reports checkpoint paths without the URI scheme (bucket/key); put it back."""
    if not path or _is_uri(path) or not _is_uri(storage):
        return path
    return f"{storage.split('://', 1)[0]}://{path}"


def make_record(trial, space: SearchSpace, train_storage: str, *, errored: bool):
    """A TrialRecord from a finished Tune trial (status, reason, metrics, checkpoint)."""
    from mtard.methods import NEEDS_TEACHERS
    from mtard.search.review import TrialRecord

    result = dict(trial.last_result or {})
    metrics = {k: v for k, v in result.items() if k not in TUNE_KEYS and k != "checkpoint_path"}
    params = {k: v for k, v in (trial.config or {}).items() if k in space.param_paths}
    state = train_run_state(train_storage, train_run_name(trial.trial_id))
    epochs = int(metrics.get("epoch") or (state["metrics"].get("epoch", 0) if state else 0))
    budget = int(space.budget["epochs"])
    checkpoint = ""
    if result.get("checkpoint_path"):
        checkpoint = _join(_checkpoint_uri(str(result["checkpoint_path"]), train_storage), CHECKPOINT_FILE)
    elif state:
        checkpoint = state["checkpoint"]
    if errored:
        status, reason = "error", _error_message(trial)
    elif metrics.get("diverged"):
        status, reason = "diverged", str(metrics.get("error") or "training diverged")
    elif epochs < budget:
        status, reason = "stopped", f"stopped after {epochs} of {budget} epochs"
    else:
        missing = [m for m in space.metrics if not _finite(metrics.get(m))]
        status, reason = ("error", f"objective {missing[0]} missing or not finite: {metrics.get(missing[0])!r}") if missing else ("complete", "")
    fixed = space.fixed_config()
    method = str(params.get("method.name", fixed.method.name))
    teachers = {
        role: str(params.get(f"teachers.{role}", getattr(fixed.teachers, role)))
        for role in NEEDS_TEACHERS.get(method, ())
    }
    train_time = state["train_time_s"] if state else float(result.get("time_total_s") or 0.0)
    return TrialRecord(
        trial_id=trial.trial_id, status=status, reason=reason, params=params, metrics=metrics, epochs=epochs,
        budget=budget, checkpoint=checkpoint, is_default=bool((trial.config or {}).get(DEFAULT_KEY, False)),
        method=method, teachers=teachers, train_time_s=float(train_time),
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _error_message(trial) -> str:
    """The last line of the trial's error (the exception message), one line."""
    text = ""
    for attr in ("error_file",):
        path = getattr(trial, attr, None)
        if path and Path(path).is_file():
            text = Path(path).read_text()
    if not text:
        text = str(getattr(trial, "error_msg", "") or "the trial failed (no error message recorded)")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "the trial failed"


# ---------------------------------------------------------------- the trial driver


def train_run_name(trial_id: str) -> str:
    return f"train-{trial_id}"


def trial_dirname(trial) -> str:
    return f"trial-{trial.trial_id}"


def make_trial_driver(space: SearchSpace, train_storage: str):
    """The Tune trainable: a plain function that builds and fits the trial's TorchTrainer."""

    def trial_driver(config: dict) -> None:
        from ray import tune
        from ray.tune.integration.ray_train import TuneReportCallback

        from mtard.distributed import build_trainer, fit_trainer

        trial_id = tune.get_context().get_trial_id()
        name = train_run_name(trial_id)
        params = {k: v for k, v in config.items() if k in space.param_paths}
        cfg = space.trial_config(params, name=name)
        state = train_run_state(train_storage, name)
        if state and int(state["metrics"].get("epoch", 0)) >= cfg.optim.epochs:
            # Finished before a driver crash, but Tune's saved state predates it: report, don't retrain.
            tune.report({**state["metrics"], "checkpoint_path": state["checkpoint"].rsplit("/", 1)[0]})
            return
        trainer = build_trainer(cfg, storage=train_storage, name=name, callbacks=[TuneReportCallback()])
        fit_trainer(trainer, train_storage)

    return trial_driver


# ---------------------------------------------------------------- Optuna


class MtardOptunaSearch(OptunaSearch):
    """OptunaSearch that links Optuna and Tune trials and tells failures as failures.

    * each Optuna trial gets user attribute `tune_trial_id`;
    * the enqueued defaults trial's Tune config gets `is_default: true` (others false);
    * a diverged trial (NaN objectives) or an errored one is told FAIL, a trial that
      stopped before its budget PRUNED, with `mtard_status`/`mtard_reason` attributes.
    """

    def __init__(self, *args, budget: int, **kwargs):
        self._budget = int(budget)
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if config is None:
            return None
        ot_trial = self._ot_trials[trial_id]
        storage = self._ot_study._storage
        system = storage.get_trial_system_attrs(ot_trial._trial_id)
        if "tune_trial_id" not in storage.get_trial_user_attrs(ot_trial._trial_id):
            ot_trial.set_user_attr("tune_trial_id", trial_id)
        config[DEFAULT_KEY] = "fixed_params" in system
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        result = result or {}
        values = [result.get(m) for m in self.metric]
        if error:
            status, reason, state = "error", "the trial raised an error (see trials.csv)", optuna.trial.TrialState.FAIL
        elif result.get("diverged"):
            status, reason, state = "diverged", str(result.get("error") or "diverged"), optuna.trial.TrialState.FAIL
        elif int(result.get("epoch") or 0) < self._budget:
            status = "stopped"
            reason = f"stopped after {int(result.get('epoch') or 0)} of {self._budget} epochs"
            state = optuna.trial.TrialState.PRUNED
        elif not all(_finite(v) for v in values):
            status, reason, state = "error", f"objectives not finite: {values}", optuna.trial.TrialState.FAIL
        else:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        try:
            ot_trial.set_user_attr("mtard_status", status)
            ot_trial.set_user_attr("mtard_reason", reason[:1000])
            self._ot_study.tell(ot_trial, None, state=state)
        except Exception as exc:  # e.g. already finished in the study: log, never crash the search
            print(f"[search] warning: could not tell Optuna about trial {trial_id}: {exc}", file=sys.stderr)
        self._completed_trials.add(trial_id)


def study_storage_url(exp_local: Path) -> str:
    return f"sqlite:///{(exp_local / 'study.db').resolve()}"


def fail_orphaned_optuna_trials(url: str, study_name: str) -> int:
    """Mark Optuna trials left RUNNING (asked before a crash, never in Tune's state) as FAIL."""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, "mtard_reason", "orphaned: its search driver stopped before the trial started")
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        n += 1
    return n


# ---------------------------------------------------------------- resources


def cluster_capacity() -> dict[str, float]:
    """What the cluster has now, or may have once its autoscaler adds nodes (the larger)."""
    import ray

    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config() or {}
    except Exception:  # private API: a newer Ray may move it; the current resources still work
        most = {}
    return {k: max(now.get(k, 0.0), float(most.get(k, 0) or 0)) for k in set(now) | set(most)}


def node_shapes() -> list[dict[str, float]]:
    """Resources of each alive node and of each node type the autoscaler may start."""
    import ray

    shapes = [{k: float(v) for k, v in n.get("Resources", {}).items()} for n in ray.nodes() if n.get("Alive")]
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        if config is not None:
            shapes += [dict(g.resources) for g in config.node_group_configs if g.max_count != 0]
    except Exception:
        pass
    return shapes


def driver_resources(capacity: dict[str, float]) -> dict[str, float]:
    if capacity.get(DRIVER_RESOURCE, 0) > 0:
        return {"CPU": 0, DRIVER_RESOURCE: DRIVER_SHARE}
    return {"CPU": DRIVER_SHARE}


def trial_demand(space: SearchSpace, driver: dict[str, float]) -> dict[str, float]:
    r = space.resources
    demand = {"CPU": r["workers"] * r["cpus_per_worker"] + driver.get("CPU", 0), "GPU": r["workers"] * r["gpus_per_worker"]}
    for name, amount in r["custom"].items():
        demand[name] = demand.get(name, 0) + r["workers"] * amount
    demand.update({k: v for k, v in driver.items() if k != "CPU"})
    return {k: v for k, v in demand.items() if v > 0}


def plan_concurrency(space: SearchSpace, capacity: dict[str, float], shapes: list[dict[str, float]], driver: dict[str, float]) -> int:
    """Check one trial fits the cluster; return how many run at once."""
    r = space.resources
    worker = {"CPU": r["cpus_per_worker"], "GPU": r["gpus_per_worker"], **r["custom"]}
    worker = {k: v for k, v in worker.items() if v > 0}
    have = ", ".join(f"{k} {v:g}" for k, v in sorted(capacity.items()) if k in ("CPU", "GPU", *r["custom"])) or "nothing"
    if shapes and not any(all(s.get(k, 0) + 1e-9 >= v for k, v in worker.items()) for s in shapes):
        raise MtardError(
            f"resources: no node can hold one worker ({', '.join(f'{k} {v:g}' for k, v in worker.items())}); "
            f"the cluster has {have}: lower resources.cpus_per_worker / gpus_per_worker"
        )
    demand = trial_demand(space, driver)
    fits = []
    for k, v in demand.items():
        total = capacity.get(k, 0.0)
        if total + 1e-9 < v:
            raise MtardError(
                f"resources: one trial needs {k} {v:g} ({r['workers']} worker(s) × resources) but the cluster has "
                f"at most {total:g} (it has {have}); lower resources or use a bigger cluster (--address)"
            )
        fits.append(int(math.floor(total / v + 1e-9)))
    n = min(fits) if fits else space.num_samples
    if space.max_concurrent is not None:
        n = space.max_concurrent
    return max(1, min(n, space.num_samples))


# ---------------------------------------------------------------- the progress callback


class SearchProgress(Callback):
    """Records each finished trial durably, rewrites the review, prints one line of progress."""

    def __init__(self, files: ExperimentFiles, space: SearchSpace, train_storage: str, total: int):
        self.files = files
        self.space = space
        self.train_storage = train_storage
        self.total = total
        self._tb = None
        self._t0 = time.time()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tb"] = None  # a SummaryWriter does not pickle; re-created after a restore
        return state

    @property
    def records_path(self) -> Path:
        return self.files.local / "records.jsonl"

    def objectives(self):
        from mtard.search.review import Objective

        return [Objective(o.metric, o.direction, o.label, o.reference) for o in self.space.objectives]

    def on_trial_start(self, iteration, trials, trial, **info):
        params = {k: v for k, v in trial.config.items() if k in self.space.param_paths}
        tag = " (official defaults)" if trial.config.get(DEFAULT_KEY) else ""
        print(f"[search] start {trial.trial_id}{tag}: {_short(params)}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trials, trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trials, trial, errored=True)

    def _finish(self, trials, trial, *, errored: bool) -> None:
        try:
            record = make_record(trial, self.space, self.train_storage, errored=errored)
            known = {r.trial_id: r for r in read_records(self.records_path)}
            if _same_record(known.get(record.trial_id), record):
                # Re-completed after a driver crash (Tune's state predated the first completion):
                # the driver reported it from its checkpoint; the line is already there.
                print(f"[search] {trial.trial_id}: already recorded before the restart", flush=True)
            else:
                append_record(self.records_path, record)
            data = self.review()
        except Exception as err:  # never let bookkeeping kill the search
            print(f"[search] warning: could not record trial {trial.trial_id}: {err!r}", file=sys.stderr)
            return
        running = sum(t.status in (Trial.RUNNING, Trial.PENDING) and t is not trial for t in trials)
        done = len(data.records)
        vals = " ".join(f"{m}={record.metrics.get(m, float('nan')):.4f}" for m in self.space.metrics if _finite(record.metrics.get(m)))
        why = f" ({record.reason})" if record.reason else ""
        print(
            f"[search] {done}/{self.total} done, {running} running, {time.time() - self._t0:.0f}s | "
            f"front {len(data.front)}, hypervolume {data.hypervolume:.4f} | "
            f"{trial.trial_id} {record.status} {vals}{why}",
            flush=True,
        )

    def review(self, *, tensorboard: bool = True):
        from mtard.search.review import TensorBoardReview, write_review

        records = read_records(self.records_path)
        data = write_review(self.files.local, records, self.objectives())
        if tensorboard:
            if self._tb is None:
                self._tb = TensorBoardReview(self.files.local, self.objectives())
            self._tb.write(data)
        self.files.push()
        return data


def _short(params: dict) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items())


# ---------------------------------------------------------------- run_search


def _save_space(space: SearchSpace, files: ExperimentFiles) -> None:
    import yaml

    from mtard.config import save_config

    files.local.mkdir(parents=True, exist_ok=True)
    save_config(space.base_config, files.local / "base_config.yaml")
    text = "# resolved by `mtard search`; --resume reads this file (base: the saved base config)\n"
    text += yaml.safe_dump(space.to_yaml_dict(base="base_config.yaml"), sort_keys=False, allow_unicode=True)
    (files.local / "space.yaml").write_text(text)


def _experiment_exists(files: ExperimentFiles) -> bool:
    from ray import tune

    if (files.local / "study.db").exists() or (files.local / "records.jsonl").exists():
        return True
    try:
        return tune.Tuner.can_restore(files.uri)
    except Exception:
        return False


def _start_ray(address: str | None, space: SearchSpace) -> bool:
    """Connect to a cluster or start a local Ray; True if this process started it."""
    import ray

    if ray.is_initialized():
        return False
    quiet = dict(configure_logging=False, log_to_driver=False)
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **quiet)
        return False
    from mtard.distributed import use_fast_polling

    use_fast_polling()
    # A local Ray offers `mtard_driver` like the cluster head, so trial drivers take no CPU.
    # The dashboard (State API) is what frees the placement groups of trials Tune stops; only a
    # time budget stops trials here, so it only starts then (it costs memory and start-up time).
    ray.init(
        address="local",  # a new local Ray: never join another cluster found on this machine
        resources={DRIVER_RESOURCE: LOCAL_DRIVER_UNITS},
        include_dashboard=space.budget["time_budget_s"] is not None,
        **quiet,
    )
    return True


def run_search(args) -> Any:
    """`mtard search`: run (or resume) a search; returns the final ReviewData."""
    import optuna

    from mtard.distributed import storage_uri

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    resume = getattr(args, "resume", None)
    if resume:
        if getattr(args, "num_samples", None):
            raise MtardError("--num-samples cannot change when resuming: the search continues with the trials it planned")
        uri = storage_uri(resume, "runs")
        storage, name = uri.rstrip("/").rsplit("/", 1)
        if args.name and args.name != name:
            raise MtardError(f"--name {args.name} does not match the resumed experiment {name}")
        files = ExperimentFiles(storage, name)
        files.pull()
        if not (files.local / "space.yaml").is_file():
            raise MtardError(f"--resume {resume}: no space.yaml there; point at an experiment directory written by `mtard search` (runs/<name>)")
        space = load_space(files.local / "space.yaml")
        if args.space:
            given = load_space(args.space).to_yaml_dict(base="base_config.yaml")
            if given != space.to_yaml_dict(base="base_config.yaml"):
                raise MtardError(f"{args.space} differs from the space this search started with ({files.local / 'space.yaml'}); resume without SPACE, or start a new search with --name")
    else:
        space = load_space(args.space)
        if getattr(args, "num_samples", None):
            if args.num_samples < 1:
                raise MtardError("--num-samples must be >= 1")
            space.num_samples = int(args.num_samples)
        storage = storage_uri(args.storage, "runs")
        source = Path(args.space or space.source or "search")
        name = args.name or Path(space.source or source).stem
        files = ExperimentFiles(storage, name)
        if _experiment_exists(files):
            raise MtardError(f"{files.uri} already holds a search: continue it with --resume {files.uri}, or pick another --name")
        _save_space(space, files)
        files.push()

    # Teachers first, before any trial: trained / checked here, staged where every node fetches them.
    from mtard.staging import stage_search_teachers

    stage_search_teachers(space, storage)

    import ray
    from ray import tune

    started = _start_ray(getattr(args, "address", None), space)
    # Tune's experiment state every 2 s (default 10+): less to redo after a driver crash.
    # The legacy console output honours verbose=0 (the new one still prints its banner).
    saved_env = {k: os.environ.get(k) for k in ("TUNE_GLOBAL_CHECKPOINT_S", "RAY_AIR_NEW_OUTPUT")}
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        capacity = cluster_capacity()
        driver = driver_resources(capacity)
        concurrency = plan_concurrency(space, capacity, node_shapes(), driver)
        train_storage = files.uri
        trainable = tune.with_resources(make_trial_driver(space, train_storage), driver)
        print(
            f"[search] {name}: {space.num_samples} trials of {space.budget['epochs']} epochs, {concurrency} at a time, "
            f"{len(space.params)} parameters, objectives {', '.join(f'{o.direction} {o.metric}' for o in space.objectives)}\n"
            f"[search] results: {files.uri} (tensorboard --logdir {files.uri}; "
            f"optuna-dashboard {study_storage_url(files.local)})",
            flush=True,
        )
        if resume:
            if not tune.Tuner.can_restore(files.uri):
                raise MtardError(f"--resume {resume}: Tune saved no experiment state there yet (the search died too early); start it again without --resume")
            tuner = tune.Tuner.restore(files.uri, trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
        else:
            tuner = _new_tuner(space, files, name, storage, trainable, concurrency, train_storage)
        tuner.fit()
        fail_orphaned_optuna_trials(study_storage_url(files.local), name)
        progress = SearchProgress(files, space, train_storage, space.num_samples)
        data = progress.review(tensorboard=False)  # the callback already drew every completed trial
        print(_final_text(data, files))
        if getattr(args, "final_eval", False):
            _final_eval(files)
        return data
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
        if started:
            ray.shutdown()


def _new_tuner(space: SearchSpace, files: ExperimentFiles, name: str, storage: str, trainable, concurrency: int, train_storage: str):
    import optuna
    from ray import tune

    search = MtardOptunaSearch(
        space=space.define_by_run,
        metric=space.metrics,
        mode=space.modes,
        points_to_evaluate=[space.default_point()] if space.enqueue_defaults else None,
        sampler=space.make_sampler(),
        study_name=name,
        storage=optuna.storages.RDBStorage(study_storage_url(files.local)),
        budget=space.budget["epochs"],
    )
    progress = SearchProgress(files, space, train_storage, space.num_samples)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            num_samples=space.num_samples,
            max_concurrent_trials=concurrency,
            time_budget_s=space.budget["time_budget_s"],
            trial_dirname_creator=trial_dirname,
            trial_name_creator=trial_dirname,
            reuse_actors=True,  # one trial-driver process per slot: torch and mtard import once
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[progress],
            failure_config=tune.FailureConfig(max_failures=TUNE_MAX_FAILURES),
            verbose=0,  # the SearchProgress lines are the live view
        ),
    )


def _final_text(data, files: ExperimentFiles) -> str:
    from mtard.search.review import render_table

    return (
        f"{render_table(data)}\n"
        f"results: {files.uri}/ (pareto.csv, trials.csv, pareto.json, study.db); "
        f"tensorboard --logdir {files.uri}"
    )


def _final_eval(files: ExperimentFiles) -> None:
    try:
        from mtard.search.review import evaluate_front, render_verified
    except ImportError as err:
        raise MtardError("--final-eval is not available yet in this version") from err
    path = evaluate_front(files.local)
    print(render_verified(json.loads(Path(path).read_text())))
    files.push(names=("pareto_verified.json", "pareto_verified.csv"), dirs=("verified",))

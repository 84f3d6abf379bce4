"""Ray Tune and Optuna at run time: the trial functions, the Optuna adapter, the search's callback.
(Besides this module only `run.py` imports `ray.tune`, to build and restore the Tuner, and only
`space.py` imports `optuna`, for its sampler; `lint-imports` enforces both.)

Two trial functions, chosen by `mtard.search.resources.uses_ray_train`:

* **Direct trial** (one worker, the default): the Tune trial process runs `mtard.loop.fit`
  itself through `TuneContext`: each epoch's metrics and checkpoint go to `ray.tune.report`,
  the resume point comes from `ray.tune.get_checkpoint()`. Tune reserves exactly the worker's
  resources, so a GPU trial sees exactly its GPU. Trial processes are reused between trials
  (`reuse_actors`): torch is imported once per process, and the data splits and teachers stay
  loaded while the next trial asks for the same ones (caches keyed by the fields that determine
  them, in `mtard.data` and `mtard.loop`). A trial whose process dies (a lost node, an OOM kill)
  is retried from its last epoch's checkpoint by Tune, up to `scaling.max_failures` times.
* **Ray Train trial** (`workers > 1`, or `resources.ray_train: true`): the trial function is a
  thin driver that builds and fits the trial's `TorchTrainer` (`mtard.distributed`), whose rank 0
  reports reach Tune through `TuneReportCallback`; Ray Train restarts failed worker groups.
  Worth it for one worker only to rehearse what a multi-worker search does.

Both report every objective every epoch. A diverged run reports NaN objectives with
`diverged: 1`, an mtard error inside a trial (deterministic: a retry would fail again) reports
`failed: 1` with its message, and both end normally; `mtard.search.records.classify` turns the
last report into the trial's status, here and in the records alike.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from mtard import checkpoint as ckpt
from mtard.checkpoint import CHECKPOINT_FILE
from mtard.config import NEEDS_TEACHERS
from mtard.errors import MtardError
from mtard.loop import BEST_FILE, Context
from mtard.runs import RunFolder, checkpoint_dir, failure_report
from mtard.search.budget import Verdict, device_seconds, next_trial, trial_devices
from mtard.search.files import SPACE, ExperimentFiles, train_run_name, trial_dir_name
from mtard.search.records import STOP_KEY, Status, TrialRecord, append_record, classify, finite, read_records
from mtard.search.resources import uses_ray_train
from mtard.search.rung_judge import RungClient
from mtard.search.space import SearchSpace, load_space
from mtard.storage import get_file, join, local_file, put_atomic, read_text, with_scheme

DEFAULT_KEY = "is_default"  # Tune config key marking the enqueued defaults trial
CHECKPOINT_PATH_KEY = "checkpoint_path"  # a reported checkpoint directory (Ray's TuneReportCallback name)
REPLAYED_KEY = "replayed"  # set on a finished trial's metrics re-reported from its checkpoint (nothing trained)
# Tune's bookkeeping keys and ours: not part of a trial's metrics record.
TUNE_KEYS = {
    "config", "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
    "iterations_since_restore", "experiment_tag", "should_checkpoint", CHECKPOINT_PATH_KEY, REPLAYED_KEY,
}


def trial_params(config: dict, space: SearchSpace) -> dict:
    return {k: v for k, v in config.items() if k in space.param_paths}


# ---------------------------------------------------------------- direct trials


class TuneContext(Context):
    """The loop's view of a direct trial: one process; checkpoints and metrics through Tune."""

    def __init__(self, device, newest: dict | None = None, rungs: RungClient | None = None):
        super().__init__(device, rungs)
        # The driver's record of this trial's newest checkpoint (checkpoints.json): after a driver
        # crash it can be newer than the one in Tune's saved state, which is a few seconds old.
        self._newest = newest or {}
        self._state: dict | None = None
        self._loaded = False
        self.resumed_from = ""  # the checkpoint directory the trial resumed from

    def latest_checkpoint(self) -> dict | None:
        if self._loaded:
            return self._state
        self._loaded = True
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                self._state = ckpt.read(Path(directory) / CHECKPOINT_FILE, self.device)
            self.resumed_from = checkpoint.path
        have = int(self._state["epoch"]) if self._state else 0
        if int(self._newest.get("epoch") or 0) > have:
            location = self._newest["checkpoint"]
            with tempfile.TemporaryDirectory() as directory:
                local = local_file(location, Path(directory))
                self._state = ckpt.read(local, self.device)
            self.resumed_from = checkpoint_dir(location)
        return self._state

    def save_best(self, payload: dict) -> None:
        """`BEST_FILE` in the trial's storage folder, beside (and outliving) Tune's `checkpoint_*` folders."""
        storage = _trial_storage()
        with tempfile.TemporaryDirectory() as directory:
            local = Path(directory) / BEST_FILE
            ckpt.save(local, payload)
            put_atomic(local, storage.storage_filesystem, storage.trial_fs_path, BEST_FILE)

    def stored_best(self) -> dict | None:
        """The `BEST_FILE` this trial saved (before a restart, too), or None."""
        storage = _trial_storage()
        with tempfile.TemporaryDirectory() as directory:
            local = Path(directory) / BEST_FILE
            if not get_file(storage.storage_filesystem, storage.trial_fs_path, BEST_FILE, local):
                return None
            return ckpt.read(local, self.device)

    def report(self, metrics: dict, payload: dict | None) -> None:
        if payload is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            ckpt.save(Path(directory) / CHECKPOINT_FILE, payload)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def rung_client(space: SearchSpace, experiment: str, trial_id: str, config: dict) -> RungClient | None:
    """How this trial asks the rung judge, or None when the space has no scheduler."""
    s = space.scheduler
    if s["name"] != "moasha":
        return None
    return RungClient(experiment, trial_id, tuple(s["rungs"]), tuple(space.metrics), protected=bool(config.get(DEFAULT_KEY)))


def _replay_if_finished(metrics: dict | None, checkpoint_dir: str, budget: int) -> bool:
    """Report a trial that finished before a driver crash (Tune's saved state predates it) from its last
    checkpoint's metrics, training nothing; True if it had. Finished: trained its budget, or stopped at a rung."""
    if metrics is None or not (int(metrics.get("epoch") or 0) >= budget or metrics.get(STOP_KEY)):
        return False
    tune.report({**metrics, CHECKPOINT_PATH_KEY: checkpoint_dir, REPLAYED_KEY: 1})
    return True


def make_direct_trial(space: SearchSpace, newest: dict[str, dict], experiment: str):
    """The Tune trainable of a one-worker trial: the epoch loop itself, in the trial's process."""

    def direct_trial(config: dict) -> None:
        from mtard.distributed import fit_reporting_divergence
        from mtard.loop import resolve_device

        trial_id = tune.get_context().get_trial_id()
        cfg = space.trial_config(trial_params(config, space), name=trial_dir_name(trial_id))
        # The trial's reserved GPU is the only one Ray lets it see; a CPU trial stays on the CPU.
        device = resolve_device("cuda" if cfg.scaling.gpus_per_worker > 0 else "cpu")
        ctx = TuneContext(device, newest.get(trial_id), rung_client(space, experiment, trial_id, config))
        try:
            state = ctx.latest_checkpoint()
            if _replay_if_finished(state and state["metrics"], ctx.resumed_from, cfg.optim.epochs):
                return
            fit_reporting_divergence(cfg, ctx)
        except MtardError as err:
            tune.report(failure_report(0, str(err), diverged=False))  # deterministic: Tune must not retry it

    return direct_trial


# ---------------------------------------------------------------- Ray Train trials


def train_run_state(train_storage: str, run_name: str) -> dict | None:
    """The last checkpoint of a Ray Train run, from its checkpoint_manager_snapshot.json.

    Returns {"metrics": last checkpointed epoch's metrics, "checkpoint": path/URI of its
    checkpoint.pt}, or None.
    """
    import json

    run = RunFolder(join(train_storage, run_name))
    text = read_text(run.snapshot)
    if not text:
        return None
    try:
        latest = json.loads(text).get("latest_checkpoint_result") or {}
    except (ValueError, AttributeError):
        return None
    if not latest.get("checkpoint_dir_name"):
        return None
    return {
        "metrics": dict(latest.get("metrics") or {}),
        "checkpoint": run.checkpoint(latest["checkpoint_dir_name"]),
    }


def make_ray_train_trial(space: SearchSpace, train_storage: str, experiment: str):
    """The Tune trainable of a Ray Train trial: a driver that builds and fits the trial's TorchTrainer."""

    def ray_train_trial(config: dict) -> None:
        from ray.tune.integration.ray_train import TuneReportCallback

        from mtard.distributed import build_trainer, fit_trainer

        trial_id = tune.get_context().get_trial_id()
        name = train_run_name(trial_id)
        cfg = space.trial_config(trial_params(config, space), name=name)
        state = train_run_state(train_storage, name)
        if state and _replay_if_finished(state["metrics"], checkpoint_dir(state["checkpoint"]), cfg.optim.epochs):
            return
        rungs = rung_client(space, experiment, trial_id, config)
        trainer = build_trainer(cfg, storage=train_storage, name=name, callbacks=[TuneReportCallback()], stop_rule=rungs)
        try:
            fit_trainer(trainer, train_storage)
        except MtardError as err:
            epoch = int((train_run_state(train_storage, name) or {"metrics": {}})["metrics"].get("epoch", 0))
            tune.report(failure_report(epoch, str(err), diverged=False))

    return ray_train_trial


# ---------------------------------------------------------------- Optuna


class MtardOptunaSearch(OptunaSearch):
    """OptunaSearch that links Optuna and Tune trials and tells failures as failures.

    * each Optuna trial gets user attribute `tune_trial_id`;
    * the enqueued defaults trial's Tune config gets `is_default: true` (others false);
    * a trial is told as `classify` sees it: COMPLETE with its values, FAIL when it diverged or
      failed, PRUNED when it stopped before its budget (stock OptunaSearch would tell truncated
      values as COMPLETE), with `mtard_status`/`mtard_reason` user attributes;
    * before each new trial it asks `mtard.search.budget.next_trial` (the space's `budget.total`
      and `stop:`, fed by the durable records): while the answer is no it suggests nothing, and
      once nothing runs either it ends the search (`Searcher.FINISHED`), writing why to
      stop_reason.json. After a restore (--resume) the rule is re-read from the saved space.yaml,
      which --resume may have given a larger budget; the spent cost always comes from the records.
    """

    def __init__(self, *args, mtard_space: SearchSpace, files: ExperimentFiles, **kwargs):
        # (`space=` is OptunaSearch's own: the define-by-run function)
        self._budget = int(mtard_space.budget["epochs"])
        self._files = files
        self.stop_reason = ""  # set when the rule ended the search (saved with Tune's state)
        self._use_space(mtard_space)
        super().__init__(*args, **kwargs)

    def _use_space(self, space: SearchSpace) -> None:
        self._rule = space.limits()
        self._objectives = list(space.objectives)
        self._waiting_for = ""  # the last reason printed while trials still ran
        self._records_cache: tuple[tuple[int, int], list[TrialRecord]] | None = None

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        self._use_space(load_space(self._files.local / SPACE))
        _relink_open_trials(self)

    def _records(self) -> list[TrialRecord]:
        try:
            stat = self._files.records.stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return []
        if self._records_cache is None or self._records_cache[0] != key:
            self._records_cache = (key, read_records(self._files.records))
        return self._records_cache[1]

    def verdict(self) -> tuple[Verdict, int]:
        """May a new trial start (and how many run now: suggested, neither told nor recorded)?"""
        records = self._records()
        recorded = {r.trial_id for r in records}
        running = sum(t not in recorded for t in _open_trial_ids(self))
        if not self._rule.active:
            return Verdict(True), running
        verdict = next_trial(records, self._rule, running=running, budget_epochs=self._budget, objectives=self._objectives)
        return verdict, running

    def suggest(self, trial_id: str):
        verdict, running = self.verdict()
        if not verdict.start:
            if running:
                if verdict.reason != self._waiting_for:
                    print(f"[search] no new trial while {running} run: {verdict.reason}", flush=True)
                    self._waiting_for = verdict.reason
                return None
            self.stop_reason = verdict.reason
            self._files.write_stop_reason(verdict.reason)
            print(f"[search] the search ends: {verdict.reason}", flush=True)
            return Searcher.FINISHED
        self._waiting_for = ""
        config = super().suggest(trial_id)
        if config is None:
            return None
        enqueued = _link_optuna_trial(self, trial_id)
        config[DEFAULT_KEY] = enqueued
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        import optuna

        if not _optuna_trial_open(self, trial_id):
            return super().on_trial_complete(trial_id, result, error)
        if _optuna_trial_finished(self, trial_id):
            # Told before a driver crash that Tune's saved state predates: the study has it already.
            _mark_told(self, trial_id)
            return None
        status, reason = classify(
            result or {}, budget=self._budget, objectives=list(self.metric),
            error="the trial raised an error (see trials.csv)" if error else None,
        )
        if status is Status.COMPLETE:
            try:
                return super().on_trial_complete(trial_id, result, error)
            except Exception as exc:  # e.g. a study rebuilt after study.db was lost: reconcile_study tells it at the end
                print(f"[search] warning: could not tell Optuna about trial {trial_id}: {exc}", file=sys.stderr)
                return None
        state = optuna.trial.TrialState.PRUNED if status is Status.STOPPED else optuna.trial.TrialState.FAIL
        attrs = {"mtard_status": str(status), "mtard_reason": reason[:1000]}
        if (result or {}).get(STOP_KEY):  # stopped at a rung: keep the values it was judged on
            attrs.update({"mtard_rung_epoch": result.get("epoch"), **{f"mtard_rung_{m}": result.get(m) for m in self.metric}})
        try:
            _tell_optuna(self, trial_id, state, attrs)
        except Exception as exc:  # e.g. already finished in the study: log, never crash the search
            print(f"[search] warning: could not tell Optuna about trial {trial_id}: {exc}", file=sys.stderr)
        _mark_told(self, trial_id)


class ReopeningSearchGenerator(SearchGenerator):
    """Tune's SearchGenerator, except that a search the stop rule ended opens again on --resume.

    Tune saves "finished" with the generator; the resumed searcher asks the (maybe larger) budget
    again before any new trial, and ends the search again if it is still spent.
    """

    def set_state(self, state: dict):
        super().set_state(state)
        searcher = self.searcher
        while hasattr(searcher, "searcher"):
            searcher = searcher.searcher
        if getattr(searcher, "stop_reason", ""):
            self._finished = False
            searcher.stop_reason = ""


def new_search_algorithm(space: SearchSpace, files: ExperimentFiles, name: str, concurrency: int) -> ReopeningSearchGenerator:
    """The searcher as Tune gets it: our Optuna adapter, at most `concurrency` trials at once."""
    return ReopeningSearchGenerator(ConcurrencyLimiter(new_searcher(space, files, name), max_concurrent=concurrency))


def new_searcher(space: SearchSpace, files: ExperimentFiles, name: str) -> MtardOptunaSearch:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = MtardOptunaSearch(
        space=space.define_by_run,
        metric=space.metrics,
        mode=space.modes,
        points_to_evaluate=[space.default_point()] if space.enqueue_defaults else None,
        sampler=space.make_sampler(),
        study_name=name,
        storage=optuna.storages.RDBStorage(files.study_url),
        mtard_space=space,
        files=files,
    )
    name_objectives(files.study_url, name, space)
    return searcher


def name_objectives(url: str, study_name: str, space: SearchSpace) -> None:
    """Name the study's objectives (optuna-dashboard shows them instead of "Objective 0/1")."""
    import warnings

    import optuna

    with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard reads
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.load_study(study_name=study_name, storage=url).set_metric_names(list(space.metrics))


def _optuna_outcome(record: TrialRecord, metrics: list[str]):
    import optuna

    if record.status is Status.COMPLETE:
        return optuna.trial.TrialState.COMPLETE, [float(record.metrics[m]) for m in metrics]
    if record.status is Status.STOPPED:
        return optuna.trial.TrialState.PRUNED, None
    return optuna.trial.TrialState.FAIL, None


def reconcile_study(files: ExperimentFiles, space: SearchSpace) -> list[str]:
    """Make the Optuna study agree with records.jsonl (the trials' own outcomes); returns what it repaired.

    A trial still RUNNING in the study whose record exists (it finished after a --resume, and the
    restored searcher no longer knew it) gets the record's outcome; a record with no trial in the
    study (a study rebuilt after study.db was lost) is added; a RUNNING trial with no record
    (asked before a crash, never started) is marked FAIL.
    """
    import optuna

    storage = optuna.storages.RDBStorage(files.study_url)
    study = optuna.load_study(study_name=files.name, storage=storage)
    records = {r.trial_id: r for r in read_records(files.records) if r.status is not Status.RUNNING}
    linked = {t.user_attrs.get("tune_trial_id"): t for t in study.get_trials(deepcopy=False)}
    repaired = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        record = records.get(t.user_attrs.get("tune_trial_id"))
        if record is None:
            _fail_stored_trial(storage, t, "orphaned: its search driver stopped before the trial started")
            continue
        state, values = _optuna_outcome(record, space.metrics)
        storage.set_trial_user_attr(t._trial_id, "mtard_status", str(record.status))
        storage.set_trial_state_values(t._trial_id, state, values)
        repaired.append(f"trial {record.trial_id}: {state.name} in the study, as recorded")
    for trial_id, record in records.items():
        if trial_id in linked:
            continue
        fixed = optuna.trial.FixedTrial(record.params)
        space.define_by_run(fixed)
        state, values = _optuna_outcome(record, space.metrics)
        study.add_trial(optuna.trial.create_trial(
            params=record.params, distributions=fixed.distributions, values=values, state=state,
            user_attrs={"tune_trial_id": trial_id, "mtard_status": str(record.status), "mtard_reason": record.reason[:1000]},
        ))
        repaired.append(f"trial {trial_id}: added to the study from its record")
    return repaired


def rebuild_study(files: ExperimentFiles, space: SearchSpace) -> int:
    """A new study.db holding every recorded trial (the old one was lost); returns how many."""
    import optuna

    optuna.create_study(study_name=files.name, storage=files.study_url, directions=[o.direction + "imize" for o in space.objectives])
    name_objectives(files.study_url, files.name, space)
    return len(reconcile_study(files, space))


def record_unrecorded(results, progress: SearchProgress) -> list[str]:
    """Append a record for each finished trial of Tune's results that records.jsonl lacks (its line
    was torn by a crash, or the driver died between the trial's end and its record); returns their ids."""
    from types import SimpleNamespace

    known = {r.trial_id for r in read_records(progress.files.records)}
    added = []
    for result in results:
        metrics = dict(result.metrics or {})
        trial_id = metrics.get("trial_id")
        if not trial_id or trial_id in known:
            continue
        trial = SimpleNamespace(trial_id=trial_id, last_result=metrics, config=result.config or {})
        error = str(result.error).strip().splitlines()[-1][:500] if result.error else None
        append_record(progress.files.records, progress.make_record(trial, error=error))
        added.append(trial_id)
    return added


# ---------------------------------------------------------------- the search's callback


class SearchProgress(Callback):
    """Records each finished trial durably, keeps checkpoints.json, rewrites the review, prints progress.

    Also measures each trial's start-up: from Tune starting the trial to its first training
    step (the first result's arrival minus that epoch's own time).
    """

    def __init__(self, files: ExperimentFiles, space: SearchSpace, total: int):
        self.files = files
        self.space = space
        self.total = total
        self._init_transient()

    def _init_transient(self) -> None:
        self._tb = None
        self._t0 = time.time()
        self._started: dict[str, float] = {}
        self._startup: dict[str, float] = {}
        self._epoch: dict[str, int] = {}
        self._newest: dict[str, dict] | None = None

    def __getstate__(self):
        # Tune pickles callbacks into its experiment state. A SummaryWriter does not pickle, and
        # checkpoints.json on disk is newer than any pickle: both are re-read after a restore.
        return {"files": self.files, "space": self.space, "total": self.total}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_transient()

    @property
    def newest(self) -> dict[str, dict]:
        if self._newest is None:
            self._newest = self.files.read_checkpoints()
        return self._newest

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = time.time()
        tag = " (official defaults)" if trial.config.get(DEFAULT_KEY) else ""
        print(f"[search] start {trial.trial_id}{tag}: {_short(trial_params(trial.config, self.space))}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = trial.trial_id
        self._epoch[tid] = int(result.get("epoch") or 0)
        if tid in self._started and finite(result.get("epoch_time_s")) and not result.get(REPLAYED_KEY):
            self._startup[tid] = time.time() - self._started.pop(tid) - float(result["epoch_time_s"])
        if result.get(CHECKPOINT_PATH_KEY):  # a Ray Train trial's checkpoint (or a re-reported one)
            self._note_checkpoint(tid, self._epoch[tid], str(result[CHECKPOINT_PATH_KEY]))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._note_checkpoint(trial.trial_id, self._epoch.get(trial.trial_id, 0), checkpoint.path)

    def _note_checkpoint(self, trial_id: str, epoch: int, directory: str) -> None:
        location = join(with_scheme(directory, self.files.storage), CHECKPOINT_FILE)
        if self.newest.get(trial_id) == {"epoch": epoch, "checkpoint": location}:
            return
        self.newest[trial_id] = {"epoch": epoch, "checkpoint": location}
        try:
            self.files.write_checkpoints(self.newest)
        except OSError as err:  # bookkeeping must not kill the search; Tune's own state still resumes
            print(f"[search] warning: could not write {self.files.local / 'checkpoints.json'}: {err}", file=sys.stderr)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trials, trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trials, trial, error=_error_message(trial))

    def make_record(self, trial, *, error: str | None) -> TrialRecord:
        """A TrialRecord from a finished Tune trial (status, reason, metrics, checkpoint, times)."""
        metrics = {k: v for k, v in (trial.last_result or {}).items() if k not in TUNE_KEYS}
        params = trial_params(trial.config or {}, self.space)
        newest = self.newest.get(trial.trial_id, {})
        budget = int(self.space.budget["epochs"])
        status, reason = classify(metrics, budget=budget, objectives=self.space.metrics, error=error)
        fixed = self.space.fixed_config()
        method = str(params.get("method.name", fixed.method.name))
        teachers = {
            role: str(params.get(f"teachers.{role}", getattr(fixed.teachers, role))) for role in NEEDS_TEACHERS.get(method, ())
        }
        devices = trial_devices(self.space.resources)
        time_in_epochs = float(metrics.get("time_in_epochs_s") or 0.0)
        checkpoint = str(newest.get("checkpoint", ""))
        if checkpoint and fixed.eval.select == "best" and finite(metrics.get("selected_epoch")) and metrics["selected_epoch"] > 0:
            # The selected epoch stands for the trial: best.pt beside the run's checkpoint_* folders.
            checkpoint = self.files.trial_run(trial.trial_id, ray_train=uses_ray_train(self.space)).best
        return TrialRecord(
            trial_id=trial.trial_id, status=status, reason=reason, params=params, metrics=metrics,
            epochs=int(metrics.get("epoch") or newest.get("epoch") or 0), budget=budget,
            checkpoint=checkpoint, is_default=bool((trial.config or {}).get(DEFAULT_KEY, False)),
            method=method, teachers=teachers, train_time_s=time_in_epochs,
            device_seconds=device_seconds(time_in_epochs, devices), device_kind=devices.kind,
            startup_s=self._startup.get(trial.trial_id),
        )

    def _finish(self, trials, trial, *, error: str | None) -> None:
        try:
            record = self.make_record(trial, error=error)
            known = {r.trial_id: r for r in read_records(self.files.records)}.get(record.trial_id)
            if known is not None and _same_result(known, record):
                # Re-completed after a driver crash (Tune's state predated the first completion):
                # the trial reported it from its checkpoint; the line is already there.
                print(f"[search] {trial.trial_id}: already recorded before the restart", flush=True)
            else:
                append_record(self.files.records, record)
            data = self.review()
        except Exception as err:  # never let bookkeeping kill the search
            print(f"[search] warning: could not record trial {trial.trial_id}: {err!r}", file=sys.stderr)
            return
        running = sum(t.status in (Trial.RUNNING, Trial.PENDING) and t is not trial for t in trials)
        vals = " ".join(f"{m}={record.metrics[m]:.4f}" for m in self.space.metrics if finite(record.metrics.get(m)))
        why = f" ({record.reason})" if record.reason else ""
        print(
            f"[search] {len(data.records)}/{self.total} done, {running} running, {time.time() - self._t0:.0f}s | "
            f"front {len(data.front)}, hypervolume {data.hypervolume:.4f} | {trial.trial_id} {record.status} {vals}{why}",
            flush=True,
        )

    def review(self):
        """`review_search` with this search's TensorBoard review run, kept open between trials."""
        from mtard.search.render import TensorBoardReview, review_search

        objectives = list(self.space.objectives)
        if self._tb is None:
            self._tb = TensorBoardReview(self.files.local, objectives)
        return review_search(self.files.local, read_records(self.files.records), objectives, board=self._tb, push=self.files.push,
                             stop_reason=self.files.read_stop_reason())


def _same_result(a: TrialRecord, b: TrialRecord) -> bool:
    """Same outcome (start-up time aside: a re-reported trial measures a new one)."""
    return a.to_json() == TrialRecord(**{**b.to_dict(), "startup_s": a.startup_s}).to_json()


def _short(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _error_message(trial) -> str:
    """The last line of the trial's error (the exception message), one line."""
    path = getattr(trial, "error_file", None)
    text = Path(path).read_text() if path and Path(path).is_file() else ""
    if not text:
        text = str(getattr(trial, "error_msg", "") or "the trial failed (no error message recorded)")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "the trial failed"


# ---------------------------------------------------------------- the cluster


def cluster_capacity() -> dict[str, float]:
    """What the cluster has now, or may have once its autoscaler adds nodes (the larger)."""
    import ray

    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    most = _autoscaler_max_resources()
    return {k: max(now.get(k, 0.0), float(most.get(k, 0) or 0)) for k in set(now) | set(most)}


def node_shapes() -> list[dict[str, float]]:
    """Resources of each alive node and of each node type the autoscaler may start."""
    import ray

    shapes = [{k: float(v) for k, v in n.get("Resources", {}).items()} for n in ray.nodes() if n.get("Alive")]
    return shapes + _autoscaler_node_types()


# ================================================================ PRIVATE INTERNALS
# Everything below reads or writes private attributes of Ray 2.60 or Optuna 5. A version bump
# that breaks the search breaks here; nothing above touches a private name.


def _autoscaler_max_resources() -> dict[str, Any]:
    try:  # ray._private.state: a newer Ray may move it; then only not-yet-started nodes are not planned for
        from ray._private.state import state

        return state.get_max_resources_from_cluster_config() or {}
    except Exception:
        return {}


def _autoscaler_node_types() -> list[dict[str, float]]:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        return [dict(g.resources) for g in config.node_group_configs if g.max_count != 0] if config is not None else []
    except Exception:
        return []


def _link_optuna_trial(search: OptunaSearch, trial_id: str) -> bool:
    """Tag the Optuna trial behind Tune trial `trial_id`; True if it is an enqueued (defaults) trial."""
    ot_trial = search._ot_trials[trial_id]
    storage = search._ot_study._storage
    if "tune_trial_id" not in storage.get_trial_user_attrs(ot_trial._trial_id):
        ot_trial.set_user_attr("tune_trial_id", trial_id)
    return "fixed_params" in storage.get_trial_system_attrs(ot_trial._trial_id)


def _optuna_trial_open(search: OptunaSearch, trial_id: str) -> bool:
    return trial_id not in search._completed_trials and trial_id in search._ot_trials


def _relink_open_trials(search: OptunaSearch) -> None:
    """After Tune restored the searcher: a running trial whose Optuna trial is not in the study any
    more (study.db was lost and rebuilt from the records) gets a new one with the same parameters,
    so telling its result can neither fail nor land on another trial that took its old id."""
    study = search._ot_study
    for trial_id, ot_trial in list(search._ot_trials.items()):
        if trial_id in search._completed_trials:
            continue
        try:
            linked = study._storage.get_trial_user_attrs(ot_trial._trial_id).get("tune_trial_id") == trial_id
        except KeyError:
            linked = False
        if linked:
            continue
        frozen = ot_trial._cached_frozen_trial
        study.enqueue_trial(frozen.params, skip_if_exists=False)
        fresh = study.ask(fixed_distributions=frozen.distributions)
        fresh.set_user_attr("tune_trial_id", trial_id)
        search._ot_trials[trial_id] = fresh


def _optuna_trial_finished(search: OptunaSearch, trial_id: str) -> bool:
    ot_trial = search._ot_trials[trial_id]
    return search._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()


def _tell_optuna(search: OptunaSearch, trial_id: str, state, attrs: dict[str, str]) -> None:
    ot_trial = search._ot_trials[trial_id]
    for key, value in attrs.items():
        ot_trial.set_user_attr(key, value)
    search._ot_study.tell(ot_trial, None, state=state)


def _mark_told(search: OptunaSearch, trial_id: str) -> None:
    search._completed_trials.add(trial_id)


def _open_trial_ids(search: OptunaSearch) -> list[str]:
    """Tune trials the searcher suggested and was not yet told the end of."""
    return [t for t in search._ot_trials if t not in search._completed_trials]


def _fail_stored_trial(storage, trial, reason: str) -> None:
    import optuna

    storage.set_trial_user_attr(trial._trial_id, "mtard_reason", reason)
    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def _trial_storage():
    """The running Tune trial's StorageContext (its filesystem and `trial_fs_path`): Ray Tune exposes it
    only through the session module (a DeveloperAPI of `ray.train._internal`)."""
    from ray.train._internal.session import get_storage

    return get_storage()

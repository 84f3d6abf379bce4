"""`mtard search SPACE.yaml`: a multi-objective Ray Tune + Optuna search over training runs.

`run_search` checks the space and the storage, trains missing auto-train teachers once, joins
or starts Ray, plans how many trials run at once (`mtard.search.resources`), and runs Tune with
the trial function and the Optuna adapter of `mtard.search.tune_adapter`. The experiment's layout is
in `mtard.search.files`.

Decisions worth knowing:

* The defaults trial: the base config's value of every searched field is enqueued in the
  study (`points_to_evaluate` → `study.enqueue_trial`); the define-by-run function then
  receives those values from `trial.suggest_*`, and conditional parameters whose condition
  is false are simply absent. Its Tune config carries `is_default: true`.
* Resume (`--resume <storage>/<name>`): `Tuner.restore(resume_unfinished=True,
  resume_errored=False)`. Finished trials are neither lost nor re-run; trials that were
  running continue from their last epoch's checkpoint (the newest one checkpoints.json or
  Tune's state knows); errored trials stay errored (their Optuna trial is already FAIL;
  re-running them would need a new Optuna trial), run a new search to retry them. The
  searcher (and its Optuna study in study.db) comes back from Tune's state;
  `TUNE_GLOBAL_CHECKPOINT_S=2` keeps that state fresh. A trial that had finished all its
  epochs when the driver died is reported from its last checkpoint without training (and
  its identical record is not appended again). At the end the study is made to agree with
  records.jsonl (`tune_adapter.reconcile_study`): trials still RUNNING there get their recorded
  outcome, and only those never recorded (asked, but never started) are marked FAIL. A torn
  last line of records.jsonl is dropped and its trial recorded again from Tune's results; a
  lost study.db is rebuilt from the records. The storage location must be trusted: Tune's
  state there is a pickle.
* One driver per experiment (`mtard.search.lock`), held from the first check to the end.
* SIGINT / SIGTERM (`SearchInterrupts`): Tune stops the trials and saves its state, and the
  search ends with `mtard.errors.Interrupted` (exit 130 / 143) saying how to continue.
  A SPACE given with --resume may differ from the
  saved one in `budget.total` and `stop:` only (e.g. a larger budget extends a spent one); it then
  replaces the saved space.yaml, which the resumed searcher reads. The spent cost comes from the
  records, so a resumed search never starts its budget afresh.
* Budget and plateau (`mtard.search.budget`): the searcher starts no trial that could pass
  `budget.total`, and none once the front's hypervolume stopped moving (`stop:`); the search then
  ends normally (study, records, review complete) with the reason in stop_reason.json, the
  review (pareto.json `stop_reason`) and the final table.
* Ray. `address` (or $RAY_ADDRESS, as in a `ray job submit` job) joins that cluster;
  otherwise a new local Ray starts (`address="local"`: never another cluster found on the
  machine) and stops at the end. Trial processes are reused between trials (`reuse_actors`).
  Tune's console output is the legacy reporter at verbose=0 (quiet); the `[search]` lines
  are the live view.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from mtard.errors import MtardError
from mtard.runs import CHECKPOINTS_TO_KEEP
from mtard.search.files import BASE_CONFIG, RUNGS, SPACE, STUDY, VERIFIED_DIR, VERIFIED_FILES, ExperimentFiles, trial_dirname
from mtard.search.interrupts import SearchInterrupts
from mtard.search.lock import hold_experiment
from mtard.search.resources import DRIVER_RESOURCE, LOCAL_DRIVER_UNITS, plan_concurrency, trial_resources, uses_ray_train
from mtard.search.review import ReviewData
from mtard.search.space import SearchSpace, load_space
from mtard.staging import STORE_DIR, stage_search_teachers
from mtard.storage import absolute, check_folder_name, check_writable, first_missing, remove_empty_folders


def run_search(
    space: str | Path | None = None,
    *,
    storage: str | None = None,
    name: str | None = None,
    address: str | None = None,
    resume: str | None = None,
    num_samples: int | None = None,
    final_eval: bool = False,
) -> ReviewData:
    """Run (or, with `resume`, continue) a search; returns the final review.

    space: a space YAML path or a shipped space's name (None: the default; with `resume`, the
    saved one). storage: the experiments' parent folder or URI (default ./runs). name: the
    experiment's name (default: the space file's name). num_samples: overrides the space's.
    final_eval: afterwards, evaluate the front on the test split (`mtard.search.verify`).
    """
    if num_samples is not None and num_samples < 1:
        raise MtardError(f"--num-samples must be >= 1, got {num_samples}")
    interrupts = SearchInterrupts()
    with interrupts.installed():
        try:
            return _run_search(space, storage=storage, name=name, address=address, resume=resume, num_samples=num_samples,
                               final_eval=final_eval, interrupts=interrupts)
        except KeyboardInterrupt:  # before or after Tune's loop: nothing running to stop
            raise interrupts.interrupted() from None


def _run_search(space, *, storage, name, address, resume, num_samples, final_eval, interrupts: SearchInterrupts) -> ReviewData:
    from mtard.distributed import check_cluster_address

    check_cluster_address(address or os.environ.get("RAY_ADDRESS"))  # in seconds, before teachers are trained
    if resume:
        files, loaded = _resumed_experiment(resume, space=space, name=name, num_samples=num_samples)
        interrupts.experiment = files.uri
    else:
        loaded = load_space(space)
        if num_samples is not None:
            loaded.num_samples = int(num_samples)
        name = name or Path(loaded.source or space or "search").stem
        # STORE_DIR: the staged teachers' folder in the same storage.
        check_folder_name(name, "--name", reserved=(STORE_DIR,), example="digits_tiny")
        files = ExperimentFiles(absolute(storage, "runs"), name)
        _refuse_existing(files)
        created = first_missing(files.local)
        _check_storage(files)
    with hold_experiment(files):  # one driver per experiment, for its whole life
        if not resume:
            _refuse_existing(files)  # again: another driver may have got here first and finished meanwhile
        try:
            if not resume:
                _save_space(loaded, files)
                files.push()
            # Teachers first, before any trial: trained / checked here, staged where every node fetches them.
            stage_search_teachers(loaded, files.storage)
            return _run(loaded, files, address=address, restoring=bool(resume), final_eval=final_eval, interrupts=interrupts)
        except BaseException:
            if not resume:
                _forget_failed_start(files, created)
            raise


def _refuse_existing(files: ExperimentFiles) -> None:
    if _experiment_exists(files):
        raise MtardError(f"{files.uri} already holds a search: continue it with --resume {files.uri}, or pick another --name")


def _forget_failed_start(files: ExperimentFiles, created: Path | None) -> None:
    """A new search that failed (or was interrupted) before Tune saved any state: remove what it wrote,
    so that starting it again is not refused as "already holds a search", and no empty folder stays."""
    from ray import tune

    from mtard.search.lock import LOCK

    if files.records.exists() or tune.Tuner.can_restore(files.uri):
        return  # something ran: --resume continues it
    for name in (SPACE, BASE_CONFIG, STUDY, LOCK):
        (files.local / name).unlink(missing_ok=True)
    if created is not None:
        remove_empty_folders(created)


def _resumed_experiment(resume: str, *, space, name, num_samples) -> tuple[ExperimentFiles, SearchSpace]:
    if num_samples is not None:
        raise MtardError("--num-samples cannot change when resuming: the search continues with the trials it planned")
    root, experiment = absolute(resume, "runs").rstrip("/").rsplit("/", 1)
    if name and name != experiment:
        raise MtardError(f"--name {name} does not match the resumed experiment {experiment}")
    files = ExperimentFiles(root, experiment)
    files.pull()
    if not (files.local / SPACE).is_file():
        raise MtardError(f"--resume {resume}: no {SPACE} there; point at an experiment directory written by `mtard search` (runs/<name>)")
    saved = load_space(files.local / SPACE)
    if not space:
        return files, saved
    given = load_space(space)
    if _without_stop_rules(given) != _without_stop_rules(saved):
        raise MtardError(
            f"{space} differs from the space this search started with ({files.local / SPACE}) in more than "
            f"budget.total and stop:; resume without SPACE, or start a new search with --name"
        )
    if given.to_yaml_dict(base=BASE_CONFIG) != saved.to_yaml_dict(base=BASE_CONFIG):
        print(f"[search] resuming with {space}'s budget.total {given.budget['total']} and stop: {given.stop or 'none'} "
              f"(were {saved.budget['total']} and {saved.stop or 'none'})", flush=True)
        _save_space(given, files)
    return files, given


def _without_stop_rules(space: SearchSpace) -> dict:
    """The space as saved, less what a resume may change (`budget.total`, `stop:`)."""
    data = space.to_yaml_dict(base=BASE_CONFIG)
    data["budget"] = {k: v for k, v in data["budget"].items() if k != "total"}
    data.pop("stop")
    return data


def _check_storage(files: ExperimentFiles) -> None:
    if files.remote is None:
        fix = "pass --storage a folder you can write to (or an s3:// / gs:// URI)"
    else:
        fix = "set $MTARD_SEARCH_CACHE to a folder you can write to (the search keeps its own files there)"
    check_writable(files.local, "search storage", fix)


def _experiment_exists(files: ExperimentFiles) -> bool:
    from ray import tune

    if (files.local / STUDY).exists() or files.records.exists():
        return True
    try:
        return tune.Tuner.can_restore(files.uri)
    except Exception:
        return False


def _save_space(space: SearchSpace, files: ExperimentFiles) -> None:
    import yaml

    from mtard.config import save_config
    from mtard.storage import atomic_write

    save_config(space.base_config, files.local / BASE_CONFIG)
    text = "# resolved by `mtard search`; --resume reads this file (base: the saved base config)\n"
    text += yaml.safe_dump(space.to_yaml_dict(base=BASE_CONFIG), sort_keys=False, allow_unicode=True)
    atomic_write(files.local / SPACE, text)


def start_ray(address: str | None, space: SearchSpace) -> bool:
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
    # A local Ray offers `mtard_driver` like the cluster head, so Ray Train trial drivers take no
    # CPU. The dashboard (State API) is what frees the placement groups of Ray Train trials Tune
    # stops; only a time budget stops trials here, so it only starts then (it costs memory and
    # start-up time).
    ray.init(
        address="local",  # a new local Ray: never join another cluster found on this machine
        resources={DRIVER_RESOURCE: LOCAL_DRIVER_UNITS},
        include_dashboard=space.budget["time_budget_s"] is not None and uses_ray_train(space),
        **quiet,
    )
    return True


@contextmanager
def tune_environment(**extra: str):
    """Tune settings a search (and a confirmation) runs under, unless the user set them; restored after.

    Tune's experiment state every 2 s (default 10+): less to redo after a driver crash.
    The legacy console output honours verbose=0 (the new one still prints its banner).
    Each epoch's checkpoint with num_to_keep forces a state snapshot (wanted: less to redo after a
    crash); Tune would warn about that every few seconds on short epochs.
    Trials stay in their process's working directory (the driver's locally, the job's working
    dir on a cluster node), as Ray Train workers do: a relative teachers.catalog or data.root in
    the space then means the same files in a trial as in the driver that checked them. Tune's
    default moves each trial into its own log folder, where they are not.
    """
    quiet_snapshots = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
    defaults = {"TUNE_GLOBAL_CHECKPOINT_S": "2", "RAY_AIR_NEW_OUTPUT": "0", quiet_snapshots: "0", "RAY_CHDIR_TO_TRIAL_DIR": "0", **extra}
    saved_env = {k: os.environ.get(k) for k in defaults}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)


def _run(
    space: SearchSpace, files: ExperimentFiles, *, address: str | None, restoring: bool, final_eval: bool, interrupts: SearchInterrupts
) -> ReviewData:
    """The search itself: Ray up, the Tuner run to its end, the final review, Ray down again."""
    import ray

    started = start_ray(address, space)
    interrupts.install()  # ray.init replaced the SIGTERM handler
    judge = None
    try:
        judge = _start_rung_judge(space, files)
        with tune_environment(TUNE_DISABLE_SIGINT_HANDLER="1"):  # SearchInterrupts handles SIGINT and SIGTERM alike
            results = _fit(_tuner(space, files, restoring=restoring), files, interrupts)
            data = _final_review(space, files, results)
        print(_final_text(data, files))
        if final_eval:
            _final_eval(files)
        return data
    finally:
        if judge is not None:
            ray.kill(judge)
        if started:
            ray.shutdown()


def _start_rung_judge(space: SearchSpace, files: ExperimentFiles):
    """MO-ASHA's rung judge (a named actor on this node), or None when the space has no scheduler."""
    if space.scheduler["name"] != "moasha":
        return None
    from mtard.search.rung_judge import start_judge

    s = space.scheduler
    return start_judge(files.name, space.modes, s["eta"], s["rungs"], files.local / RUNGS)


def _tuner(space: SearchSpace, files: ExperimentFiles, *, restoring: bool):
    """The search's Tuner: a new one, or (--resume) the one Tune saved, after repairing what a crash tore."""
    from ray import tune

    from mtard.search import tune_adapter

    capacity = tune_adapter.cluster_capacity()
    concurrency = plan_concurrency(space, capacity, tune_adapter.node_shapes())
    ray_train = uses_ray_train(space)
    if ray_train:
        function = tune_adapter.make_ray_train_trial(space, files.uri, files.name)
    else:
        function = tune_adapter.make_direct_trial(space, files.read_checkpoints(), files.name)
    trainable = tune.with_resources(function, trial_resources(space, capacity))
    kind = "Ray Train trials" if ray_train else "direct trials"
    print(
        f"[search] {files.name}: {space.num_samples} trials of {space.budget['epochs']} epochs, {concurrency} at a time "
        f"({kind}), {len(space.params)} parameters, objectives {', '.join(f'{o.direction} {o.metric}' for o in space.objectives)}\n"
        f"[search] results: {files.uri} (tensorboard --logdir {shlex.quote(files.uri)}; optuna-dashboard {files.study_url})",
        flush=True,
    )
    if not restoring:
        return _new_tuner(space, files, trainable, concurrency)
    files.clear_stop_reason()  # the resumed searcher asks the (maybe larger) budget again
    if not tune.Tuner.can_restore(files.uri):
        raise MtardError(f"--resume {files.uri}: Tune saved no experiment state there yet (the search died too early); start it again without --resume")
    _repair_before_resume(files, space)
    return tune.Tuner.restore(files.uri, trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)


def _fit(tuner, files: ExperimentFiles, interrupts: SearchInterrupts):
    """`tuner.fit()`; a SIGINT / SIGTERM during it stops the trials and ends the search as an interruption."""
    if interrupts.signum is not None:  # signalled while the search was being set up
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # no stale handler of an earlier Tune run in this process
    interrupts.in_tune = True
    interrupts.experiment = files.uri
    # Tune's own stop messages name Tuner.restore; SearchInterrupts says how to continue instead.
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    try:
        results = tuner.fit()
    finally:
        interrupts.in_tune = False
    if interrupts.signum is not None:
        # Running trials stay RUNNING in Tune's state and in the study: --resume continues them.
        files.push()
        raise interrupts.interrupted()
    return results


def _final_review(space: SearchSpace, files: ExperimentFiles, results) -> ReviewData:
    """Records and study made whole (a crash may have torn them), then the review of the final state:
    every trial in the figure and the curves."""
    from mtard.search import tune_adapter

    progress = tune_adapter.SearchProgress(files, space, space.num_samples)
    for trial_id in tune_adapter.record_unrecorded(results, progress):
        print(f"[search] repaired: trial {trial_id} had no record (torn by a crash); rebuilt it from Tune's saved results", flush=True)
    for line in tune_adapter.reconcile_study(files, space):
        print(f"[search] repaired the study: {line}", flush=True)
    return progress.review()


def _repair_before_resume(files: ExperimentFiles, space: SearchSpace) -> None:
    """Say what a crash tore, and rebuild a lost study.db from the trials' records."""
    from mtard.search import tune_adapter
    from mtard.storage import drop_torn_lines

    torn = drop_torn_lines(files.records)
    if torn:
        print(f"[search] {files.records}: removed {torn} line(s) torn by a crash; the trials they held are recorded "
              f"again from Tune's saved results at the end", flush=True)
    if not (files.local / STUDY).exists():
        n = tune_adapter.rebuild_study(files, space)
        print(f"[search] {STUDY} was missing: rebuilt it from {n} trial record(s)", flush=True)


def _new_tuner(space: SearchSpace, files: ExperimentFiles, trainable, concurrency: int):
    from ray import tune

    from mtard.search import tune_adapter

    # A direct trial whose process dies is retried from its last checkpoint; a Ray Train trial's
    # worker group is restarted by Ray Train itself, and its driver's errors are deterministic.
    retries = 0 if uses_ray_train(space) else space.fixed_config().scaling.max_failures
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=tune_adapter.new_search_algorithm(space, files, files.name, concurrency),
            num_samples=space.num_samples,
            time_budget_s=space.budget["time_budget_s"],
            trial_dirname_creator=trial_dirname,
            trial_name_creator=trial_dirname,
            reuse_actors=True,  # one trial process per slot: torch, data and teachers load once
        ),
        run_config=tune.RunConfig(
            name=files.name,
            storage_path=files.storage,
            callbacks=[tune_adapter.SearchProgress(files, space, space.num_samples)],
            failure_config=tune.FailureConfig(max_failures=retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
            verbose=0,  # the SearchProgress lines are the live view
        ),
    )


def _final_text(data: ReviewData, files: ExperimentFiles) -> str:
    from mtard.search.render import render_front_table

    return (
        f"{render_front_table(data)}\n"
        f"results: {files.uri}/ (pareto.csv, trials.csv, pareto.json, study.db); "
        f"tensorboard --logdir {shlex.quote(files.uri)}"
    )


def _final_eval(files: ExperimentFiles) -> None:
    from mtard.search.render import render_verified
    from mtard.search.verify import evaluate_front

    path = evaluate_front(files.local)
    print(render_verified(json.loads(Path(path).read_text())))
    files.push(names=VERIFIED_FILES, dirs=(VERIFIED_DIR,))



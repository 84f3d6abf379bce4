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
  its identical record is not appended again). Optuna trials left RUNNING by a crash (asked,
  but never recorded in Tune's state) are marked FAIL at the end. The storage location must
  be trusted: Tune's state there is a pickle. A SPACE given with --resume may differ from the
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
import os
from pathlib import Path

from mtard.errors import MtardError
from mtard.search.files import BASE_CONFIG, RUNGS, SPACE, STUDY, VERIFIED_DIR, VERIFIED_FILES, ExperimentFiles, trial_dirname
from mtard.search.resources import DRIVER_RESOURCE, LOCAL_DRIVER_UNITS, plan_concurrency, trial_resources, uses_ray_train
from mtard.search.review import ReviewData
from mtard.search.space import SearchSpace, load_space
from mtard.staging import stage_search_teachers
from mtard.storage import absolute, check_writable

CHECKPOINTS_TO_KEEP = 2  # per trial: resuming needs only the latest; all would cost GBs per CIFAR trial


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
    if resume:
        files, loaded = _resumed_experiment(resume, space=space, name=name, num_samples=num_samples)
    else:
        loaded = load_space(space)
        if num_samples is not None:
            loaded.num_samples = int(num_samples)
        name = name or Path(loaded.source or space or "search").stem
        files = ExperimentFiles(absolute(storage, "runs"), name)
        if _experiment_exists(files):
            raise MtardError(f"{files.uri} already holds a search: continue it with --resume {files.uri}, or pick another --name")
        _check_storage(files)
        _save_space(loaded, files)
        files.push()
    # Teachers first, before any trial: trained / checked here, staged where every node fetches them.
    stage_search_teachers(loaded, files.storage)
    return _run(loaded, files, address=address, restoring=bool(resume), final_eval=final_eval)


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


def _run(space: SearchSpace, files: ExperimentFiles, *, address: str | None, restoring: bool, final_eval: bool) -> ReviewData:
    import ray
    from ray import tune

    from mtard.search import tune_adapter
    from mtard.search.rung_judge import start_judge

    started = _start_ray(address, space)
    judge = None
    # Tune's experiment state every 2 s (default 10+): less to redo after a driver crash.
    # The legacy console output honours verbose=0 (the new one still prints its banner).
    # Each epoch's checkpoint with num_to_keep forces a state snapshot (wanted: less to redo after a
    # crash); Tune would warn about that every few seconds on short epochs.
    # Trials stay in their process's working directory (the driver's locally, the job's working
    # dir on a cluster node), as Ray Train workers do: a relative teachers.catalog or data.root in
    # the space then means the same files in a trial as in the driver that checked them. Tune's
    # default moves each trial into its own log folder, where they are not.
    quiet_snapshots = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
    defaults = {"TUNE_GLOBAL_CHECKPOINT_S": "2", "RAY_AIR_NEW_OUTPUT": "0", quiet_snapshots: "0", "RAY_CHDIR_TO_TRIAL_DIR": "0"}
    saved_env = {k: os.environ.get(k) for k in defaults}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    try:
        capacity = tune_adapter.cluster_capacity()
        concurrency = plan_concurrency(space, capacity, tune_adapter.node_shapes())
        ray_train = uses_ray_train(space)
        if ray_train:
            function = tune_adapter.make_ray_train_trial(space, files.uri, files.name)
        else:
            function = tune_adapter.make_direct_trial(space, files.read_checkpoints(), files.name)
        if space.scheduler["name"] == "moasha":
            s = space.scheduler
            judge = start_judge(files.name, space.modes, s["eta"], s["rungs"], files.local / RUNGS)
        trainable = tune.with_resources(function, trial_resources(space, capacity))
        kind = "Ray Train trials" if ray_train else "direct trials"
        print(
            f"[search] {files.name}: {space.num_samples} trials of {space.budget['epochs']} epochs, {concurrency} at a time "
            f"({kind}), {len(space.params)} parameters, objectives {', '.join(f'{o.direction} {o.metric}' for o in space.objectives)}\n"
            f"[search] results: {files.uri} (tensorboard --logdir {files.uri}; optuna-dashboard {files.study_url})",
            flush=True,
        )
        if restoring:
            files.clear_stop_reason()  # the resumed searcher asks the (maybe larger) budget again
            if not tune.Tuner.can_restore(files.uri):
                raise MtardError(f"--resume {files.uri}: Tune saved no experiment state there yet (the search died too early); start it again without --resume")
            tuner = tune.Tuner.restore(files.uri, trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
        else:
            tuner = _new_tuner(space, files, trainable, concurrency)
        tuner.fit()
        tune_adapter.fail_orphaned_optuna_trials(files.study_url, files.name)
        data = tune_adapter.SearchProgress(files, space, space.num_samples).review(tensorboard=False)  # the callback drew each trial
        print(_final_text(data, files))
        if final_eval:
            _final_eval(files)
        return data
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
        if judge is not None:
            ray.kill(judge)
        if started:
            ray.shutdown()


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
    from mtard.search.render import render_table

    return (
        f"{render_table(data)}\n"
        f"results: {files.uri}/ (pareto.csv, trials.csv, pareto.json, study.db); "
        f"tensorboard --logdir {files.uri}"
    )


def _final_eval(files: ExperimentFiles) -> None:
    from mtard.search.render import render_verified
    from mtard.search.verify import evaluate_front

    path = evaluate_front(files.local)
    print(render_verified(json.loads(Path(path).read_text())))
    files.push(names=VERIFIED_FILES, dirs=(VERIFIED_DIR,))



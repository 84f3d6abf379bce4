"""`mtard search` end to end: real Ray (local cluster), real Optuna, real torch, tiny budgets.

Every promise of a search is checked on both kinds of trial (`mtard.search.tune_adapter`): *direct*
trials (one worker: the epoch loop runs in the Tune trial's process) and *Ray Train* trials
(here with 2 DDP workers each). The slow tests share ONE small search per kind (a module
fixture): its front, its Optuna study, its diverging defaults trial, its TensorBoard curves, its
placement groups and the test-set check of its front are checked by separate tests; the Ray Train
search also stops a dominated trial at an MO-ASHA rung, which both workers must leave together. The
kill-and-resume tests are in test_search_resume.py. The fast tests at the top need no Ray cluster.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from conftest import TINY_CLEAN, TINY_ROBUST
from mtard.errors import MtardError
from mtard.pareto import front
from mtard.search.space import parse_space

DIVERGING_LR = 1.0e6

# The tiny trial: MLP student and teachers, 2-step attacks, 64 validation images.
TINY_SET = {
    "teachers.clean": TINY_CLEAN,
    "teachers.robust": TINY_ROBUST,
    "student.arch": "mlp",
    "optim.milestones": [],
    "attack.steps": 2,
    "eval.pgd_steps": 2,
    "eval.max_samples": 64,
}
DIRECT = {"workers": 1, "cpus_per_worker": 1}
RAY_TRAIN_1 = {"workers": 1, "cpus_per_worker": 1, "ray_train": True}
RAY_TRAIN_2 = {"workers": 2, "cpus_per_worker": 1}


def write_space(
    folder: Path, catalog: Path, *, num_samples: int, epochs: int, space: dict, base_lr: float = 0.05,
    resources: dict | None = None, extra_set: dict | None = None, max_concurrent: int = 2,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(f"base: digits_mtard\noptim:\n  lr: {base_lr}\n")
    data = {
        "base": "base.yaml",
        "set": {"teachers.catalog": str(catalog), **TINY_SET, **(extra_set or {})},
        "sampler": {"name": "tpe", "seed": 0},
        "num_samples": num_samples,
        "max_concurrent": max_concurrent,
        "resources": resources or DIRECT,
        "budget": {"epochs": epochs},
        "space": space,
    }
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def brute_force_front(trial_rows: list[dict], budget: int) -> set[str]:
    ok = [r for r in trial_rows if r["status"] == "complete" and int(r["epochs"]) == budget]
    points = [(float(r["val_clean_acc"]), float(r["val_pgd_acc"])) for r in ok]
    return {ok[i]["trial_id"] for i in front(points, ["max", "max"])}


def load_study(exp: Path) -> optuna.Study:
    return optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'study.db'}")


def snapshot_epochs(run_dir: Path) -> list[int]:
    snap = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    return [r["metrics"]["epoch"] for r in snap["checkpoint_results"]]


def checkpoint_metrics(path: str) -> dict:
    from mtard.checkpoint import read

    return read(path)["metrics"]


# ---------------------------------------------------------------- fast: no cluster


def _space(**resources):
    return parse_space({
        "base": "digits_mtard",
        "num_samples": 6,
        "resources": resources or DIRECT,
        "space": {"optim.lr": {"loguniform": [0.01, 0.2]}},
    })


def test_direct_trials_reserve_one_worker_and_ray_train_trials_a_driver_plus_workers() -> None:
    from mtard.search.resources import plan_concurrency, trial_resources, uses_ray_train

    cap = {"CPU": 2.0, "mtard_driver": 1000.0}
    assert not uses_ray_train(_space()) and uses_ray_train(_space(**RAY_TRAIN_1)) and uses_ray_train(_space(**RAY_TRAIN_2))
    assert trial_resources(_space(), cap) == {"CPU": 1.0}
    assert trial_resources(_space(**RAY_TRAIN_1), cap) == {"CPU": 0, "mtard_driver": 0.01}
    assert trial_resources(_space(**RAY_TRAIN_1), {"CPU": 2.0}) == {"CPU": 0.01}
    gpu = _space(cpus_per_worker=2, gpus_per_worker=0.5, custom={"FAKE": 1}, accelerator_type="A100")
    assert trial_resources(gpu, cap) == {"CPU": 2.0, "GPU": 0.5, "FAKE": 1.0, "accelerator_type:A100": 0.001}
    # direct trials: two 1-CPU trials fit in 2 CPUs, with or without mtard_driver
    assert plan_concurrency(_space(), cap, [cap]) == 2
    assert plan_concurrency(_space(), {"CPU": 2.0}, [{"CPU": 2.0}]) == 2
    # a Ray Train driver without mtard_driver takes 0.01 CPU: two 1-CPU trials no longer fit in 2 CPUs
    assert plan_concurrency(_space(**RAY_TRAIN_1), cap, [cap]) == 2
    assert plan_concurrency(_space(**RAY_TRAIN_1), {"CPU": 2.0}, [{"CPU": 2.0}]) == 1
    # half a GPU per trial: two trials per GPU; capped by num_samples
    big = {"CPU": 64.0, "GPU": 4.0, "mtard_driver": 1000.0}
    assert plan_concurrency(_space(cpus_per_worker=2, gpus_per_worker=0.5), big, [big]) == 6
    assert plan_concurrency(_space(cpus_per_worker=2, gpus_per_worker=1), big, [big]) == 4
    assert plan_concurrency(_space(workers=2, cpus_per_worker=2, gpus_per_worker=1), big, [big]) == 2


def test_resources_that_do_not_fit_are_rejected() -> None:
    from mtard.search.resources import plan_concurrency

    cpu_only = {"CPU": 2.0, "mtard_driver": 1000.0}
    with pytest.raises(MtardError, match=r"no node can hold one worker \(CPU 1, GPU 1\)"):
        plan_concurrency(_space(gpus_per_worker=1), cpu_only, [cpu_only])
    with pytest.raises(MtardError, match="one trial needs GPU 1 .* at most 0"):
        plan_concurrency(_space(gpus_per_worker=1), cpu_only, [])
    with pytest.raises(MtardError, match="no node can hold one worker"):
        plan_concurrency(_space(cpus_per_worker=3), {"CPU": 4.0}, [{"CPU": 2.0}, {"CPU": 2.0}])
    fake = {"CPU": 2.0, "FAKE_GPU": 2.0, "mtard_driver": 1000.0}
    assert plan_concurrency(_space(custom={"FAKE_GPU": 1}), fake, [{"CPU": 1.0, "FAKE_GPU": 1.0}]) == 2
    with pytest.raises(MtardError, match="one trial needs FAKE_GPU 1"):
        plan_concurrency(_space(custom={"FAKE_GPU": 1}), cpu_only, [])
    with pytest.raises(MtardError, match="one trial needs CPU 4"):
        plan_concurrency(_space(workers=2, cpus_per_worker=2), cpu_only, [])


def test_classify_decides_every_status_in_one_place() -> None:
    from mtard.search.records import Status, classify

    objs = ["val_clean_acc", "val_pgd_acc"]
    nan = float("nan")

    def status(metrics, error=None):
        return classify(metrics, budget=3, objectives=objs, error=error)

    assert status({"epoch": 3, "val_clean_acc": 0.9, "val_pgd_acc": 0.4}) == (Status.COMPLETE, "")
    assert status({"epoch": 1, "diverged": 1.0, "error": "training diverged: loss is nan", "val_clean_acc": nan}) == (
        Status.DIVERGED, "training diverged: loss is nan")
    assert status({"epoch": 0, "failed": 1.0, "error": "teacher 'x': checkpoint not found"}) == (
        Status.ERROR, "teacher 'x': checkpoint not found")
    assert status({"epoch": 2, "val_clean_acc": 0.8, "val_pgd_acc": 0.3}) == (Status.STOPPED, "stopped after 2 of 3 epochs")
    assert status({"epoch": 3, "val_clean_acc": 0.8})[0] is Status.ERROR
    assert status({"epoch": 3, "val_clean_acc": 0.8, "val_pgd_acc": nan})[1] == "objective val_pgd_acc missing or not finite: nan"
    assert status({}, error="RuntimeError: boom") == (Status.ERROR, "RuntimeError: boom")


def test_optuna_searcher_tells_failures_as_failures(tmp_path: Path) -> None:
    from mtard.search.files import ExperimentFiles
    from mtard.search.tune_adapter import DEFAULT_KEY, MtardOptunaSearch

    space = _space()
    space.budget["epochs"] = 3  # the whole budget of the trials told below
    search = MtardOptunaSearch(
        space=space.define_by_run, metric=space.metrics, mode=space.modes, points_to_evaluate=[space.default_point()],
        sampler=space.make_sampler(), study_name="s", storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"),
        mtard_space=space, files=ExperimentFiles(str(tmp_path), "s"),
    )
    configs = {t: search.suggest(t) for t in ("a", "b", "c", "d", "e", "f")}
    assert configs["a"] == {"optim.lr": 0.05, DEFAULT_KEY: True}
    assert not any(c[DEFAULT_KEY] for t, c in configs.items() if t != "a")
    nan = float("nan")
    search.on_trial_complete("a", {"epoch": 3, "val_clean_acc": 0.9, "val_pgd_acc": 0.4})
    search.on_trial_complete("b", {"epoch": 1, "diverged": 1.0, "error": "training diverged: loss is nan", "val_clean_acc": nan, "val_pgd_acc": nan})
    search.on_trial_complete("c", {"epoch": 2, "val_clean_acc": 0.8, "val_pgd_acc": 0.3})
    search.on_trial_complete("d", None, error=True)
    search.on_trial_complete("e", {"epoch": 3, "val_clean_acc": 0.8})  # an objective missing
    search.on_trial_complete("f", {"epoch": 0, "failed": 1.0, "error": "no teacher file"})
    trials = {t.user_attrs["tune_trial_id"]: t for t in optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").trials}
    S = optuna.trial.TrialState
    assert trials["a"].state == S.COMPLETE and trials["a"].values == [0.9, 0.4]
    assert trials["b"].state == S.FAIL and "diverged" in trials["b"].user_attrs["mtard_reason"]
    assert trials["c"].state == S.PRUNED and trials["c"].user_attrs["mtard_status"] == "stopped"
    assert trials["d"].state == S.FAIL and trials["e"].state == S.FAIL
    assert trials["f"].state == S.FAIL and trials["f"].user_attrs["mtard_reason"] == "no teacher file"
    assert trials["a"].params == {"optim.lr": 0.05}


def test_records_are_deduplicated_and_survive_a_torn_line(tmp_path: Path) -> None:
    from mtard.search.records import Status, TrialRecord, append_record, read_records

    path = tmp_path / "records.jsonl"
    append_record(path, TrialRecord("t1", status="error", reason="boom"))
    append_record(path, TrialRecord("t2", status="complete", metrics={"val_clean_acc": float("nan")}))
    append_record(path, TrialRecord("t1", status="complete"))
    with open(path, "a") as f:
        f.write('{"trial_id": "t3", "stat')  # a crash mid-write
    assert [(r.trial_id, r.status) for r in read_records(path)] == [("t1", "complete"), ("t2", "complete")]
    append_record(path, TrialRecord("t4", status="complete"))  # after the torn line, on a line of its own
    records = read_records(path)
    assert [(r.trial_id, r.status) for r in records] == [("t1", "complete"), ("t2", "complete"), ("t4", "complete")]
    assert records[0].status is Status.COMPLETE
    assert records[1].metrics["val_clean_acc"] is None  # strict JSON: NaN is written as null
    assert "NaN" not in path.read_text()


def test_train_run_state_reads_the_last_checkpoint(tmp_path: Path) -> None:
    from mtard.search.tune_adapter import train_run_state

    run = tmp_path / "train-x"
    run.mkdir()
    assert train_run_state(str(tmp_path), "train-x") is None
    results = [{"checkpoint_dir_name": f"checkpoint_{e}", "metrics": {"epoch": e}} for e in (1, 2)]
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps({"checkpoint_results": results, "latest_checkpoint_result": results[-1]}))
    state = train_run_state(str(tmp_path), "train-x")
    assert state["checkpoint"] == str(run / "checkpoint_2" / "checkpoint.pt") and state["metrics"]["epoch"] == 2


def test_make_record_statuses_checkpoints_and_time(tmp_path: Path) -> None:
    from mtard.search.files import ExperimentFiles
    from mtard.search.tune_adapter import DEFAULT_KEY, SearchProgress

    space = parse_space({"base": "digits_mtard", "num_samples": 4, "budget": {"epochs": 2}, "space": {"optim.lr": {"loguniform": [0.01, 0.2]}}})
    files = ExperimentFiles(str(tmp_path), "exp")
    files.local.mkdir(parents=True)
    progress = SearchProgress(files, space, 4)
    nan = float("nan")

    def trial(tid, result, **config):
        return SimpleNamespace(trial_id=tid, config={"optim.lr": 0.05, DEFAULT_KEY: False, **config}, last_result=result, error_file=None)

    # A direct trial: its checkpoints arrive through on_checkpoint, after each epoch's result.
    progress.on_trial_result(0, [], trial("a", {}), {"epoch": 1})
    progress.on_checkpoint(0, [], trial("a", {}), SimpleNamespace(path=str(tmp_path / "exp" / "trial-a" / "checkpoint_000000")))
    progress.on_trial_result(0, [], trial("a", {}), {"epoch": 2})
    progress.on_checkpoint(0, [], trial("a", {}), SimpleNamespace(path=str(tmp_path / "exp" / "trial-a" / "checkpoint_000001")))
    result = {"epoch": 2, "val_clean_acc": 0.9, "val_pgd_acc": 0.4, "time_in_epochs_s": 7.5, "train_time_s": 3.0, "pid": 1}
    ok = progress.make_record(trial("a", result, **{DEFAULT_KEY: True}), error=None)
    assert (ok.status, ok.epochs, ok.budget, ok.is_default, ok.method) == ("complete", 2, 2, True, "mtard")
    assert ok.checkpoint == str(tmp_path / "exp" / "trial-a" / "checkpoint_000001" / "checkpoint.pt") and "pid" not in ok.metrics
    assert ok.train_time_s == 7.5  # every epoch's time, not only the kept checkpoints'
    assert ok.params == {"optim.lr": 0.05} and ok.teachers == {"clean": "digits_cnn_clean", "robust": "digits_cnn_trades"}
    assert files.read_checkpoints()["a"] == {"epoch": 2, "checkpoint": ok.checkpoint}  # what a resume starts from
    # A Ray Train trial reports its checkpoint directory with the result.
    progress.on_trial_result(0, [], trial("r", {}), {"epoch": 1, "checkpoint_path": str(tmp_path / "train-r" / "checkpoint_1")})
    assert progress.make_record(trial("r", {"epoch": 1}), error=None).checkpoint == str(tmp_path / "train-r" / "checkpoint_1" / "checkpoint.pt")
    div = progress.make_record(trial("b", {"epoch": 1, "diverged": 1.0, "error": "training diverged: loss is nan", "val_clean_acc": nan, "val_pgd_acc": nan}), error=None)
    assert (div.status, div.reason, div.checkpoint) == ("diverged", "training diverged: loss is nan", "")
    short = progress.make_record(trial("c", {"epoch": 1, "val_clean_acc": 0.9, "val_pgd_acc": 0.4}), error=None)
    assert short.status == "stopped" and "1 of 2" in short.reason
    rec = progress.make_record(trial("d", {}), error="mtard.errors.MtardError: teacher 'x': checkpoint not found")
    assert rec.status == "error" and rec.reason == "mtard.errors.MtardError: teacher 'x': checkpoint not found"


def test_cloud_storage_mirror_round_trip(tmp_path: Path, monkeypatch) -> None:
    from mtard.search.files import ExperimentFiles

    monkeypatch.setenv("MTARD_SEARCH_CACHE", str(tmp_path / "cache"))
    files = ExperimentFiles(f"file://{tmp_path / 'bucket'}", "exp")
    assert files.local == (tmp_path / "cache" / "exp").resolve() and files.remote == f"file://{tmp_path / 'bucket'}/exp"
    files.local.mkdir(parents=True)
    (files.local / "records.jsonl").write_text("{}\n")
    files.write_checkpoints({"t": {"epoch": 1, "checkpoint": "s3://b/exp/trial-t/checkpoint_000000/checkpoint.pt"}})
    (files.local / "review").mkdir()
    (files.local / "review" / "events.x").write_text("e")
    files.push()
    assert (tmp_path / "bucket" / "exp" / "records.jsonl").read_text() == "{}\n"
    assert (tmp_path / "bucket" / "exp" / "review" / "events.x").is_file()
    monkeypatch.setenv("MTARD_SEARCH_CACHE", str(tmp_path / "other"))
    again = ExperimentFiles(f"file://{tmp_path / 'bucket'}", "exp")
    again.pull()  # --resume on another machine: the driver-side files come back
    assert (again.local / "records.jsonl").read_text() == "{}\n"
    assert (again.local / "review" / "events.x").read_text() == "e"
    assert again.read_checkpoints()["t"]["epoch"] == 1


def test_search_refuses_bad_requests_before_starting(tmp_path: Path, tiny_catalog: Path, monkeypatch) -> None:
    from mtard.search.run import run_search

    monkeypatch.chdir(tmp_path)
    path = write_space(tmp_path / "sp", tiny_catalog, num_samples=2, epochs=1, space={"optim.lr": {"loguniform": [0.01, 0.2]}})
    (tmp_path / "runs" / "space").mkdir(parents=True)
    (tmp_path / "runs" / "space" / "study.db").write_text("")
    with pytest.raises(MtardError, match="already holds a search.*--resume"):
        run_search(path, storage=str(tmp_path / "runs"))
    with pytest.raises(MtardError, match="no space.yaml"):
        run_search(resume=str(tmp_path / "runs" / "nothing"))
    with pytest.raises(MtardError, match="--num-samples cannot change"):
        run_search(resume=str(tmp_path / "runs" / "space"), num_samples=3)
    with pytest.raises(MtardError, match="--num-samples must be >= 1, got 0"):
        run_search(path, storage=str(tmp_path / "runs"), name="zero", num_samples=0)
    assert not (tmp_path / "runs" / "zero").exists()


def test_cli_rejects_zero_samples_and_unwritable_storage(tmp_path: Path, tiny_catalog: Path, capsys) -> None:
    from mtard.cli import main

    path = write_space(tmp_path / "sp", tiny_catalog, num_samples=2, epochs=1, space={"optim.lr": {"loguniform": [0.01, 0.2]}})
    assert main(["search", str(path), "--storage", str(tmp_path / "runs"), "--num-samples", "0"]) == 2
    assert capsys.readouterr().err.strip() == "mtard: error: --num-samples must be >= 1, got 0"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        assert main(["search", str(path), "--storage", str(locked)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"search storage {locked / 'space'} is not writable" in err and "--storage" in err
    finally:
        locked.chmod(0o700)


def test_unwritable_storage_is_one_clear_line(tmp_path: Path, tiny_catalog: Path) -> None:
    """Also as root (who may write anywhere): a storage path under a regular file cannot be created."""
    from mtard.search.run import run_search

    path = write_space(tmp_path / "sp", tiny_catalog, num_samples=2, epochs=1, space={"optim.lr": {"loguniform": [0.01, 0.2]}})
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(MtardError, match=r"search storage .*file/space is not writable \(.*\): pass --storage a folder you can write to"):
        run_search(path, storage=str(tmp_path / "file"))


def test_evaluate_front_on_a_pareto_json_that_is_not_json_is_one_line(tmp_path: Path, capsys) -> None:
    from mtard.cli import main

    (tmp_path / "pareto.json").write_text('{"objectives": [')  # torn, or edited by hand
    assert main(["evaluate-front", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{tmp_path / 'pareto.json'} is not a pareto.json written by `mtard search`" in err


# ---------------------------------------------------------------- slow: one real search per kind of trial


# kind: (resources, trials, epochs per trial, settings of its own)
KINDS = {
    # direct: 1 epoch of MTARD, 2 trials at a time; TPE's seed 0 draws lr 0.05, 0.1 and 0.2 after the defaults
    "direct": (DIRECT, 4, 1, {}),
    # Ray Train, 2 workers per trial: one trial at a time on 2 CPUs. SAT (no teachers) learns in an epoch at lr
    # 0.2, and MO-ASHA judges at epoch 1 (eta 2): random search's seed 26 draws lr 0.2, then 1e-5, which learns
    # nothing and is stopped there, so both ranks of its trial must leave the loop at the same epoch.
    "ray_train": (RAY_TRAIN_2, 3, 2, {"set": {"method.name": "sat"}, "sampler": {"name": "random", "seed": 26},
                                      "scheduler": {"name": "moasha", "eta": 2, "rungs": [1]}}),
}
LEARNS_NOTHING_LR = 1.0e-5


@pytest.fixture(scope="module", params=list(KINDS))
def search(request, tmp_path_factory, _trained_teacher_store, local_ray):
    """One search; the defaults trial (lr 1e6) diverges."""
    from mtard.search.run import run_search

    resources, trials, epochs, own = KINDS[request.param]
    catalog, _ = _trained_teacher_store
    root = tmp_path_factory.mktemp(f"search_{request.param}")
    space_path = write_space(
        root / "space", catalog, num_samples=trials, epochs=epochs, base_lr=DIVERGING_LR, resources=resources,
        extra_set=own.get("set"),
        space={
            "optim.lr": {"choice": [DIVERGING_LR, LEARNS_NOTHING_LR, 0.2] if "scheduler" in own else [DIVERGING_LR, 0.05, 0.1, 0.2]},
            "balance.w_lr": {"loguniform": [0.005, 0.1]},
            "balance.learn_temperature": {"choice": [True, False]},
            "balance.tau_max": {"uniform": [2, 10], "when": {"balance.learn_temperature": True}},
        },
    )
    data = yaml.safe_load(space_path.read_text())
    data.update({k: v for k, v in own.items() if k != "set"})
    space_path.write_text(yaml.safe_dump(data, sort_keys=False))
    review = run_search(space_path, storage=str(root / "runs"), name="s")
    pgs = local_ray.util.placement_group_table()
    return SimpleNamespace(kind=request.param, exp=root / "runs" / "s", data=review, pgs=pgs, trials=trials, epochs=epochs)


@pytest.mark.slow
def test_search_front_records_and_curves(search) -> None:
    exp = search.exp
    trials = read_csv(exp / "trials.csv")
    assert len(trials) == search.trials
    pareto = read_csv(exp / "pareto.csv")
    assert pareto, "some trial must complete"
    assert {r["trial_id"] for r in pareto} == brute_force_front(trials, budget=search.epochs)
    assert {r.trial_id for r in search.data.front} == {r["trial_id"] for r in pareto}
    checkpoints = json.loads((exp / "checkpoints.json").read_text())
    for r in search.data.records:
        if r.status != "complete":
            continue
        # trained its budget exactly once; the record points at the last epoch's checkpoint
        if search.kind == "ray_train":
            assert snapshot_epochs(exp / f"train-{r.trial_id}") == list(range(1, search.epochs + 1))
            assert r.checkpoint.startswith(str(exp / f"train-{r.trial_id}" / "checkpoint_"))
        else:
            assert r.checkpoint == str(exp / f"trial-{r.trial_id}" / f"checkpoint_{search.epochs - 1:06d}" / "checkpoint.pt")
        assert checkpoints[r.trial_id] == {"epoch": search.epochs, "checkpoint": r.checkpoint}
        assert checkpoint_metrics(r.checkpoint)["epoch"] == search.epochs
        # compute accounting: the trial's time in epochs, and a measured start-up
        assert r.train_time_s == r.metrics["time_in_epochs_s"] > 0
        assert r.startup_s is not None and r.startup_s >= 0
    # the review's TensorBoard run and Tune's per-trial curves are there
    assert list((exp / "review").glob("events.out.tfevents.*"))
    assert all(list((exp / f"trial-{r['trial_id']}").glob("events.out.tfevents.*")) for r in trials)
    assert (exp / "space.yaml").is_file() and (exp / "base_config.yaml").is_file()


@pytest.mark.slow
def test_optuna_study_holds_every_trial_with_both_values(search) -> None:
    exp = search.exp
    records = {r["trial_id"]: r for r in read_lines(exp / "records.jsonl")}
    study = load_study(exp)
    assert len(study.trials) == search.trials
    by_tune = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    assert set(by_tune) == set(records)
    for tid, rec in records.items():
        t = by_tune[tid]
        if rec["status"] == "complete":
            assert t.state == optuna.trial.TrialState.COMPLETE
            assert t.values == [rec["metrics"]["val_clean_acc"], rec["metrics"]["val_pgd_acc"]]
            assert t.params == rec["params"]
        else:  # stopped at a rung: pruned; diverged: failed
            state = optuna.trial.TrialState.PRUNED if rec["status"] == "stopped" else optuna.trial.TrialState.FAIL
            assert t.state == state and t.user_attrs["mtard_status"] == rec["status"]
    assert {t.number for t in study.best_trials} <= {by_tune[tid].number for tid, r in records.items() if r["status"] == "complete"}


@pytest.mark.slow
def test_diverging_defaults_trial_fails_cleanly_and_the_search_continues(search) -> None:
    exp = search.exp
    trials = read_csv(exp / "trials.csv")
    default = [r for r in trials if r["is_default"] in ("True", "true", "1")]
    assert len(default) == 1
    d = default[0]
    assert d["status"] == "diverged" and d["on_front"] in ("False", "false", "0")
    assert "diverged" in d["reason"] and "lower optim.lr" in d["reason"]
    assert float(d["optim.lr"]) == DIVERGING_LR
    rec = next(r for r in search.data.records if r.is_default)
    assert rec.params == {"optim.lr": DIVERGING_LR, "balance.w_lr": 0.025, "balance.learn_temperature": True, "balance.tau_max": 10.0}
    assert rec.epochs == 1 and rec.budget == search.epochs and rec.checkpoint == ""  # no good epoch to keep
    assert rec.trial_id in {e.record.trial_id for e in search.data.excluded}
    # the search went on: every trial finished, the others trained normally
    assert sum(r["status"] == "complete" for r in trials) >= 1
    assert all(r["status"] in ("complete", "diverged", "stopped") for r in trials)
    for r in trials:
        if r["status"] == "diverged":
            assert float(r["optim.lr"]) == DIVERGING_LR


@pytest.mark.slow
def test_a_ray_train_trial_dominated_at_a_rung_stops_on_every_rank(search) -> None:
    if search.kind != "ray_train":
        pytest.skip("the direct search has no rungs (test_moasha_search.py stops direct trials)")
    from test_moasha_search import check_rung_stops

    stopped = check_rung_stops(search.exp, search.data, epochs=search.epochs)
    assert sorted(r.params["optim.lr"] for r in search.data.records) == sorted([DIVERGING_LR, 0.2, LEARNS_NOTHING_LR])
    assert [r.trial_id for r in search.data.records if r.params["optim.lr"] == LEARNS_NOTHING_LR] == list(stopped)
    for tid in stopped:  # both ranks left the loop at the rung: Ray Train recorded epoch 1 only, and nothing hung
        assert snapshot_epochs(search.exp / f"train-{tid}") == [1]


@pytest.mark.slow
def test_no_placement_group_is_left_behind(search) -> None:
    assert search.pgs, "the trials created placement groups"
    assert all(pg["state"] == "REMOVED" for pg in search.pgs.values()), search.pgs


@pytest.mark.slow
def test_final_eval_finds_every_front_members_checkpoint(search) -> None:
    from mtard.search.verify import evaluate_front

    path = evaluate_front(search.exp, attacks=["clean"], max_samples=32, device="cpu")
    members = json.loads(path.read_text())["members"]
    assert {m["trial_id"] for m in members} == {r.trial_id for r in search.data.front}
    assert all("error" not in m and 0 <= m["test"]["clean"] <= 1 and m["samples"] == 32 for m in members), members


@pytest.mark.slow
def test_a_search_on_the_selected_epoch_keeps_best_pt_for_its_front(tmp_path: Path, trained_teachers: Path, local_ray) -> None:
    """eval.select: best in a search: objectives from the selected epoch, and best.pt stands for each trial."""
    from mtard.checkpoint import read
    from mtard.search.run import run_search

    space_path = write_space(tmp_path / "space", trained_teachers, num_samples=2, epochs=3,
                             space={"optim.lr": {"loguniform": [0.01, 0.2]}},
                             extra_set={"eval.select": "best", "eval.select_every": 1})
    data = yaml.safe_load(space_path.read_text())
    data["objectives"] = [{"metric": "selected_val_clean_acc", "direction": "max"},
                          {"metric": "selected_val_pgd_acc", "direction": "max"}]
    space_path.write_text(yaml.safe_dump(data, sort_keys=False))
    review = run_search(space_path, storage=str(tmp_path / "runs"), name="b")
    complete = [r for r in review.records if r.status == "complete"]
    assert len(complete) == 2
    for r in complete:
        assert r.checkpoint.endswith("/best.pt"), r.checkpoint
        best = read(r.checkpoint)
        assert best["epoch"] == r.metrics["selected_epoch"] >= 1
        assert best["metrics"]["val_pgd_acc"] == r.metrics["selected_val_pgd_acc"]
    front = json.loads((tmp_path / "runs" / "b" / "pareto.json").read_text())["front"]
    assert front and all(m["checkpoint"].endswith("/best.pt") for m in front)

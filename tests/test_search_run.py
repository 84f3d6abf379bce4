"""`mtard search` end to end: real Ray (local cluster), real Optuna, real torch, tiny budgets.

The slow tests share ONE small search (module fixture): its front, its Optuna study, its
diverging defaults trial and its placement groups are checked by separate tests. The
kill-and-resume test runs `mtard search` as a subprocess, SIGKILLs it mid-search and resumes.
The fast tests at the top need no Ray cluster.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
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


def write_space(folder: Path, catalog: Path, *, num_samples: int, epochs: int, space: dict, base_lr: float = 0.05) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(f"base: digits_mtard\noptim:\n  lr: {base_lr}\n")
    data = {
        "base": "base.yaml",
        "set": {"teachers.catalog": str(catalog), **TINY_SET},
        "sampler": {"name": "tpe", "seed": 0},
        "num_samples": num_samples,
        "max_concurrent": 2,
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "budget": {"epochs": epochs},
        "space": space,
    }
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def search_args(**kw) -> argparse.Namespace:
    args = dict(space=None, storage=None, name=None, address=None, resume=None, final_eval=False, num_samples=None)
    args.update(kw)
    return argparse.Namespace(**args)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def brute_force_front(trial_rows: list[dict], budget: int) -> set[str]:
    ok = [r for r in trial_rows if r["status"] == "complete" and int(r["epochs"]) == budget]
    points = [(float(r["val_clean_acc"]), float(r["val_pgd_acc"])) for r in ok]
    return {ok[i]["trial_id"] for i in front(points, ["max", "max"])}


def load_study(exp: Path) -> optuna.Study:
    return optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'study.db'}")


def snapshot_epochs(run_dir: Path) -> list[int]:
    snap = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    return [r["metrics"]["epoch"] for r in snap["checkpoint_results"]]


# ---------------------------------------------------------------- fast: no cluster


def _space(**resources):
    return parse_space({
        "base": "digits_mtard",
        "num_samples": 6,
        "resources": resources or {"workers": 1, "cpus_per_worker": 1},
        "space": {"optim.lr": {"loguniform": [0.01, 0.2]}},
    })


def test_concurrency_from_cpus_gpus_and_the_driver_resource() -> None:
    from mtard.search.run import driver_resources, plan_concurrency

    cap = {"CPU": 2.0, "mtard_driver": 1000.0}
    driver = driver_resources(cap)
    assert driver == {"CPU": 0, "mtard_driver": 0.01}
    assert plan_concurrency(_space(), cap, [cap], driver) == 2
    # no mtard_driver: the driver takes 0.01 CPU, so two 1-CPU trials no longer fit in 2 CPUs
    assert driver_resources({"CPU": 2.0}) == {"CPU": 0.01}
    assert plan_concurrency(_space(), {"CPU": 2.0}, [{"CPU": 2.0}], {"CPU": 0.01}) == 1
    # half a GPU per trial: two trials per GPU; capped by num_samples
    gpu = {"CPU": 64.0, "GPU": 4.0, "mtard_driver": 1000.0}
    assert plan_concurrency(_space(cpus_per_worker=2, gpus_per_worker=0.5), gpu, [gpu], driver) == 6
    assert plan_concurrency(_space(cpus_per_worker=2, gpus_per_worker=1), gpu, [gpu], driver) == 4


def test_resources_that_do_not_fit_are_rejected() -> None:
    from mtard.search.run import plan_concurrency

    cpu_only = {"CPU": 2.0, "mtard_driver": 1000.0}
    driver = {"CPU": 0, "mtard_driver": 0.01}
    with pytest.raises(MtardError, match=r"no node can hold one worker \(CPU 1, GPU 1\)"):
        plan_concurrency(_space(gpus_per_worker=1), cpu_only, [cpu_only], driver)
    with pytest.raises(MtardError, match="one trial needs GPU 1 .* at most 0"):
        plan_concurrency(_space(gpus_per_worker=1), cpu_only, [], driver)
    with pytest.raises(MtardError, match="no node can hold one worker"):
        plan_concurrency(_space(cpus_per_worker=3), {"CPU": 4.0}, [{"CPU": 2.0}, {"CPU": 2.0}], {"CPU": 0.01})
    fake = {"CPU": 2.0, "FAKE_GPU": 2.0, "mtard_driver": 1000.0}
    assert plan_concurrency(_space(custom={"FAKE_GPU": 1}), fake, [{"CPU": 1.0, "FAKE_GPU": 1.0}], driver) == 2
    with pytest.raises(MtardError, match="one trial needs FAKE_GPU 1"):
        plan_concurrency(_space(custom={"FAKE_GPU": 1}), cpu_only, [], driver)
    with pytest.raises(MtardError, match="one trial needs CPU 4"):
        plan_concurrency(_space(workers=2, cpus_per_worker=2), cpu_only, [], driver)


def test_optuna_searcher_tells_failures_as_failures(tmp_path: Path) -> None:
    from mtard.search.run import DEFAULT_KEY, MtardOptunaSearch

    space = _space()
    search = MtardOptunaSearch(
        space=space.define_by_run, metric=space.metrics, mode=space.modes, points_to_evaluate=[space.default_point()],
        sampler=space.make_sampler(), study_name="s", storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"),
        budget=3,
    )
    configs = {t: search.suggest(t) for t in ("a", "b", "c", "d", "e")}
    assert configs["a"] == {"optim.lr": 0.05, DEFAULT_KEY: True}
    assert not any(c[DEFAULT_KEY] for t, c in configs.items() if t != "a")
    nan = float("nan")
    search.on_trial_complete("a", {"epoch": 3, "val_clean_acc": 0.9, "val_pgd_acc": 0.4})
    search.on_trial_complete("b", {"epoch": 1, "diverged": 1.0, "error": "training diverged: loss is nan", "val_clean_acc": nan, "val_pgd_acc": nan})
    search.on_trial_complete("c", {"epoch": 2, "val_clean_acc": 0.8, "val_pgd_acc": 0.3})
    search.on_trial_complete("d", None, error=True)
    search.on_trial_complete("e", {"epoch": 3, "val_clean_acc": 0.8})  # an objective missing
    trials = {t.user_attrs["tune_trial_id"]: t for t in optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").trials}
    S = optuna.trial.TrialState
    assert trials["a"].state == S.COMPLETE and trials["a"].values == [0.9, 0.4]
    assert trials["b"].state == S.FAIL and "diverged" in trials["b"].user_attrs["mtard_reason"]
    assert trials["c"].state == S.PRUNED and trials["c"].user_attrs["mtard_status"] == "stopped"
    assert trials["d"].state == S.FAIL and trials["e"].state == S.FAIL
    assert trials["a"].params == {"optim.lr": 0.05}


def test_records_are_deduplicated_and_survive_a_torn_line(tmp_path: Path) -> None:
    from mtard.search.review import TrialRecord
    from mtard.search.run import append_record, read_records

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
    assert math.isnan(records[1].metrics["val_clean_acc"])


def test_train_run_state_reads_the_last_checkpoint(tmp_path: Path) -> None:
    from mtard.search.run import train_run_state

    run = tmp_path / "train-x"
    run.mkdir()
    assert train_run_state(str(tmp_path), "train-x") is None
    results = [{"checkpoint_dir_name": f"checkpoint_{e}", "metrics": {"epoch": e, "train_time_s": 1.5}} for e in (1, 2)]
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps({"checkpoint_results": results, "latest_checkpoint_result": results[-1]}))
    state = train_run_state(str(tmp_path), "train-x")
    assert state["checkpoint"] == str(run / "checkpoint_2" / "checkpoint.pt")
    assert state["metrics"]["epoch"] == 2 and state["epochs"] == [1, 2] and state["train_time_s"] == 3.0


def test_make_record_statuses(tmp_path: Path) -> None:
    from mtard.search.run import DEFAULT_KEY, make_record

    space = load_space_tiny()
    nan = float("nan")

    def trial(tid, result, **config):
        return SimpleNamespace(trial_id=tid, config={"optim.lr": 0.05, DEFAULT_KEY: False, **config}, last_result=result, error_file=None)

    ok = make_record(trial("a", {"epoch": 2, "val_clean_acc": 0.9, "val_pgd_acc": 0.4, "checkpoint_path": str(tmp_path / "c"), "pid": 1}, **{DEFAULT_KEY: True}), space, str(tmp_path), errored=False)
    assert (ok.status, ok.epochs, ok.budget, ok.is_default, ok.method) == ("complete", 2, 2, True, "mtard")
    assert ok.checkpoint == str(tmp_path / "c" / "checkpoint.pt") and "pid" not in ok.metrics
    assert ok.params == {"optim.lr": 0.05} and ok.teachers == {"clean": "digits_cnn_clean", "robust": "digits_cnn_trades"}
    div = make_record(trial("b", {"epoch": 1, "diverged": 1.0, "error": "training diverged: loss is nan", "val_clean_acc": nan, "val_pgd_acc": nan}), space, str(tmp_path), errored=False)
    assert (div.status, div.reason, div.checkpoint) == ("diverged", "training diverged: loss is nan", "")
    short = make_record(trial("c", {"epoch": 1, "val_clean_acc": 0.9, "val_pgd_acc": 0.4}), space, str(tmp_path), errored=False)
    assert short.status == "stopped" and "1 of 2" in short.reason
    err_file = tmp_path / "error.txt"
    err_file.write_text("Traceback (most recent call last):\n  ...\nmtard.errors.MtardError: teacher 'x': checkpoint not found\n")
    bad = trial("d", {})
    bad.error_file = str(err_file)
    rec = make_record(bad, space, str(tmp_path), errored=True)
    assert rec.status == "error" and rec.reason == "mtard.errors.MtardError: teacher 'x': checkpoint not found"


def load_space_tiny():
    return parse_space({"base": "digits_mtard", "num_samples": 4, "budget": {"epochs": 2}, "space": {"optim.lr": {"loguniform": [0.01, 0.2]}}})


def test_cloud_storage_mirror_round_trip(tmp_path: Path, monkeypatch) -> None:
    from mtard.search.run import ExperimentFiles

    monkeypatch.setenv("MTARD_SEARCH_CACHE", str(tmp_path / "cache"))
    files = ExperimentFiles(f"file://{tmp_path / 'bucket'}", "exp")
    assert files.local == (tmp_path / "cache" / "exp").resolve() and files.remote == f"file://{tmp_path / 'bucket'}/exp"
    files.local.mkdir(parents=True)
    (files.local / "records.jsonl").write_text("{}\n")
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


def test_search_refuses_an_existing_experiment_and_a_bad_resume(tmp_path: Path, tiny_catalog: Path, monkeypatch) -> None:
    from mtard.search.run import run_search

    monkeypatch.chdir(tmp_path)
    path = write_space(tmp_path / "sp", tiny_catalog, num_samples=2, epochs=1, space={"optim.lr": {"loguniform": [0.01, 0.2]}})
    (tmp_path / "runs" / "space").mkdir(parents=True)
    (tmp_path / "runs" / "space" / "study.db").write_text("")
    with pytest.raises(MtardError, match="already holds a search.*--resume"):
        run_search(search_args(space=str(path), storage=str(tmp_path / "runs")))
    with pytest.raises(MtardError, match="no space.yaml"):
        run_search(search_args(resume=str(tmp_path / "runs" / "nothing")))
    with pytest.raises(MtardError, match="--num-samples cannot change"):
        run_search(search_args(resume=str(tmp_path / "runs" / "space"), num_samples=3))


# ---------------------------------------------------------------- slow: one real search


@pytest.fixture(scope="module")
def search(tmp_path_factory, _trained_teacher_store):
    """One search: 4 trials of 1 epoch, 2 at a time; the defaults trial (lr 1e6) diverges."""
    import ray

    from mtard.search.run import run_search

    catalog, teachers_root = _trained_teacher_store
    root = tmp_path_factory.mktemp("search")
    space_path = write_space(
        root / "space", catalog, num_samples=4, epochs=1, base_lr=DIVERGING_LR,
        space={
            "optim.lr": {"choice": [DIVERGING_LR, 0.05, 0.1, 0.2]},
            "balance.w_lr": {"loguniform": [0.005, 0.1]},
            "balance.learn_temperature": {"choice": [True, False]},
            "balance.tau_max": {"uniform": [2, 10], "when": {"balance.learn_temperature": True}},
        },
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTARD_TEACHERS", str(teachers_root))  # Ray's workers inherit it from ray.init
        ray.init(address="local", num_cpus=2, resources={"mtard_driver": 1000}, include_dashboard=False,
                 configure_logging=False, log_to_driver=False)
        try:
            t0 = time.monotonic()
            data = run_search(search_args(space=str(space_path), storage=str(root / "runs"), name="s"))
            seconds = time.monotonic() - t0
            pgs = ray.util.placement_group_table()
            yield SimpleNamespace(exp=root / "runs" / "s", data=data, seconds=seconds, pgs=pgs, space=space_path)
        finally:
            ray.shutdown()


@pytest.mark.slow
def test_search_front_matches_a_brute_force_front(search) -> None:
    exp = search.exp
    trials = read_csv(exp / "trials.csv")
    assert len(trials) == 4
    pareto = read_csv(exp / "pareto.csv")
    assert pareto, "some trial must complete"
    assert {r["trial_id"] for r in pareto} == brute_force_front(trials, budget=1)
    assert {r.trial_id for r in search.data.front} == {r["trial_id"] for r in pareto}
    # every complete trial trained its 1-epoch budget exactly once, in its own Train run
    for r in trials:
        if r["status"] == "complete":
            assert snapshot_epochs(exp / f"train-{r['trial_id']}") == [1]
    # the review's TensorBoard run and Tune's per-trial curves are there
    assert list((exp / "review").glob("events.out.tfevents.*"))
    assert all(list((exp / f"trial-{r['trial_id']}").glob("events.out.tfevents.*")) for r in trials)
    assert (exp / "space.yaml").is_file() and (exp / "base_config.yaml").is_file()


@pytest.mark.slow
def test_optuna_study_holds_every_trial_with_both_values(search) -> None:
    exp = search.exp
    records = {json.loads(line)["trial_id"]: json.loads(line) for line in (exp / "records.jsonl").read_text().splitlines()}
    study = load_study(exp)
    assert len(study.trials) == 4
    by_tune = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    assert set(by_tune) == set(records)
    for tid, rec in records.items():
        t = by_tune[tid]
        if rec["status"] == "complete":
            assert t.state == optuna.trial.TrialState.COMPLETE
            assert t.values == [rec["metrics"]["val_clean_acc"], rec["metrics"]["val_pgd_acc"]]
            assert t.params == rec["params"]
        else:
            assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["mtard_status"] == rec["status"]
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
    assert rec.epochs == 1 and rec.budget == 1 and rec.checkpoint == ""  # no good epoch to keep
    assert rec.trial_id in {e.record.trial_id for e in search.data.excluded}
    # the search went on: every trial finished, the others trained normally
    assert sum(r["status"] == "complete" for r in trials) >= 1
    assert all(r["status"] in ("complete", "diverged") for r in trials)
    for r in trials:
        if r["status"] == "diverged":
            assert float(r["optim.lr"]) == DIVERGING_LR


@pytest.mark.slow
def test_no_placement_group_is_left_behind(search) -> None:
    assert search.pgs, "the trials created placement groups"
    assert all(pg["state"] == "REMOVED" for pg in search.pgs.values()), search.pgs


# ---------------------------------------------------------------- slow: SIGKILL the driver, resume


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the search exited ({proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver, then whatever it started (its session) that outlives it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    time.sleep(2)


@pytest.mark.slow
def test_sigkill_then_resume_keeps_finished_trials_and_trains_none_twice(tmp_path: Path, trained_teachers: Path) -> None:
    space_path = write_space(
        tmp_path / "space", trained_teachers, num_samples=3, epochs=2,
        space={"optim.lr": {"loguniform": [0.01, 0.2]}, "balance.w_lr": {"loguniform": [0.005, 0.1]}},
    )
    exp = tmp_path / "runs" / "killed"
    cmd = [sys.executable, "-m", "mtard.cli", "search"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd + [str(space_path), "--storage", str(tmp_path / "runs"), "--name", "killed"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        records = exp / "records.jsonl"
        _wait_for(lambda: records.is_file() and records.read_text().count("\n") >= 1, 400, proc, "the first finished trial")
    finally:
        _kill_session(proc)
        log.close()
    before = {json.loads(line)["trial_id"]: json.loads(line) for line in records.read_text().splitlines()}
    assert 1 <= len(before) < 3, (tmp_path / "first.log").read_text()[-3000:]
    listing = {tid: sorted(p.name for p in (exp / f"train-{tid}").glob("checkpoint_*")) for tid in before}
    in_flight = {p.name.removeprefix("train-") for p in exp.glob("train-*")} - set(before)
    assert in_flight, "a second trial was running when the driver died"

    resumed = subprocess.run(cmd + ["--resume", str(exp)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Pareto front" in resumed.stdout

    lines = [json.loads(line) for line in records.read_text().splitlines()]
    after = {r["trial_id"]: r for r in lines}
    assert len(after) == 3 and all(r["status"] == "complete" for r in after.values())
    for tid, rec in before.items():  # finished before the kill: still there, unchanged, not retrained
        assert after[tid]["metrics"] == rec["metrics"] and after[tid]["checkpoint"] == rec["checkpoint"]
        assert sorted(p.name for p in (exp / f"train-{tid}").glob("checkpoint_*")) == listing[tid]
        assert sum(r["trial_id"] == tid for r in lines) == 1
    assert in_flight <= set(after)  # the interrupted trials finished under their own ids
    for tid in after:  # every trial trained each epoch once (an interrupted one went on from its checkpoint)
        assert snapshot_epochs(exp / f"train-{tid}") == [1, 2]
    assert len(list(exp.glob("train-*"))) == 3

    study = load_study(exp)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["tune_trial_id"] for t in complete) == sorted(after)
    for t in complete:
        rec = after[t.user_attrs["tune_trial_id"]]
        assert t.values == [rec["metrics"]["val_clean_acc"], rec["metrics"]["val_pgd_acc"]]
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)

    pareto = read_csv(exp / "pareto.csv")
    assert {r["trial_id"] for r in pareto} == brute_force_front(read_csv(exp / "trials.csv"), budget=2)

"""MO-ASHA inside a real search (real Ray, Optuna, torch; CPU): dominated trials stop at a rung.

A search of *direct* trials (Ray Train trials of 2 workers stop at a rung in test_search_run.py's
search, with `check_rung_stops` below). The learning rate choice includes one that learns nothing in
an epoch (1e-5), so trials with it are dominated at the rung. Checked: a stopped trial has its
checkpoint at its stop epoch, its record says why, it is PRUNED in the Optuna study with the values it
was judged on, it is absent from pareto.csv, rungs.jsonl holds one decision per trial, and no
placement group is left. A SIGKILL of the driver and `--resume` must not re-decide a rung nor run a
stopped trial again.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from test_search_resume import _kill_session, _start_search, _wait_for
from test_search_run import DIRECT, load_study, read_csv, read_lines, write_space

from mtard.checkpoint import read

pytestmark = pytest.mark.slow

TRIALS, CONCURRENCY = 6, 2
EPOCHS = 2  # one epoch past the rung: kept trials finish, stopped ones end at the rung
SPACE = {"optim.lr": {"choice": [1.0e-5, 0.2]}}
SCHEDULER = {"name": "moasha", "eta": 2, "rungs": [1]}


def check_rung_stops(exp: Path, data, epochs: int) -> dict[str, dict]:
    """What every search with a rung at epoch 1 must show; returns the stop decisions by trial id."""
    trials = {r["trial_id"]: r for r in read_csv(exp / "trials.csv")}
    decisions = read_lines(exp / "rungs.jsonl")
    records = {r.trial_id: r for r in data.records}
    judged = {tid for tid, r in records.items() if r.status != "diverged"}  # a diverged trial never reaches the rung
    assert sorted(d["trial_id"] for d in decisions) == sorted(judged) and judged <= set(trials)  # each judged once
    assert all(d["rung"] == 1 for d in decisions)
    stopped = {d["trial_id"]: d for d in decisions if d["action"] == "stop"}
    assert stopped, "the 1e-5 learning rate must be dominated at the rung"
    on_front = {r["trial_id"] for r in read_csv(exp / "pareto.csv")}
    by_tune = {t.user_attrs["tune_trial_id"]: t for t in load_study(exp).trials}
    for tid, d in stopped.items():
        r = records[tid]
        assert r.status == "stopped" and r.epochs == 1 and not r.is_default  # the defaults trial is never stopped
        assert r.reason.startswith("stopped by MO-ASHA at epoch 1: front ") and f"kept {d['kept']}" in r.reason
        assert tid not in on_front
        assert read(r.checkpoint)["epoch"] == 1  # the stop epoch's checkpoint is kept
        assert read(r.checkpoint)["metrics"]["stopped_by"] == r.reason
        t = by_tune[tid]  # pruned in the study, with the values it was judged on
        assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["mtard_rung_epoch"] == 1
        assert [t.user_attrs["mtard_rung_val_clean_acc"], t.user_attrs["mtard_rung_val_pgd_acc"]] == d["values"]
    for tid in judged - set(stopped):
        assert records[tid].status == "complete" and records[tid].epochs == epochs, (tid, records[tid].status, records[tid].reason)
        assert by_tune[tid].state == optuna.trial.TrialState.COMPLETE
    return stopped


def _space(root: Path, catalog: Path, trials: int = TRIALS) -> Path:
    import yaml

    # SAT (no teachers) learns in one epoch at lr 0.2 (the base value: the protected defaults trial),
    # so a 1e-5 trial, still at its initial weights, is dominated at the rung.
    path = write_space(root / "space", catalog, num_samples=trials, epochs=EPOCHS, resources=DIRECT, space=SPACE,
                       max_concurrent=CONCURRENCY, base_lr=0.2, extra_set={"method.name": "sat"})
    data = yaml.safe_load(path.read_text())
    data["scheduler"] = SCHEDULER
    data["sampler"] = {"name": "random", "seed": 6}  # draws 1e-5 for the 2nd and 3rd trials
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def search(tmp_path_factory, _trained_teacher_store, local_ray):
    from mtard.search.run import run_search

    catalog, _ = _trained_teacher_store
    root = tmp_path_factory.mktemp("moasha")
    data = run_search(_space(root, catalog), storage=str(root / "runs"), name="m")
    return SimpleNamespace(exp=root / "runs" / "m", data=data, pgs=local_ray.util.placement_group_table())


def test_dominated_trials_stop_at_the_rung_stay_off_the_front_and_are_pruned(search) -> None:
    stopped = check_rung_stops(search.exp, search.data, epochs=EPOCHS)
    assert len(read_csv(search.exp / "trials.csv")) == TRIALS and len(stopped) < TRIALS


def test_no_placement_group_is_left_behind(search) -> None:
    assert all(pg["state"] == "REMOVED" for pg in search.pgs.values()), search.pgs


def test_sigkill_then_resume_decides_no_rung_twice(tmp_path: Path, trained_teachers: Path, local_ray) -> None:
    from mtard.search.run import run_search

    space = _space(tmp_path, trained_teachers, trials=4)  # killed after 3 decisions: one trial is left to resume
    exp = tmp_path / "runs" / "k"
    # The driver joins the running cluster (a `ray job` on a head): killing it leaves the cluster up, and
    # the resume runs on that cluster, as after a lost job. (A lost machine: test_search_resume.py.)
    proc = _start_search([str(space), "--storage", str(tmp_path / "runs"), "--name", "k"], tmp_path, tmp_path / "first.log", ray=local_ray)
    rungs = exp / "rungs.jsonl"
    try:
        _wait_for(lambda: rungs.is_file() and len(rungs.read_text().splitlines()) >= 3, 240, proc, "three rung decisions")
    finally:
        _kill_session(proc)
    before = read_lines(rungs)
    run_search(resume=str(exp), storage=None)
    after = read_lines(rungs)
    assert after[: len(before)] == before  # nothing re-decided or rewritten
    assert len({(d["trial_id"], d["rung"]) for d in after}) == len(after)  # each (trial, rung) once
    records = {r["trial_id"]: r for r in read_lines(exp / "records.jsonl")}
    # A stopped trial never trained past its rung, before or after the kill. (A trial started in the
    # last ~2 s before the kill is not in Tune's saved state: it is never resumed and has no record.)
    stopped = [d["trial_id"] for d in after if d["action"] == "stop" and d["trial_id"] in records]
    assert stopped
    for tid in stopped:
        assert records[tid]["status"] == "stopped" and records[tid]["epochs"] == 1
    assert json.loads((exp / "pareto.json").read_text())["front"]

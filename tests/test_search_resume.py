"""`mtard search` killed and resumed: real Ray, Optuna and torch, `mtard search` as a subprocess.

SIGKILL of the search driver mid-search, then `--resume`: a lost machine (the driver and the local
Ray it started die together) with direct trials, a lost job (the driver joined a cluster that stays
up) with Ray Train trials; and a direct trial's own process SIGKILLed mid-epoch, retried by Tune from
its last checkpoint. (A separate file from test_search_run.py so the two
test processes of the suite can run them side by side.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from test_search_run import DIRECT, RAY_TRAIN_1, brute_force_front, checkpoint_metrics, load_study, read_csv, read_lines, snapshot_epochs, write_space

# ---------------------------------------------------------------- slow: SIGKILL the driver, resume


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "", poll: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the search exited ({proc.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and everything it started (its session: the local Ray it ran), as a lost machine would."""
    for target in (lambda: os.kill(proc.pid, signal.SIGKILL), lambda: os.killpg(proc.pid, signal.SIGKILL)):
        try:
            target()
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the kernel has reaped them (ports, files freed)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _start_search(args: list[str], cwd: Path, log: Path, command: str = "search", ray=None) -> subprocess.Popen:
    """`mtard COMMAND ARGS` in its own session. With `ray` (the test's local Ray), the driver joins that
    cluster, as a `ray job` on a cluster head does: killing the driver then leaves the cluster up."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    address = ["--address", ray.get_runtime_context().gcs_address] if ray is not None else []
    return subprocess.Popen([sys.executable, "-m", "mtard.cli", command, *args, *address], cwd=cwd, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize(("resources", "lost"), [(DIRECT, "machine"), (RAY_TRAIN_1, "job")], ids=["direct-lost_machine", "ray_train-lost_job"])
def test_sigkill_then_resume_keeps_finished_trials_and_trains_none_twice(tmp_path: Path, trained_teachers: Path, resources: dict, lost: str,
                                                                         request) -> None:
    # A lost machine: the driver and the local Ray it started die together; the resume starts a new Ray.
    # A lost job: the driver joined a cluster (a `ray job` on a head) that stays up; the resume runs on it.
    ray = request.getfixturevalue("local_ray") if lost == "job" else None
    # The catalog path is relative to the search's working directory: trials must read the same file.
    catalog = Path(os.path.relpath(trained_teachers, tmp_path)) if ray is None else trained_teachers
    # Lost machine: a third trial, not started at the kill, starts after the resume. Lost job: two trials.
    trials = 3 if ray is None else 2
    space_path = write_space(
        tmp_path / "space", catalog, num_samples=trials, epochs=2, resources=resources,
        space={"optim.lr": {"loguniform": [0.01, 0.2]}, "balance.w_lr": {"loguniform": [0.005, 0.1]}},
    )
    exp = tmp_path / "runs" / "killed"
    records = exp / "records.jsonl"
    proc = _start_search([str(space_path), "--storage", str(tmp_path / "runs"), "--name", "killed"], tmp_path, tmp_path / "first.log", ray=ray)
    try:
        _wait_for(lambda: records.is_file() and records.read_text().count("\n") >= 1, 400, proc, "the first finished trial", poll=0.05)
    finally:
        _kill_session(proc)
    before = {r["trial_id"]: r for r in read_lines(records)}
    assert 1 <= len(before) < trials, (tmp_path / "first.log").read_text()[-3000:]
    started = {p.name.removeprefix("trial-") for p in exp.glob("trial-*")}
    in_flight = started - set(before)
    assert in_flight, "a second trial was running when the driver died"
    # Where each interrupted trial stood: its newest checkpoint as the driver saw it.
    stood = {tid: (e["epoch"], checkpoint_metrics(e["checkpoint"])) for tid, e in json.loads((exp / "checkpoints.json").read_text()).items() if tid in in_flight}
    listing = {tid: sorted(p.name for p in Path(r["checkpoint"]).parents[1].glob("checkpoint_*")) for tid, r in before.items()}

    if ray is None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        resumed = subprocess.run([sys.executable, "-m", "mtard.cli", "search", "--resume", str(exp)], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "Pareto front" in resumed.stdout
    else:
        from mtard.search.run import run_search

        assert run_search(resume=str(exp), storage=None).front

    lines = read_lines(records)
    after = {r["trial_id"]: r for r in lines}
    assert len(after) == trials and all(r["status"] == "complete" for r in after.values())
    for tid, rec in before.items():  # finished before the kill: still there, unchanged, not retrained
        assert after[tid]["metrics"] == rec["metrics"] and after[tid]["checkpoint"] == rec["checkpoint"]
        assert sorted(p.name for p in Path(rec["checkpoint"]).parents[1].glob("checkpoint_*")) == listing[tid]
        assert sum(r["trial_id"] == tid for r in lines) == 1
    assert in_flight <= set(after)  # the interrupted trials finished under their own ids
    for tid, (epoch, metrics) in stood.items():  # ... continuing from their last epoch's checkpoint
        final = after[tid]["metrics"]
        if epoch == 1:
            assert final["time_in_epochs_s"] == metrics["time_in_epochs_s"] + final["epoch_time_s"]
        else:
            assert final == {k: v for k, v in metrics.items() if k in final}
    if resources is RAY_TRAIN_1:
        for tid in after:  # every trial trained each epoch once, in its own Train run
            assert snapshot_epochs(exp / f"train-{tid}") == [1, 2]

    study = load_study(exp)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["tune_trial_id"] for t in complete) == sorted(after)
    for t in complete:
        rec = after[t.user_attrs["tune_trial_id"]]
        assert t.values == [rec["metrics"]["val_clean_acc"], rec["metrics"]["val_pgd_acc"]]
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)

    pareto = read_csv(exp / "pareto.csv")
    assert {r["trial_id"] for r in pareto} == brute_force_front(read_csv(exp / "trials.csv"), budget=2)


# ---------------------------------------------------------------- slow: a direct trial's process dies


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _trial_processes(root: int) -> list[int]:
    """The Tune trial processes (function trainables run as `ray::ImplicitFunc` actors) under `root`."""
    found = []
    for pid in _descendants(root):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                found.append(pid)
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_a_killed_trial_process_is_retried_from_its_last_checkpoint(tmp_path: Path, trained_teachers: Path, local_ray) -> None:
    epochs = 12  # long enough to kill it mid-run however fast the machine is
    space_path = write_space(
        tmp_path / "space", trained_teachers, num_samples=1, epochs=epochs, max_concurrent=1,
        space={"optim.lr": {"loguniform": [0.01, 0.2]}}, extra_set={"scaling.max_failures": 1},
    )
    exp = tmp_path / "runs" / "retried"
    checkpoints = exp / "checkpoints.json"

    def first_checkpoint() -> bool:
        try:
            return bool(json.loads(checkpoints.read_text()))
        except (OSError, ValueError):
            return False

    # The driver joins the test's cluster, whose processes (the trial's among them) are this process's descendants.
    proc = _start_search([str(space_path), "--storage", str(tmp_path / "runs"), "--name", "retried"], tmp_path, tmp_path / "search.log", ray=local_ray)
    try:
        _wait_for(first_checkpoint, 300, proc, "the first epoch's checkpoint", poll=0.05)
        victims = _trial_processes(os.getpid())
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL)  # mid-run: a lost node, an OOM kill
        assert proc.wait(timeout=300) == 0, (tmp_path / "search.log").read_text()[-3000:]
    finally:
        _kill_session(proc)
    (record,) = read_lines(exp / "records.jsonl")
    assert record["status"] == "complete" and record["epochs"] == epochs
    # Tune's log of the trial's reports: one restart (a new process), which went on from a checkpoint
    rows = read_lines(exp / f"trial-{record['trial_id']}" / "result.json")
    restarts = [i for i in range(1, len(rows)) if rows[i]["pid"] != rows[i - 1]["pid"]]
    assert len(restarts) == 1, [(r["epoch"], r["pid"]) for r in rows]
    resumed = rows[restarts[0]]
    assert resumed["epoch"] >= 2  # not from scratch: epoch 1's checkpoint was there
    before = [r for r in rows[: restarts[0]] if r["epoch"] == resumed["epoch"] - 1][-1]
    # the epoch after the checkpoint adds its time to the time measured before the kill
    assert resumed["time_in_epochs_s"] == before["time_in_epochs_s"] + resumed["epoch_time_s"]
    assert [r["epoch"] for r in rows][-1] == epochs and record["metrics"]["epoch"] == epochs

"""Ordinary events of a long search: a second driver, Ctrl-C, SIGTERM, a torn file, a lost study.db.

One real search (`mtard search` subprocesses, real Ray, Optuna and torch) goes through all of
them in turn, so Ray starts twice in all; the lock's stale-holder and lease rules and the
second-signal rule are checked without Ray.
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
from test_search_resume import _kill_session, _start_search, _wait_for
from test_search_run import load_study, read_lines, write_space

from mtard.errors import MtardError
from mtard.search.files import ExperimentFiles
from mtard.search.lock import LEASE, LOCK, STALE_AFTER_S, hold_experiment

METRICS = ["val_clean_acc", "val_pgd_acc"]


def _cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "mtard.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_second_driver_ctrl_c_sigterm_torn_record_and_lost_study(tmp_path: Path, trained_teachers: Path, local_ray, capsys) -> None:
    from mtard.cli import main

    space_path = write_space(tmp_path / "space", trained_teachers, num_samples=3, epochs=2, space={"optim.lr": {"loguniform": [0.01, 0.2]}})
    exp = tmp_path / "runs" / "exp"
    records = exp / "records.jsonl"

    # 1. A search runs; a second driver on the same experiment is refused, naming the holder.
    # The drivers join the test's cluster (`ray job`s on a head); the resume runs in this process on it.
    first = _start_search([str(space_path), "--storage", str(tmp_path / "runs"), "--name", "exp"], tmp_path, tmp_path / "first.log", ray=local_ray)
    try:
        _wait_for(lambda: records.is_file() and records.read_text().count("\n") >= 1, 400, first, "the first finished trial", poll=0.05)
        os.kill(first.pid, signal.SIGSTOP)  # the driver holds still (and holds its lock) while a second one tries
        try:
            beside = _cli(["search", "--resume", str(exp)], tmp_path, timeout=120)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        # 2. SIGTERM (a preempted node; Ctrl-C takes the same path): the trials stop, what finished is
        # kept, exit 143 with how to continue.
        os.kill(first.pid, signal.SIGTERM)
        code = first.wait(timeout=120)
    finally:
        _kill_session(first)
    assert beside.returncode == 2, beside.stdout + beside.stderr
    assert "in use by another search driver" in beside.stderr and f"PID {first.pid}" in beside.stderr
    log = (tmp_path / "first.log").read_text()
    assert code == 143, log[-3000:]
    assert f"interrupted: continue with mtard search --resume {exp}" in log
    assert "Pareto front" not in log and "Tuner.restore" not in log  # no normal-looking final table, one hint
    kept = {r["trial_id"]: r for r in read_lines(records)}
    assert 1 <= len(kept) < 3
    study = load_study(exp)
    assert study.metric_names == METRICS
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]  # nothing called orphaned
    assert [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]  # the interrupted trials, to continue

    # 3. A crash tears the last record mid-write, and study.db is lost.
    text = records.read_text()
    last = text.splitlines()[-1]
    records.write_text(text[: len(text) - len(last) // 2 - 1])
    torn_id = json.loads(last)["trial_id"]
    (exp / "study.db").unlink()

    # 4. The resume: every trial recorded once, the torn one rebuilt, the study agrees with the records.
    assert main(["search", "--resume", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "study.db was missing: rebuilt it from" in out and "torn by a crash" in out
    assert f"trial {torn_id} had no record" in out
    lines = read_lines(records)
    after = {r["trial_id"]: r for r in lines}
    assert len(after) == 3 and all(r["status"] == "complete" for r in after.values())
    for tid, rec in kept.items():  # the torn one included: rebuilt with the same numbers
        assert after[tid]["metrics"] == rec["metrics"]
    study = load_study(exp)
    assert study.metric_names == METRICS
    complete = {t.user_attrs["tune_trial_id"]: t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert sorted(complete) == sorted(after)
    for tid, t in complete.items():
        assert t.values == [after[tid]["metrics"][m] for m in METRICS]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL) for t in study.trials)
    assert not [t for t in study.trials if "orphaned" in t.user_attrs.get("mtard_reason", "") and t.user_attrs.get("tune_trial_id") in after]


# ---------------------------------------------------------------- without Ray


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path, capsys) -> None:
    files = ExperimentFiles(str(tmp_path), "exp")
    with hold_experiment(files):
        with pytest.raises(MtardError, match=rf"in use by another search driver \(host .*, PID {os.getpid()}, started"), hold_experiment(files):
            pass
    assert (files.local / LOCK).read_text() == ""  # released cleanly
    (files.local / LOCK).write_text(json.dumps({"host": "gone", "pid": 99999999, "started": "2026-01-01T00:00:00+00:00"}))
    with hold_experiment(files):
        assert "took over the lock" in capsys.readouterr().err
        assert json.loads((files.local / LOCK).read_text())["pid"] == os.getpid()


def test_lease_on_uri_storage(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MTARD_SEARCH_CACHE", str(tmp_path / "cache"))
    files = ExperimentFiles(f"file://{tmp_path / 'bucket'}", "exp")
    lease = tmp_path / "bucket" / "exp" / LEASE
    lease.parent.mkdir(parents=True)
    other = {"host": "elsewhere", "pid": 1, "started": "2026-01-01T00:00:00+00:00"}
    lease.write_text(json.dumps({**other, "heartbeat": time.time()}))
    with pytest.raises(MtardError, match="in use by another search driver \\(host elsewhere, PID 1"), hold_experiment(files):
        pass
    lease.write_text(json.dumps({**other, "heartbeat": time.time() - STALE_AFTER_S - 1}))
    with hold_experiment(files):
        assert "took over the lock" in capsys.readouterr().err
        assert json.loads(lease.read_text())["pid"] == os.getpid()
    assert not lease.exists()


def test_a_second_signal_quits_at_once() -> None:
    code = (
        "import os, signal, time\n"
        "from mtard.search.interrupts import SearchInterrupts\n"
        "i = SearchInterrupts(); i.in_tune = True; asked = []\n"
        "i.install(); os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.3)  # Tune still setting up: SIGUSR1 not sent yet\n"
        "signal.signal(signal.SIGUSR1, lambda *a: asked.append(1))  # stands for Tune's graceful stop, installed late\n"
        "time.sleep(0.5)\n"
        "assert i.signum == signal.SIGTERM and asked == [1], asked\n"
        "os.kill(os.getpid(), signal.SIGINT); time.sleep(30); print('not reached')\n"
    )
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and "not reached" not in done.stdout, done.stderr
    assert "quitting at once" in done.stderr and time.monotonic() - start < 20

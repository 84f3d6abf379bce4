"""A search's cost, its budget, its plateau rule and its plan (mtard.search.budget, mtard.search.plan).

Fast tests (no Ray): known answers for the decision, the cost review and the plan arithmetic,
bad input, and the Optuna adapter ending a search. Slow tests (real Ray, Optuna, torch; CPU): a
budget that allows k trials runs exactly k, survives a SIGKILL of the driver without a reset, and
a larger budget on --resume runs more; a plateau rule on a space whose front cannot improve stops
after its window.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml

from mtard.errors import MtardError
from mtard.search.budget import (
    Devices,
    Plateau,
    SearchLimits,
    budget_reason,
    hypervolume_by_record,
    next_trial,
    plateau_reason,
    trial_devices,
)
from mtard.search.records import Objective, TrialRecord
from mtard.search.space import parse_space

OBJECTIVES = [Objective("val_clean_acc", "max"), Objective("val_pgd_acc", "max")]


def rec(tid: str, clean: float, pgd: float, *, epochs: int = 4, budget: int = 4, status: str = "complete", device_s: float = 0.0) -> TrialRecord:
    return TrialRecord(tid, status, metrics={"val_clean_acc": clean, "val_pgd_acc": pgd}, epochs=epochs, budget=budget,
                       device_seconds=device_s, device_kind="GPU")


def _space(**extra) -> dict:
    return {"base": "digits_mtard", "num_samples": 8, "budget": {"epochs": 4}, "space": {"optim.lr": {"loguniform": [0.01, 0.2]}}, **extra}


# ---------------------------------------------------------------- fast: the rule


def test_a_budget_in_epochs_counts_spent_and_running_trials_and_is_never_passed() -> None:
    rule = SearchLimits(total=12, unit="epochs")
    done = [rec("a", 0.5, 0.2), rec("b", 0.6, 0.1, epochs=1, status="stopped")]  # 5 epochs spent
    assert budget_reason(done, rule, running=0, budget_epochs=4) == ""  # 5 + 4 <= 12
    assert budget_reason(done, rule, running=1, budget_epochs=4) != ""  # 5 + 4 (running) + 4 > 12
    assert next_trial([*done, rec("c", 0.1, 0.1, epochs=3, status="stopped")], rule, running=0, budget_epochs=4,
                      objectives=OBJECTIVES).start  # 8 + 4 = 12: exactly the budget
    reason = budget_reason([*done, rec("c", 0.1, 0.1, epochs=4)], rule, running=0, budget_epochs=4)
    assert reason.startswith("budget spent: 9 epochs spent, 0 running") and "budget.total 12 epochs" in reason


def test_a_budget_in_device_hours_uses_the_dearest_epoch_seen() -> None:
    rule = SearchLimits(total=1.0, unit="device_hours")
    assert next_trial([], rule, running=3, budget_epochs=4, objectives=OBJECTIVES).start  # no cost known yet
    # 4 epochs for 1800 device-s (450/epoch) and 1 epoch for 600 (the dearest epoch): 2400 s spent
    done = [rec("a", 0.5, 0.2, device_s=1800.0), rec("b", 0.6, 0.1, epochs=1, status="stopped", device_s=600.0)]
    assert budget_reason(done, SearchLimits(total=2400 / 3600 + 4 * 600 / 3600, unit="device_hours"), running=0, budget_epochs=4) == ""
    assert "device-hours" in budget_reason(done, rule, running=0, budget_epochs=4)  # 2400 + 2400 > 3600


def test_devices_are_gpus_or_else_cpus() -> None:
    assert trial_devices({"workers": 2, "gpus_per_worker": 0.5, "cpus_per_worker": 4}) == Devices(1.0, "GPU")
    assert trial_devices({"workers": 2, "gpus_per_worker": 0, "cpus_per_worker": 4}) == Devices(8.0, "CPU")


def test_the_plateau_rule_waits_for_min_trials_and_a_window_without_gain() -> None:
    # hypervolume after each record: 0.06, 0.06 (stopped), 0.14, 0.1406, 0.1406
    records = [rec("a", 0.3, 0.2), rec("s", 0.9, 0.9, epochs=1, status="stopped"), rec("b", 0.7, 0.2),
               rec("c", 0.302, 0.202), rec("d", 0.2, 0.1)]
    assert hypervolume_by_record(records, OBJECTIVES) == pytest.approx([0.06, 0.06, 0.14, 0.140604, 0.140604])
    assert plateau_reason(records, OBJECTIVES, Plateau(window=2, min_improvement=0.01, min_trials=1)).startswith(
        "hypervolume plateau: 0.1406 after the last 2 finished trials, up 0.43% from 0.1400")
    assert plateau_reason(records, OBJECTIVES, Plateau(window=3, min_improvement=0.01, min_trials=1)) == ""  # 0.06 -> 0.14
    assert plateau_reason(records, OBJECTIVES, Plateau(window=2, min_improvement=0.001, min_trials=1)) == ""  # 0.43% >= 0.1%
    assert plateau_reason(records, OBJECTIVES, Plateau(window=2, min_improvement=0.01, min_trials=5)) == ""  # 4 full trials
    # before any trial is eligible the front's hypervolume is 0: no gain is a plateau only after min_trials
    failed = [rec(t, math.nan, math.nan, status="error") for t in "xyz"]
    assert plateau_reason(failed, OBJECTIVES, Plateau(window=2, min_improvement=0.01, min_trials=1)) == ""
    assert next_trial(records, SearchLimits(plateau=Plateau(2, 0.01, 1)), running=1, budget_epochs=4, objectives=OBJECTIVES).start is False


# ---------------------------------------------------------------- fast: the space


@pytest.mark.parametrize(("section", "message"), [
    ({"budget": {"epochs": 4, "total": {"device_hours": -1}}}, "budget.total.device_hours: must be > 0, got -1"),
    ({"budget": {"epochs": 4, "total": {"epochs": 0}}}, "budget.total.epochs: must be > 0, got 0"),
    ({"budget": {"epochs": 4, "total": {"epochs": 3}}}, "budget.total.epochs: 3 is less than one trial's budget.epochs (4)"),
    ({"budget": {"epochs": 4, "total": {"gpu_days": 2}}}, "budget.total: give one of device_hours, epochs"),
    ({"budget": {"epochs": 4, "total": {"epochs": 8, "device_hours": 1}}}, "budget.total: give one of device_hours, epochs"),
    ({"stop": {"hypervolume_plateau": {"window": 0}}}, "stop.hypervolume_plateau.window: must be >= 1, got 0"),
    ({"stop": {"hypervolume_plateau": {"min_improvement": 1}}}, "stop.hypervolume_plateau.min_improvement: a fraction"),
    ({"stop": {"hypervolume_plateau": {"min_improvement": -0.1}}}, "stop.hypervolume_plateau.min_improvement: a fraction"),
    ({"stop": {"hypervolume_plateau": {"windows": 3}}}, "stop.hypervolume_plateau: unknown key 'windows'"),
    ({"stop": {"front_plateau": {}}}, "stop: unknown key 'front_plateau'"),
    ({"stop": {"hypervolume_plateau": {}}, "objectives": [{"metric": "loss", "direction": "min"}]},
     "stop.hypervolume_plateau: the hypervolume is not defined (objective loss (min) has no reference)"),
])
def test_bad_budget_and_stop_sections_are_one_clear_line(section: dict, message: str) -> None:
    with pytest.raises(MtardError) as err:
        parse_space(_space(**section))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_budget_and_stop_parse_into_the_rule_and_round_trip() -> None:
    space = parse_space(_space(budget={"epochs": 4, "total": {"device_hours": 2.5}}, stop={"hypervolume_plateau": {"window": 5}}))
    assert space.limits() == SearchLimits(total=2.5, unit="device_hours", plateau=Plateau(5, 0.01, 10))
    again = parse_space(space.to_yaml_dict())
    assert again.limits() == space.limits()
    assert parse_space(_space()).limits().active is False


# ---------------------------------------------------------------- fast: the plan's arithmetic


def test_the_plan_on_a_constructed_timing() -> None:
    from mtard.search.plan import EpochTiming, expected_epochs, plan_cost, render_plan

    moasha = {"name": "moasha", "eta": 3, "rungs": [1, 4]}
    assert expected_epochs(8, moasha) == pytest.approx(1 + 3 / 3 + 4 / 9)  # all reach 1, 1/3 reach 4, 1/9 reach 8
    assert expected_epochs(8, {"name": "none"}) == 8
    timing = EpochTiming(train_samples=1000, samples_per_s=200.0, validation_s=4.0, where="cpu")
    assert timing.epoch_s == 9.0
    space = parse_space({**_space(), "num_samples": 40, "budget": {"epochs": 8}, "scheduler": moasha,
                         "resources": {"cpus_per_worker": 2}})
    plan = plan_cost(timing.epoch_s, space)
    per_trial = 1 + 1 + 4 / 9
    assert plan.trial_upper_h == pytest.approx(8 * 9 * 2 / 3600)  # 2 CPUs × 9 s × 8 epochs
    assert plan.trial_expected_h == pytest.approx(per_trial * 9 * 2 / 3600)
    assert plan.search_upper_h == pytest.approx(40 * 8 * 18 / 3600)
    assert plan.search_expected_h == pytest.approx((8 + 39 * per_trial) * 18 / 3600)  # the defaults trial trains 8
    text = render_plan(plan, timing)
    assert "search of 40 trials: at most 1.6 CPU-hours; expected 0.5167 CPU-hours" in text
    assert "MO-ASHA rungs [1, 4], eta 3" in text and "the defaults trial is never stopped" in text
    capped = plan_cost(9.0, parse_space({**_space(), "num_samples": 40, "budget": {"epochs": 8, "total": {"epochs": 100}}}))
    assert capped.search_upper_h == pytest.approx(100 * 9 / 3600) and "budget.total caps" in capped.assumptions[-1]


# ---------------------------------------------------------------- fast: the review's cost


def test_the_review_shows_cost_per_front_member_and_hypervolume_against_device_hours(tmp_path: Path) -> None:
    from test_search_run import read_csv

    from mtard.search.render import render_front_table, write_review

    records = [rec("a", 0.5, 0.2, device_s=3600.0), rec("b", 0.6, 0.1, epochs=1, status="stopped", device_s=900.0),
               rec("c", 0.4, 0.3, device_s=3600.0)]
    data = write_review(tmp_path, records, OBJECTIVES, stop_reason="budget spent: ...")
    assert data.device_hours == 2.25 and data.device_hours_per_front_member == 1.125 and data.device_kind == "GPU"
    assert [h.device_seconds for h in data.history] == [3600.0, 8100.0]
    assert [float(r["device_hours"]) for r in read_csv(tmp_path / "hypervolume.csv")] == [1.0, 2.25]
    assert [r["device_seconds"] for r in read_csv(tmp_path / "trials.csv")] == ["3600.0", "900.0", "3600.0"]
    summary = yaml.safe_load((tmp_path / "pareto.json").read_text())
    assert (summary["device_hours"], summary["device_hours_per_front_member"], summary["stop_reason"]) == (2.25, 1.125, "budget spent: ...")
    table = render_front_table(data)
    assert "cost: 2.25 GPU-hours in the trials' epochs (9 epochs), 1.125 per front member" in table
    assert "the search started no more trials: budget spent: ..." in table


# ---------------------------------------------------------------- fast: the searcher ends the search


def test_the_searcher_waits_for_running_trials_then_finishes_with_the_reason(tmp_path: Path) -> None:
    from ray.tune.search import Searcher

    from mtard.search.files import ExperimentFiles
    from mtard.search.records import append_record
    from mtard.search.tune_adapter import MtardOptunaSearch

    space = parse_space(_space(budget={"epochs": 4, "total": {"epochs": 8}}))
    files = ExperimentFiles(str(tmp_path), "s")
    files.local.mkdir(parents=True)
    search = MtardOptunaSearch(
        space=space.define_by_run, metric=space.metrics, mode=space.modes, sampler=space.make_sampler(), study_name="s",
        storage=optuna.storages.RDBStorage(files.study_url), mtard_space=space, files=files,
    )
    assert search.suggest("a") and search.suggest("b")  # 0 + 4 + 4 <= 8
    assert search.suggest("c") is None  # two running trials may spend the rest: wait
    for tid in ("a", "b"):
        search.on_trial_complete(tid, {"epoch": 4, "val_clean_acc": 0.5, "val_pgd_acc": 0.2})
        append_record(files.records, rec(tid, 0.5, 0.2))
    assert search.suggest("d") == Searcher.FINISHED
    assert files.read_stop_reason().startswith("budget spent: 8 epochs spent, 0 running")


# ---------------------------------------------------------------- slow: real searches


def _rules_space(folder: Path, catalog: Path, *, num_samples: int, epochs: int, space: dict, **rules) -> Path:
    from test_search_run import write_space

    path = write_space(folder, catalog, num_samples=num_samples, epochs=epochs, space=space, max_concurrent=1)
    data = yaml.safe_load(path.read_text())
    data["budget"].update(rules.pop("budget", {}))
    data.update(rules)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_budget_of_two_trials_survives_a_sigkill_and_a_larger_one_on_resume_runs_one_more(
    tmp_path: Path, trained_teachers: Path, local_ray,
) -> None:
    from test_search_resume import _kill_session, _start_search, _wait_for
    from test_search_run import read_lines

    from mtard.search.run import run_search
    from mtard.search.space import load_space

    catalog = trained_teachers
    lr = {"optim.lr": {"loguniform": [0.01, 0.2]}}
    space = _rules_space(tmp_path / "space", catalog, num_samples=6, epochs=1, space=lr, budget={"total": {"epochs": 2}})
    exp = tmp_path / "runs" / "b"
    # The driver joins the test's cluster (a `ray job`); the resumes below run in this process on it.
    proc = _start_search([str(space), "--storage", str(tmp_path / "runs"), "--name", "b"], tmp_path, tmp_path / "first.log", ray=local_ray)
    try:
        _wait_for(lambda: (exp / "records.jsonl").is_file() and (exp / "records.jsonl").read_text().count("\n") >= 1,
                  400, proc, "the first finished trial", poll=0.05)
    finally:
        _kill_session(proc)
    first = read_lines(exp / "records.jsonl")
    assert len(first) == 1 and first[0]["device_kind"] == "CPU"
    assert first[0]["device_seconds"] == first[0]["train_time_s"] > 0  # 1 CPU per trial

    data = run_search(resume=str(exp), storage=None)
    assert len(data.records) == 2, "the spent cost survived the kill: the budget allowed one more trial, not two"
    assert data.stop_reason.startswith("budget spent: 2 epochs spent, 0 running") and data.total_epochs == 2
    summary = yaml.safe_load((exp / "pareto.json").read_text())
    assert summary["stop_reason"] == data.stop_reason and summary["device_hours"] == pytest.approx(data.device_hours)

    bigger = _rules_space(tmp_path / "bigger", catalog, num_samples=6, epochs=1, space=lr, budget={"total": {"epochs": 3}})
    data = run_search(bigger, resume=str(exp))
    assert len(data.records) == 3 and data.stop_reason.startswith("budget spent: 3 epochs spent")
    assert load_space(exp / "space.yaml").budget["total"] == {"epochs": 3}  # what a later --resume continues


@pytest.mark.slow
def test_a_front_that_cannot_improve_stops_after_the_plateau_window(tmp_path: Path, trained_teachers: Path, local_ray) -> None:
    from mtard.search.run import run_search

    # How often the loss is checked for NaN changes nothing the trial learns: every trial lands on one point.
    space = _rules_space(tmp_path / "space", trained_teachers, num_samples=8, epochs=1,
                         space={"runtime.divergence_check_every": {"choice": [50, 1, 2, 3]}},
                         stop={"hypervolume_plateau": {"window": 2, "min_improvement": 0.01, "min_trials": 1}})
    data = run_search(space, storage=str(tmp_path / "runs"), name="p")
    assert len(data.records) == 3  # the first sets the front, then 2 finished trials without a gain
    assert len({(r.metrics["val_clean_acc"], r.metrics["val_pgd_acc"]) for r in data.records}) == 1
    assert data.stop_reason.startswith("hypervolume plateau: ") and "up 0.00%" in data.stop_reason


@pytest.mark.slow
def test_plan_times_the_base_config_here_and_in_a_ray_task(tmp_path: Path, trained_teachers: Path, local_ray, monkeypatch, capsys) -> None:
    from mtard.cli import main
    from mtard.search.plan import measure_epoch
    from mtard.search.space import load_space

    path = _rules_space(tmp_path / "space", trained_teachers, num_samples=4, epochs=3, space={"optim.lr": {"loguniform": [0.01, 0.2]}})
    main(["search", str(path), "--plan", "--num-samples", "10"])
    out = capsys.readouterr().out
    assert "measured on cpu (1 CPU thread(s))" in out and "search of 10 trials: at most" in out
    assert not (tmp_path / "runs").exists()  # nothing of a search was written
    # On a cluster (here: the test's Ray, as a `ray job submit` job sees it) the timing runs in a Ray task.
    monkeypatch.setenv("RAY_ADDRESS", local_ray.get_runtime_context().gcs_address)
    timing = measure_epoch(load_space(path))
    assert timing.samples_per_s > 0 and timing.validation_s > 0 and timing.train_samples > 0

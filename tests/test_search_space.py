"""Search spaces: YAML validation (every error names its field), defaults trial, define-by-run.

Fast: no Ray, no training (Optuna studies are in memory).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from mtard.errors import MtardError
from mtard.search.space import find_space, load_space, parse_space

SHIPPED = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))

BASE = {
    "base": "digits_mtard",
    "set": {"eval.max_samples": 64},
    "num_samples": 4,
    "budget": {"epochs": 2},
    "space": {
        "optim.lr": {"loguniform": [0.01, 0.2]},
        "teachers.clean": {"choice": ["digits_cnn_clean", "digits_mlp_clean"]},
        "balance.learn_temperature": {"choice": [True, False]},
        "balance.tau_max": {"uniform": [2, 10], "when": {"balance.learn_temperature": True}},
    },
}


def space_with(**changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes.items():
        if key == "params":
            data["space"].update(value)
        else:
            data[key] = value
    return data


def parse(data: dict, tmp_path: Path | None = None):
    return parse_space(data, source=None)


def fails(data: dict, *needles: str) -> str:
    with pytest.raises(MtardError) as err:
        parse_space(data)
    msg = str(err.value)
    for needle in needles:
        assert needle in msg, msg
    return msg


# ---------------------------------------------------------------- shipped files


def test_the_shipped_spaces_exist() -> None:
    assert {"digits_tiny", "digits_methods", "cifar10_resnet18", "cifar100_resnet18", "cifar10_mobilenetv2"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_is_valid(name: str) -> None:
    space = load_space(name)
    point = space.default_point()
    cfg = space.trial_config(point)
    assert cfg.optim.epochs == space.budget["epochs"]
    assert set(point) <= set(space.param_paths)
    assert space.num_samples >= 12


def test_digits_tiny_is_the_embedded_default() -> None:
    space = load_space(None)
    assert space.source.name == "digits_tiny.yaml"
    cfg = space.fixed_config()
    assert cfg.data.name == "digits" and cfg.scaling.gpus_per_worker == 0
    choices = {p.path: p.choices for p in space.params if p.kind == "choice"}
    assert len(choices["teachers.clean"]) >= 2 and len(choices["teachers.robust"]) >= 2
    assert cfg.optim.milestones == [5, 7]  # [10, 13] of 15 epochs scaled to the 8-epoch budget
    assert space.scheduler == {"name": "moasha", "eta": 3, "rungs": [1, 4]}  # stops losers early
    assert "attack.eps" in space.param_paths  # moves trials along the trade-off: a front, not a point


def test_gpu_spaces_use_gpus_bf16_and_channels_last() -> None:
    for name in ("cifar10_resnet18", "cifar100_resnet18", "cifar10_mobilenetv2"):
        cfg = load_space(name).fixed_config()
        assert cfg.runtime.bf16 and cfg.runtime.channels_last
        assert cfg.scaling.gpus_per_worker > 0
    assert load_space("cifar10_mobilenetv2").fixed_config().scaling.gpus_per_worker == 0.5
    assert load_space("cifar10_mobilenetv2").fixed_config().student.arch == "mobilenet_v2"


def test_methods_space_searches_the_method() -> None:
    space = load_space("digits_methods")
    method = next(p for p in space.params if p.path == "method.name")
    assert set(method.choices) == {"mtard", "sat", "trades", "rslad"}


def test_find_space_by_name_and_unknown(tmp_path: Path) -> None:
    assert find_space("digits_tiny").name == "digits_tiny.yaml"
    with pytest.raises(MtardError, match="not found.*digits_tiny"):
        find_space(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- validation errors


def test_unknown_top_level_key() -> None:
    fails(space_with(samplr={"name": "tpe"}), "'samplr'", "valid keys")


def test_unknown_config_field_in_space() -> None:
    fails(space_with(params={"optim.lrr": {"uniform": [0.1, 0.2]}}), "space.optim.lrr", "unknown config field")


def test_unknown_config_field_in_set() -> None:
    fails(space_with(set={"attack.stepz": 3}), "set.attack.stepz", "unknown config field")


def test_fields_owned_by_the_search() -> None:
    fails(space_with(params={"optim.epochs": {"int": [1, 5]}}), "space.optim.epochs", "budget.epochs")
    fails(space_with(set={"scaling.workers": 2}), "set.scaling.workers", "resources")
    fails(space_with(params={"eval.eps": {"uniform": [0.1, 0.3]}}), "space.eval.eps", "objectives")
    fails(space_with(set={"optim.lr": 0.1}), "space.optim.lr", "also fixed under `set:`")


def test_unknown_distribution_key_and_two_distributions() -> None:
    fails(space_with(params={"optim.lr": {"loguniform": [0.01, 0.2], "stepp": 1}}), "space.optim.lr", "'stepp'")
    fails(space_with(params={"optim.lr": {"loguniform": [0.01, 0.2], "uniform": [0.1, 0.2]}}), "space.optim.lr", "exactly one")


@pytest.mark.parametrize(
    "spec, needle",
    [
        ({"uniform": [0.2, 0.1]}, "low must be < high"),
        ({"uniform": [0.1, 0.1]}, "low must be < high"),
        ({"loguniform": [0.0, 0.1]}, "log scale needs low > 0"),
        ({"loguniform": [-1, 0.1]}, "log scale needs low > 0"),
        ({"uniform": [0.1, 0.2], "step": 0.5}, "step"),
        ({"uniform": [0.1]}, "[low, high]"),
        ({"uniform": ["a", 0.2]}, "expected a number"),
    ],
)
def test_impossible_ranges(spec: dict, needle: str) -> None:
    fails(space_with(params={"optim.lr": spec}), "space.optim.lr", needle)


def test_range_type_must_match_the_field() -> None:
    fails(space_with(params={"attack.steps": {"loguniform": [1, 10]}}), "space.attack.steps", "int: [low, high]")
    fails(space_with(params={"method.name": {"uniform": [1, 2]}}), "space.method.name", "choice")
    fails(space_with(params={"attack.steps": {"int": [1.5, 10]}}), "space.attack.steps", "integer")


def test_int_range_is_inclusive_and_probed() -> None:
    space = parse(space_with(params={"attack.steps": {"int": [1, 12]}}))
    p = next(p for p in space.params if p.path == "attack.steps")
    assert (p.low, p.high) == (1, 12)
    fails(space_with(params={"attack.steps": {"int": [0, 12]}}), "space.attack.steps", "value 0", "attack.steps: must be >= 1")


def test_choices_of_the_wrong_type() -> None:
    fails(space_with(params={"balance.learn_temperature": {"choice": [True, "sometimes"]}}), "space.balance.learn_temperature.choice[1]", "true/false")
    fails(space_with(params={"method.name": {"choice": ["mtard", "madry"]}}), "space.method.name.choice[1]", "'madry'")
    fails(space_with(params={"optim.milestones": {"choice": [[1, 2], [3]]}}), "space.optim.milestones.choice[0]", "single values")
    fails(space_with(params={"optim.lr": {"choice": [0.1, 0.1]}}), "listed twice")


def test_choices_are_coerced_to_the_field_type() -> None:
    space = parse(space_with(params={"optim.lr": {"choice": ["1e6", 0.05, 1]}}))  # YAML 1.1 reads 1e6 as a string
    assert next(p for p in space.params if p.path == "optim.lr").choices == (1e6, 0.05, 1.0)


def test_range_ends_must_give_valid_configs() -> None:
    # tau_max below the base tau_min (1): the config check names the clash
    fails(space_with(params={"balance.tau_max": {"uniform": [0.5, 10], "when": {"balance.learn_temperature": True}}}),
          "space.balance.tau_max", "0.5", "tau_min")


def test_unknown_teacher() -> None:
    fails(space_with(params={"teachers.clean": {"choice": ["digits_cnn_clean", "digits_resnet_clean"]}}),
          "space.teachers.clean", "unknown teacher 'digits_resnet_clean'")


def test_teacher_of_the_wrong_role_or_dataset() -> None:
    fails(space_with(params={"teachers.clean": {"choice": ["digits_cnn_clean", "digits_cnn_sat"]}}),
          "space.teachers.clean", "robust teacher; pick a clean one")
    fails(space_with(params={"teachers.robust": {"choice": ["digits_cnn_trades", "cifar10_wrn34_10_trades"]}}),
          "space.teachers.robust", "trained on cifar10", "data.name is digits")
    fails(space_with(set={"eval.max_samples": 64, "teachers.robust": "digits_cnn_clean"}), "teachers.robust", "clean teacher")


def test_teachers_of_unused_roles_are_not_checked() -> None:
    # SAT needs no teacher: an empty or foreign teacher name does not matter
    space = parse(space_with(set={"method.name": "sat", "teachers.robust": "nonsense"}))
    assert space.teacher_names() == []


def test_unknown_sampler_and_options() -> None:
    fails(space_with(sampler={"name": "cmaes"}), "sampler.name", "'cmaes'", "tpe")
    fails(space_with(sampler={"name": "nsga2", "n_startup_trials": 3}), "sampler.n_startup_trials", "population_size")
    space = parse(space_with(sampler={"name": "nsga2", "seed": 3, "population_size": 4}))
    sampler = space.make_sampler()
    assert isinstance(sampler, optuna.samplers.NSGAIISampler)
    assert isinstance(parse(space_with(sampler="random")).make_sampler(), optuna.samplers.RandomSampler)


def test_when_must_refer_to_a_searched_choice() -> None:
    fails(space_with(params={"balance.tau_max": {"uniform": [2, 10], "when": {"balance.decay_with_lr": True}}}),
          "space.balance.tau_max.when.balance.decay_with_lr", "not a searched parameter")
    fails(space_with(params={"balance.tau_max": {"uniform": [2, 10], "when": {"optim.lr": 0.1}}}),
          "space.balance.tau_max.when.optim.lr", "`choice` parameters")
    fails(space_with(params={"balance.tau_max": {"uniform": [2, 10], "when": {"balance.learn_temperature": "maybe"}}}),
          "space.balance.tau_max.when.balance.learn_temperature", "true/false")
    fails(space_with(params={"balance.tau_max": {"uniform": [2, 10], "when": {"teachers.clean": "digits_cnn_sat"}}}),
          "space.balance.tau_max.when.teachers.clean", "not one of")


def test_when_cycle() -> None:
    fails(space_with(params={
        "balance.learn_temperature": {"choice": [True, False], "when": {"balance.decay_with_lr": True}},
        "balance.decay_with_lr": {"choice": [True, False], "when": {"balance.learn_temperature": True}},
    }), "cycle")


def test_resources_and_budget() -> None:
    fails(space_with(resources={"gpus": 1}), "resources", "'gpus'")
    fails(space_with(resources={"gpus_per_worker": 1.5}), "resources.gpus_per_worker", "whole number")
    fails(space_with(resources={"workers": 0}), "resources.workers")
    fails(space_with(resources={"custom": {"GPU": 1}}), "resources.custom.GPU")
    fails(space_with(set={"scaling.resources": {"FAKE_GPU": 1}}), "set.scaling.resources", "custom")
    space = parse(space_with(resources={"custom": {"FAKE_GPU": 1}}, set={"scaling.max_failures": 0}))
    cfg = space.fixed_config()
    assert cfg.scaling.resources == {"FAKE_GPU": 1.0} and cfg.scaling.max_failures == 0
    fails(space_with(budget={"epochs": 0}), "budget.epochs")
    fails(space_with(budget={"epochs": 2, "time_budget_s": -1}), "budget.time_budget_s")
    fails(space_with(num_samples=0), "num_samples")


def test_scheduler() -> None:
    assert parse(space_with()).scheduler == {"name": "none"}
    budget9 = {"epochs": 9}
    assert parse(space_with(budget=budget9, scheduler={"name": "moasha", "eta": 3, "rungs": [1, 3]})).scheduler == {
        "name": "moasha", "eta": 3, "rungs": [1, 3]}
    # min_epochs * eta^k below the budget: 1, 3 (9 is the budget itself); 2, 4 with eta 2 and min 2 of 9.
    assert parse(space_with(budget=budget9, scheduler={"name": "moasha", "eta": 3})).scheduler["rungs"] == [1, 3]
    assert parse(space_with(budget=budget9, scheduler={"name": "moasha", "eta": 2, "min_epochs": 2})).scheduler["rungs"] == [2, 4, 8]
    fails(space_with(scheduler={"name": "asha"}), "scheduler.name", "moasha")
    fails(space_with(scheduler={"name": "moasha", "eta": 1}), "scheduler.eta", ">= 2")
    fails(space_with(scheduler={"name": "moasha", "rungs": [2]}), "scheduler.rungs", "below budget.epochs (2)")
    fails(space_with(scheduler={"name": "moasha", "rungs": [3, 1]}, budget=budget9), "scheduler.rungs", "increase")
    fails(space_with(scheduler={"name": "moasha", "rungs": [0]}, budget=budget9), "scheduler.rungs[0]")
    fails(space_with(scheduler={"name": "moasha", "rungs": [1], "min_epochs": 1}, budget=budget9), "either rungs or min_epochs")
    fails(space_with(scheduler={"name": "none", "eta": 3}), "scheduler.eta")
    fails(space_with(scheduler={"name": "moasha", "grace": 1}), "scheduler", "'grace'")


def test_objectives() -> None:
    fails(space_with(objectives=[{"metric": "val_robust_acc", "direction": "max"}]), "objectives[0].metric", "val_pgd_acc")
    fails(space_with(objectives=[{"metric": "val_clean_acc", "direction": "up"}]), "objectives[0].direction")
    fails(space_with(set={"eval.pgd_steps": 0}), "val_pgd_acc needs eval.pgd_steps")
    space = parse(space_with(set={"eval.pgd_steps": 7}))
    assert [o.metric for o in space.objectives] == ["val_clean_acc", "val_pgd_acc"]
    assert space.objectives[1].label == "val PGD-7 accuracy (L∞ ε=0.2, step 0.05)"
    assert load_space("cifar10_resnet18").objectives[1].label == "val PGD-20 accuracy (L∞ ε=8/255, step 2/255)"


def test_base_must_exist_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    fails(space_with(base="no_such_config"), "no_such_config", "not found")
    (tmp_path / "mybase.yaml").write_text("base: digits_mtard\noptim:\n  lr: 0.07\n")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space_with(base="mybase.yaml")))
    space = load_space(tmp_path / "s.yaml")
    assert space.default_point()["optim.lr"] == 0.07


# ---------------------------------------------------------------- the defaults trial, trial configs


def test_default_point_leaves_out_inactive_conditionals() -> None:
    point = parse(BASE).default_point()
    assert point == {"optim.lr": 0.05, "teachers.clean": "digits_cnn_clean", "balance.learn_temperature": True, "balance.tau_max": 10.0}
    off = space_with(params={"balance.tau_max": {"uniform": [2, 10], "when": {"balance.learn_temperature": False}}})
    assert "balance.tau_max" not in parse(off).default_point()


def test_default_outside_the_space() -> None:
    data = space_with(params={"optim.lr": {"loguniform": [0.1, 0.2]}})
    fails(data, "space.optim.lr", "0.05", "enqueue_defaults")
    data["enqueue_defaults"] = False
    parse(data)  # fine without the defaults trial


def test_trial_config_applies_set_budget_resources_and_params() -> None:
    data = space_with(resources={"workers": 2, "cpus_per_worker": 2}, budget={"epochs": 5, "scale_milestones": True})
    space = parse(data)
    cfg = space.trial_config({"optim.lr": 0.123, "balance.learn_temperature": False}, name="train-x")
    assert (cfg.optim.lr, cfg.balance.learn_temperature, cfg.eval.max_samples) == (0.123, False, 64)
    assert cfg.optim.epochs == 5 and cfg.optim.milestones == [3, 4]  # [10, 13] of 15 scaled to 5
    assert (cfg.scaling.workers, cfg.scaling.cpus_per_worker, cfg.runtime.threads) == (2, 2.0, 2)
    assert cfg.name == "train-x" and cfg.runtime.progress is False
    with pytest.raises(MtardError, match="not in the search space"):
        space.trial_config({"optim.momentum": 0.5})


def test_saved_space_round_trips(tmp_path: Path) -> None:
    from mtard.config import save_config

    space = load_space("digits_tiny")
    save_config(space.base_config, tmp_path / "base_config.yaml")
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space.to_yaml_dict(base="base_config.yaml"), sort_keys=False, allow_unicode=True))
    again = load_space(tmp_path / "space.yaml")
    assert again.to_yaml_dict(base="x") == space.to_yaml_dict(base="x")
    assert again.trial_config(again.default_point()) == space.trial_config(space.default_point())


# ---------------------------------------------------------------- Optuna define-by-run


def test_define_by_run_conditionals_and_enqueued_defaults() -> None:
    space = parse(space_with(sampler={"name": "random", "seed": 1}))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=space.make_sampler())
    study.enqueue_trial(space.default_point())
    seen = []
    for _ in range(12):
        trial = study.ask()
        space.define_by_run(trial)
        seen.append(dict(trial.params))
        study.tell(trial, [0.5, 0.5])
    assert seen[0] == space.default_point()
    for params in seen:
        assert ("balance.tau_max" in params) == params["balance.learn_temperature"]
        assert 0.01 <= params["optim.lr"] <= 0.2
        assert params["teachers.clean"] in ("digits_cnn_clean", "digits_mlp_clean")
    assert {p["balance.learn_temperature"] for p in seen} == {True, False}


def test_yaml_example_in_the_docstring_parses() -> None:
    import mtard.search.space as module

    text = module.__doc__.split("```yaml", 1)[1].split("```", 1)[0]
    text = text.replace("<base optim.epochs>", "4")
    data = yaml.safe_load(textwrap.dedent(text))
    space = parse(data)
    assert "balance.tau_max" in space.param_paths

"""Config loading: YAML + `base:` chains, unknown fields, typed overrides, validation, round trip."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from mtard.config import (
    BUNDLED_DIR,
    TrainConfig,
    config_from_dict,
    field_paths,
    get_path,
    load_config,
    parse_override,
    save_config,
    set_path,
    validate_config,
)
from mtard.errors import MtardError


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- YAML and base chains


def test_defaults_are_the_official_values() -> None:
    cfg = TrainConfig()
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.1, 0.9, 2e-4)
    assert cfg.optim.milestones == [215, 260, 285] and cfg.optim.epochs == 300
    assert (cfg.attack.eps, cfg.attack.step_size, cfg.attack.steps) == (8 / 255, 2 / 255, 10)
    b = cfg.balance
    assert (b.tau_lr, b.w_lr, b.w_nat_init, b.tau_min, b.tau_max) == (1e-3, 0.025, 0.5, 1.0, 10.0)


def test_bundled_base_chain(tmp_path: Path) -> None:
    # digits_mtard -> base: digits; the child's name and method win, the rest comes from digits.
    cfg = load_config("digits_mtard")
    assert cfg.name == "digits_mtard" and cfg.method.name == "mtard"
    assert cfg.data.name == "digits" and cfg.attack.eps == 0.2 and cfg.optim.milestones == [10, 13]
    # cifar100_mtard -> cifar10_mtard -> defaults: two levels.
    c100 = load_config("cifar100_mtard")
    assert c100.data.name == "cifar100" and c100.method.kl_scale == 10.0
    assert c100.data.num_workers == 4 and c100.runtime.channels_last is True  # inherited from cifar10_mtard
    assert c100.runtime.bf16 is False and c100.eval.bf16 is False  # fp32, as the official runs


def test_base_chain_relative_to_file_merges_nested_sections(tmp_path: Path) -> None:
    write(tmp_path / "grand.yaml", """\
        name: grand
        method: {name: natural}
        optim: {lr: 0.3, epochs: 7, milestones: [3]}
        attack: {steps: 4}
        """)
    sub = tmp_path / "sub"
    sub.mkdir()
    write(sub / "parent.yaml", """\
        base: ../grand.yaml
        optim: {epochs: 5}
        """)
    child = write(sub / "child.yaml", """\
        base: parent.yaml
        name: child
        optim: {lr: 0.2}
        """)
    cfg = load_config(child)
    assert cfg.name == "child"
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.milestones) == (0.2, 5, [3])  # merged per field
    assert cfg.attack.steps == 4 and cfg.optim.momentum == 0.9  # untouched fields keep their defaults


def test_base_chain_loop_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(MtardError, match="loops back"):
        load_config(tmp_path / "a.yaml")


def test_missing_config_lists_bundled_names(tmp_path: Path) -> None:
    with pytest.raises(MtardError) as err:
        load_config(tmp_path / "nope.yaml")
    assert "not found" in str(err.value) and "digits_mtard" in str(err.value)


def test_unknown_top_level_key_names_it_and_lists_valid_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "optimizer: {lr: 0.1}\n")
    with pytest.raises(MtardError) as err:
        load_config(path)
    msg = str(err.value)
    assert "unknown field optimizer" in msg
    assert "valid fields:" in msg and "optim" in msg and "balance" in msg


def test_unknown_nested_key_names_the_dotted_path_and_valid_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "balance:\n  tau_learning_rate: 0.01\n")
    with pytest.raises(MtardError) as err:
        load_config(path)
    msg = str(err.value)
    assert "balance.tau_learning_rate" in msg
    assert "tau_lr" in msg and "w_nat_init" in msg  # the valid balance fields are listed
    assert "optim" not in msg.split("valid fields:")[1]  # ...and only those


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "name: x\noptim:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(MtardError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "malformed YAML" in msg
    assert "line 4" in msg and "column" in msg


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(MtardError, match="mapping"):
        load_config(write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_wrong_type_in_yaml_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(MtardError, match=r"optim\.epochs: expected an integer"):
        load_config(write(tmp_path / "c.yaml", "optim: {epochs: many}\n"))
    with pytest.raises(MtardError, match=r"^optim: expected a mapping"):
        load_config(write(tmp_path / "d.yaml", "optim: 3\n"))


def test_exponent_numbers_in_yaml_are_numbers(tmp_path: Path) -> None:
    # PyYAML reads `1e-4` (no dot) as a string; the config must still take it as a float.
    cfg = load_config(write(tmp_path / "c.yaml", "method: {name: sat}\noptim: {lr: 1e-4}\nbalance: {tau_lr: 5e-4}\n"))
    assert cfg.optim.lr == 1e-4 and cfg.balance.tau_lr == 5e-4


# ---------------------------------------------------------------- --set overrides


def test_typed_overrides() -> None:
    cfg = load_config(
        "digits",
        [
            "optim.lr=0.05",
            "attack.eps=8/255",
            "optim.milestones=[2, 5]",
            "data.augment=false",
            "balance.learn_temperature=false",
            "optim.epochs=4",
            "balance.tau_lr=1e-4",
            "teachers.robust=digits_cnn_sat",
            "name=123",
        ],
    )
    assert cfg.optim.lr == 0.05
    assert cfg.attack.eps == pytest.approx(8 / 255)
    assert cfg.optim.milestones == [2, 5] and all(isinstance(m, int) for m in cfg.optim.milestones)
    assert cfg.data.augment is False and cfg.balance.learn_temperature is False
    assert cfg.optim.epochs == 4 and isinstance(cfg.optim.epochs, int)
    assert cfg.balance.tau_lr == 1e-4
    assert cfg.teachers.robust == "digits_cnn_sat"
    assert cfg.name == "123"  # a string field keeps a number-looking value as text


def test_parse_override() -> None:
    assert parse_override("optim.lr=0.05") == ("optim.lr", 0.05)
    assert parse_override("optim.milestones=[1,2]") == ("optim.milestones", [1, 2])
    assert parse_override("name=") == ("name", "")
    assert parse_override("attack.eps=8/255") == ("attack.eps", "8/255")
    with pytest.raises(MtardError, match="KEY=VALUE"):
        parse_override("optim.lr")


@pytest.mark.parametrize(
    "override, field, words",
    [
        ("optim.lr=fast", "optim.lr", "expected a number"),
        ("optim.lr=nan", "optim.lr", "finite"),
        ("optim.epochs=2.5", "optim.epochs", "expected an integer"),
        ("optim.epochs=true", "optim.epochs", "expected an integer"),
        ("data.augment=maybe", "data.augment", "expected true/false"),
        ("data.augment=1", "data.augment", "expected true/false"),
        ("optim.milestones=5", "optim.milestones", "expected a list"),
        ("optim.milestones=[1, x]", "optim.milestones[1]", "expected an integer"),
        ("method.name=mtrad", "method.name", "is not one of"),
        ("data.name=mnist", "data.name", "is not one of"),
        ("attack.eps=8/0", "attack.eps", "expected a number"),
    ],
)
def test_bad_override_types_are_rejected_naming_the_field(override: str, field: str, words: str) -> None:
    with pytest.raises(MtardError) as err:
        load_config("digits", [override])
    msg = str(err.value)
    assert msg.startswith(f"{field}:") and words in msg


def test_override_of_unknown_field() -> None:
    for bad in ("optim.learning_rate=0.1", "optimizer.lr=0.1", "optim.lr.x=1"):
        with pytest.raises(MtardError, match="unknown config field") as err:
            load_config("digits", [bad])
        assert bad.split("=")[0] in str(err.value) and "--help-fields" in str(err.value)


def test_set_path_and_get_path() -> None:
    cfg = TrainConfig()
    set_path(cfg, "balance.tau_lr", 0.01)
    set_path(cfg, "attack.eps", "4/255")
    assert get_path(cfg, "balance.tau_lr") == 0.01 and cfg.attack.eps == pytest.approx(4 / 255)
    with pytest.raises(MtardError):
        set_path(cfg, "balance", 3)  # a section is not a leaf
    with pytest.raises(MtardError):
        get_path(cfg, "balance.nope")


def test_field_paths_cover_every_leaf() -> None:
    paths = field_paths()
    for p in ("optim.lr", "attack.eps", "balance.learn_temperature", "teachers.catalog", "scaling.workers", "name"):
        assert p in paths
    assert "optim" not in paths  # sections are not leaves
    defaults = TrainConfig()
    for p in paths:
        get_path(defaults, p)  # every listed path resolves


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "override, field",
    [
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-0.1", "optim.lr"),
        ("optim.momentum=1.0", "optim.momentum"),
        ("optim.epochs=0", "optim.epochs"),
        ("optim.milestones=[5, 2]", "optim.milestones"),
        ("optim.gamma=1.5", "optim.gamma"),
        ("optim.weight_decay=-1", "optim.weight_decay"),
        ("data.val_fraction=1.0", "data.val_fraction"),
        ("data.batch_size=0", "data.batch_size"),
        ("attack.eps=-0.1", "attack.eps"),
        ("attack.steps=0", "attack.steps"),
        ("attack.step_size=0", "attack.step_size"),
        ("balance.tau_nat_init=0.5", "balance.tau_nat_init"),
        ("balance.tau_adv_init=11", "balance.tau_adv_init"),
        ("balance.tau_min=0", "balance.tau_min"),
        ("balance.w_nat_init=1.5", "balance.w_nat_init"),
        ("balance.tau_lr=-1e-3", "balance.tau_lr"),
        ("balance.alpha=0", "balance.alpha"),
        ("method.kl_scale=0", "method.kl_scale"),
        ("method.rslad_adv_weight=2", "method.rslad_adv_weight"),
        ("teachers.robust=", "teachers.robust"),
        ("eval.max_samples=-1", "eval.max_samples"),
        ("scaling.workers=0", "scaling.workers"),
        ("scaling.gpus_per_worker=1.5", "scaling.gpus_per_worker"),
    ],
)
def test_validate_range_errors_name_the_field(override: str, field: str) -> None:
    cfg = load_config("digits_mtard")  # valid as shipped
    set_path(cfg, *parse_override(override))
    with pytest.raises(MtardError) as err:
        validate_config(cfg)
    assert str(err.value).startswith(f"{field}:")


def test_distillation_methods_need_their_teachers() -> None:
    with pytest.raises(MtardError, match=r"^teachers\.clean: method mtard needs a clean teacher"):
        load_config("digits_mtard", ["teachers.clean="])
    load_config("digits_mtard", ["method.name=rslad", "teachers.clean="])  # rslad needs only the robust one
    load_config("digits", ["method.name=natural", "teachers.clean=", "teachers.robust="])


OFFICIAL_BASELINES = ("cifar10_trades_official", "cifar10_ard_official", "cifar100_ard_official", "cifar10_sat_madry")


def test_official_baseline_recipes() -> None:
    from mtard.loop import lr_at

    trades = load_config("cifar10_trades_official")
    assert (trades.method.name, trades.attack.eps, trades.attack.step_size, trades.optim.epochs) == ("trades", 0.031, 0.007, 76)
    assert [lr_at(trades, e) for e in (74, 75, 76)] == pytest.approx([0.1, 0.01, 0.01])  # ×0.1 from epoch 75
    ard = load_config("cifar10_ard_official")
    assert ard.optim.epochs == 200 and ard.attack.bn_mode == "train" and ard.optim.milestone_decay == "once"
    assert [lr_at(ard, e) for e in (100, 101, 151, 200)] == pytest.approx([0.1, 0.01, 0.01, 0.01])  # the official bug
    ard100 = load_config("cifar100_ard_official")
    assert ard100.data.name == "cifar100" and ard100.data.batch_size == 256 and ard100.optim.milestone_decay == "once"
    sat = load_config("cifar10_sat_madry")
    assert (sat.attack.bn_mode, sat.optim.weight_decay_on, sat.optim.epochs, sat.optim.milestones) == ("train", "weights", 205, [102, 153])
    for name in OFFICIAL_BASELINES:  # fp32 like the official code; every header says what is not official
        cfg = load_config(name)
        assert not cfg.runtime.bf16 and not cfg.eval.bf16 and cfg.eval.select == "last"
        header = (BUNDLED_DIR / f"{name}.yaml").read_text()
        assert ("# Official:" in header and "# Not official:" in header) or "see its header" in header, name


def test_bundled_configs_are_valid() -> None:
    for name in ("digits", "digits_mtard", "cifar10_mtard", "cifar100_mtard", *OFFICIAL_BASELINES):
        validate_config(load_config(name))
    # cifar_teacher is a recipe base: the catalog entry supplies the method.
    assert load_config("cifar_teacher", ["method.name=natural"]).optim.epochs == 200


# ---------------------------------------------------------------- round trip


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        "digits_mtard",
        ["optim.lr=0.07", "attack.eps=8/255", "optim.milestones=[3, 9]", "balance.learn_temperature=false", "scaling.gpus_per_worker=0.25"],
    )
    path = tmp_path / "deep" / "config.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert again.attack.eps == 8 / 255  # bit-exact float round trip


def test_config_from_dict_equals_yaml_loading() -> None:
    cfg = config_from_dict({"optim": {"lr": 0.2}, "method": {"name": "sat"}})
    assert cfg.optim.lr == 0.2 and cfg.method.name == "sat" and cfg.optim.epochs == 300
    assert math.isclose(cfg.eval.eps, 8 / 255)

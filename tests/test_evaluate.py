"""Evaluation suite: attack ordering sanity, chance-level baselines, checkpoint reports.

A tiny MLP trained for a second on the 8×8 digits is the model under test. It is not
adversarially trained, so at ε = 0.1 (25/255 — large for 8×8 images in [0, 1]) attacks
must hurt it; the checks are orderings that hold for any sound attack implementation
(stronger attack ⇒ lower accuracy, within a sample or two) rather than hard-coded numbers.

AutoAttack's cost is dominated by its later stages, which run only while some point
survives APGD-CE (APGD-T and FAB-T: 9 targets × 100 iterations; Square: 5000 queries, a
per-query Python overhead whatever the number of points). So the one run that needs
survivors uses 32 samples at ε = 0.15 (a few survive PGD, so "AutoAttack ≤ PGD" is a real
comparison), and the end-to-end run uses ε = 0.2, where APGD-CE breaks everything.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from conftest import train_digits_mlp
from mtard.checkpoint import model_spec, save
from mtard.config import DataConfig, EvalConfig, TrainConfig, to_dict
from mtard.data import Splits, load_splits
from mtard.errors import MtardError
from mtard.evaluate import (
    ATTACKS,
    DEFAULT_ATTACKS,
    AttackResult,
    attack_library,
    evaluate_checkpoint,
    evaluate_model,
    render_attack_table,
)
from mtard.models import build_model

EPS = 0.1  # large enough that an undefended digits model loses most of its accuracy
EPS_AUTOATTACK = 0.15  # a few of 32 points survive PGD; fewer survivors keep AutoAttack quick
CHEAP = ["clean", "fgsm", "fgsm_rs", "pgd20_trades", "pgd20_sat", "cw"]  # everything but AutoAttack


def _accuracies(results: list[AttackResult]) -> dict[str, float]:
    return {r.attack: r.accuracy for r in results}


def _spec(num_classes: int = 10) -> dict:
    return model_spec("mlp", num_classes=num_classes, in_channels=1, image_size=8, dataset="digits")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spin-waiting threads slow each step down by an order of magnitude."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_splits(DataConfig(name="digits"))


@pytest.fixture(scope="module")
def trained(splits: Splits) -> nn.Module:
    """An MLP trained with plain cross-entropy (≈95% clean test accuracy, no robustness)."""
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8)
    train_digits_mlp(model, torch.optim.Adam(model.parameters(), lr=3e-3), splits, epochs=15)
    return model.eval()


class ConstantModel(nn.Module):
    """Logits independent of the input (zero weights, fixed bias), but still differentiable in x."""

    def __init__(self, predicted: int) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        nn.init.zeros_(self.linear.weight)
        with torch.no_grad():
            self.linear.bias.copy_(torch.linspace(-1, 1, 10).roll(predicted - 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


# ---------------------------------------------------------------- registry and descriptions


def test_registry_is_in_report_order() -> None:
    assert [a for a in ATTACKS if a in DEFAULT_ATTACKS] == DEFAULT_ATTACKS
    assert set(ATTACKS) - set(DEFAULT_ATTACKS) == {"fgsm_rs"}  # an option, not in the default suite


def test_every_attack_names_its_library_and_version() -> None:
    from importlib.metadata import version

    assert attack_library("autoattack").startswith(f"pyautoattack {version('pyautoattack')} (fra31/auto-attack")
    for name in ("fgsm", "fgsm_rs", "pgd20_trades", "pgd20_sat", "cw"):
        assert attack_library(name).startswith(f"mtard {version('mtard')} (mtard.attacks, torch {torch.__version__}")
    assert "random start" in ATTACKS["fgsm_rs"].describe(8 / 255) and "no random start" in ATTACKS["fgsm"].describe(8 / 255)


def test_descriptions_name_settings_and_scaling() -> None:
    at_ref = {name: spec.describe(8 / 255) for name, spec in ATTACKS.items()}
    assert at_ref["pgd20_trades"] == "PGD-20 (TRADES: step 0.003, uniform start), L∞ ε=8/255"
    assert at_ref["pgd20_sat"] == "PGD-20 (SAT: step 2/255, uniform start), L∞ ε=8/255"
    assert "confidence 50" in at_ref["cw"] and "30 steps" in at_ref["cw"]
    for part in ("APGD-CE", "APGD-T", "FAB-T", "Square"):
        assert part in at_ref["autoattack"]
    # At another ε the step sizes scale by ε/(8/255) and the description says so.
    scaled = ATTACKS["pgd20_trades"].describe(0.2)
    assert "ε=0.2" in scaled and "ε/(8/255)" in scaled
    step = float(re.search(r"step ([0-9.]+) ", scaled).group(1))
    assert step == pytest.approx(0.003 * 0.2 / (8 / 255), rel=1e-3)


# ---------------------------------------------------------------- evaluate_model


def test_attack_ordering_on_trained_model(trained: nn.Module, splits: Splits) -> None:
    results = evaluate_model(trained, splits.test, attacks=CHEAP, eps=EPS, max_samples=128)
    assert [r.attack for r in results] == CHEAP
    assert all(r.samples == 128 for r in results)
    acc = _accuracies(results)
    tol = 2 / 128  # a couple of samples: random starts can flip a borderline point
    assert acc["clean"] > 0.8, "the fixture model failed to train"
    for name in CHEAP[1:]:
        assert 0.0 <= acc[name] <= acc["clean"] + tol, name
    assert acc["pgd20_sat"] < acc["clean"], "PGD did not reduce accuracy of an undefended model"
    for name in ("pgd20_trades", "pgd20_sat"):
        assert acc[name] <= acc["fgsm"] + tol, name


def test_autoattack_is_not_weaker_than_pgd(trained: nn.Module, splits: Splits) -> None:
    attacks = ["clean", "pgd20_trades", "pgd20_sat", "autoattack"]
    acc = _accuracies(evaluate_model(trained, splits.test, attacks=attacks, eps=EPS_AUTOATTACK, max_samples=32))
    # AutoAttack only attacks points that are correct on clean input, so this one is exact.
    assert acc["autoattack"] <= acc["clean"]
    assert acc["autoattack"] <= min(acc["pgd20_trades"], acc["pgd20_sat"]) + 1 / 32


def test_constant_model_is_at_chance_and_unattackable(splits: Splits) -> None:
    predicted = 3
    model = ConstantModel(predicted)
    labels = torch.tensor([int(splits.test[i][1]) for i in range(len(splits.test))])
    expected = float((labels == predicted).float().mean())  # the class's frequency, ≈ 1/10
    results = evaluate_model(model, splits.test, attacks=CHEAP, eps=EPS)
    for r in results:
        assert r.accuracy == pytest.approx(expected), r.attack  # nothing to attack: no input dependence
        assert r.accuracy < 0.2


def test_untrained_model_is_near_chance(splits: Splits) -> None:
    torch.manual_seed(1)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8)
    (clean,) = evaluate_model(model, splits.test, attacks=["clean"], eps=EPS)
    assert clean.accuracy < 0.3  # chance is 0.1; a random net never gets near a trained one


def test_zero_eps_means_clean_for_every_attack(trained: nn.Module, splits: Splits) -> None:
    acc = _accuracies(evaluate_model(trained, splits.test, attacks=DEFAULT_ATTACKS, eps=0.0, max_samples=64))
    assert len(set(acc.values())) == 1


def test_deterministic_and_side_effect_free(trained: nn.Module, splits: Splits) -> None:
    trained.train()
    try:
        state = torch.get_rng_state()
        first = evaluate_model(trained, splits.test, attacks=CHEAP, eps=EPS, max_samples=64, seed=5)
        assert torch.equal(torch.get_rng_state(), state), "evaluation consumed the global RNG stream"
        assert trained.training, "the model's train/eval mode was not restored"
        again = evaluate_model(trained, splits.test, attacks=CHEAP, eps=EPS, max_samples=64, seed=5)
        assert first == again
    finally:
        trained.eval()


def test_user_errors(trained: nn.Module, splits: Splits) -> None:
    with pytest.raises(MtardError, match="unknown attack 'pgd100'.*autoattack"):
        evaluate_model(trained, splits.test, attacks=["clean", "pgd100"], eps=EPS)
    with pytest.raises(MtardError, match="no attacks"):
        evaluate_model(trained, splits.test, attacks=[], eps=EPS)
    with pytest.raises(MtardError, match="eps"):
        evaluate_model(trained, splits.test, attacks=["clean"], eps=-0.1)
    normalised = TensorDataset(torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    with pytest.raises(MtardError, match=r"\[0, 1\]"):
        evaluate_model(trained, normalised, attacks=["clean"], eps=EPS)


def test_render_table_lists_every_result() -> None:
    results = [
        AttackResult("clean", "clean (no attack)", 0.9688, 64),
        AttackResult("pgd20_sat", ATTACKS["pgd20_sat"].describe(8 / 255), 0.5, 64),
    ]
    lines = render_attack_table(results).splitlines()
    assert len(lines) == 2 + len(results)  # header, rule, one row each
    assert lines[2].split()[:3] == ["clean", "96.88%", "64"]
    assert lines[3].split()[:3] == ["pgd20_sat", "50.00%", "64"]
    assert lines[3].endswith(results[1].description)


# ---------------------------------------------------------------- evaluate_checkpoint


def _config(val_fraction: float = 0.2, split_seed: int = 3, eps: float = 0.2) -> dict:
    cfg = TrainConfig(
        data=DataConfig(name="digits", val_fraction=val_fraction, split_seed=split_seed),
        eval=EvalConfig(eps=eps),
    )
    return to_dict(cfg)


def test_evaluate_checkpoint_end_to_end(trained: nn.Module, splits: Splits, tmp_path) -> None:
    path = tmp_path / "student.pt"
    save(path, {"model": _spec(), "state_dict": trained.state_dict(), "config": _config(eps=0.2)})
    report = evaluate_checkpoint(path, split="test", max_samples=32, device="cpu")

    written = tmp_path / "student.eval-test.json"
    assert report["json"] == str(written)
    assert json.loads(written.read_text()) == {k: v for k, v in report.items() if k != "json"}
    assert [r["attack"] for r in report["results"]] == DEFAULT_ATTACKS
    assert report["dataset"] == "digits" and report["split"] == "test"
    assert report["eps"] == pytest.approx(0.2)  # from the saved config's eval.eps
    assert report["samples"] == 32
    assert report["precision"] == "fp32" and report["torch"] == torch.__version__
    for row in report["results"]:
        assert set(row) == {"attack", "description", "accuracy", "samples", "library", "interval_95"}
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["library"] == attack_library(row["attack"])
    # The same model and images through evaluate_model give the same clean accuracy.
    (clean,) = evaluate_model(trained, splits.test, attacks=["clean"], eps=0.2, max_samples=32)
    assert report["results"][0]["accuracy"] == clean.accuracy


def test_val_split_is_the_one_training_used(trained: nn.Module, tmp_path) -> None:
    path = tmp_path / "student.pt"
    save(path, {"model": _spec(), "state_dict": trained.state_dict(), "config": _config(val_fraction=0.2, split_seed=3)})
    out = tmp_path / "reports" / "val.json"
    report = evaluate_checkpoint(path, split="val", attacks=["clean"], out=out, device="cpu")
    expected = load_splits(DataConfig(name="digits", val_fraction=0.2, split_seed=3)).val
    assert report["samples"] == len(expected)
    assert out.is_file()
    (clean,) = evaluate_model(trained, expected, attacks=["clean"], eps=0.2)
    assert report["results"][0]["accuracy"] == clean.accuracy


def test_checkpoint_without_config_uses_spec_dataset_and_default_eps(trained: nn.Module, splits: Splits, tmp_path) -> None:
    path = tmp_path / "bare.pt"
    save(path, {"model": _spec(), "state_dict": trained.state_dict()})
    report = evaluate_checkpoint(path, attacks=["clean", "fgsm"], device="cpu")
    assert math.isclose(report["eps"], 8 / 255)
    assert report["samples"] == len(splits.test)
    assert "ε=8/255" in report["results"][1]["description"]


def test_evaluate_checkpoint_user_errors(trained: nn.Module, tmp_path) -> None:
    path = tmp_path / "student.pt"
    save(path, {"model": _spec(), "state_dict": trained.state_dict(), "config": _config()})
    with pytest.raises(MtardError, match="split 'train'.*'val'.*'test'"):
        evaluate_checkpoint(path, split="train")
    with pytest.raises(MtardError, match="unknown attack 'square'.*pgd20_trades"):
        evaluate_checkpoint(path, attacks=["square"])
    wrong = tmp_path / "five.pt"
    five = build_model("mlp", num_classes=5, in_channels=1, image_size=8)
    save(wrong, {"model": _spec(num_classes=5), "state_dict": five.state_dict()})
    with pytest.raises(MtardError, match="5 classes"):
        evaluate_checkpoint(wrong, attacks=["clean"])
    with pytest.raises(MtardError, match="does not exist"):
        evaluate_checkpoint(tmp_path / "missing.pt")
    assert not list(tmp_path.glob("*.json"))


def test_bf16_only_when_asked(trained: nn.Module, tmp_path) -> None:
    path = tmp_path / "student.pt"
    save(path, {"model": _spec(), "state_dict": trained.state_dict(), "config": _config()})
    report = evaluate_checkpoint(path, attacks=["clean", "pgd20_sat"], max_samples=32, device="cpu", precision="bf16")
    assert report["precision"] == "bf16"
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in report["results"])
    with pytest.raises(MtardError, match="unknown precision 'fp16'"):
        evaluate_checkpoint(path, attacks=["clean"], precision="fp16")


def test_every_reported_accuracy_carries_its_wilson_interval(trained: nn.Module, tmp_path) -> None:
    from mtard.stats import binomial_interval

    path = tmp_path / "student.pt"
    save(path, {"model": _spec(), "state_dict": trained.state_dict(), "config": _config()})
    report = evaluate_checkpoint(path, split="test", attacks=["clean"], max_samples=50, device="cpu")
    (r,) = report["results"]
    ci = binomial_interval(round(r["accuracy"] * 50), 50)
    assert r["samples"] == 50 and r["interval_95"] == [ci.low, ci.high]
    assert f"[{100 * ci.low:.1f}, {100 * ci.high:.1f}]" in render_attack_table([AttackResult(**{k: v for k, v in r.items() if k != "interval_95"})])

"""The epoch loop: lr schedule, balance decay, real learning, exact resume, divergence, log files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from mtard import checkpoint as ckpt
from mtard.config import TrainConfig, load_config
from mtard.errors import MtardError
from mtard.logs import read_metrics
from mtard.loop import TrainingDiverged, lr_at, resolve_device
from mtard.train import train_local

TIMING = {"train_time_s", "samples_per_s", "epoch_time_s", "time_in_epochs_s"}


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    "epoch, expected",
    [(1, 0.1), (100, 0.1), (215, 0.1), (216, 0.01), (260, 0.01), (261, 0.001), (285, 0.001), (286, 1e-4), (300, 1e-4)],
)
def test_lr_at_official_schedule(epoch: int, expected: float) -> None:
    assert lr_at(TrainConfig(), epoch) == pytest.approx(expected, rel=1e-12)


def test_lr_at_bundled_digits_schedule() -> None:
    cfg = load_config("digits")  # lr 0.05, milestones [10, 13]
    assert [lr_at(cfg, e) for e in (1, 10, 11, 13, 14, 15)] == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005])
    cfg.optim.gamma = 0.5
    cfg.optim.milestones = []
    assert lr_at(cfg, 99) == 0.05


@pytest.mark.parametrize("decay", [True, False])
def test_balance_lrs_decay_with_the_lr(make_cfg, trained_teachers: Path, decay: bool) -> None:
    # Milestones [1, 2] over 2 epochs: the lr drops once, before epoch 2 (after epoch 1);
    # milestone 2 would only act before an epoch 3. Calling on_milestone one epoch early
    # (or for both milestones) would scale the balance lrs by gamma² instead of gamma.
    cfg = make_cfg(
        "mtard", "optim.epochs=2", "optim.milestones=[1, 2]", "optim.gamma=0.1", "balance.tau_lr=0.002",
        "balance.w_lr=0.04", f"balance.decay_with_lr={str(decay).lower()}", "eval.pgd_steps=0",
        catalog=trained_teachers, name=f"decay_{decay}",
    )
    train_local(cfg)
    rows = read_metrics(cfg.run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.005])
    state = ckpt.read(cfg.run_dir / "checkpoint.pt")["method"]
    factor = 0.1 if decay else 1.0
    assert state["entropy"]["lr"] == pytest.approx(0.002 * factor, rel=1e-9)
    assert state["weights"]["lr"] == pytest.approx(0.04 * factor, rel=1e-9)


# ---------------------------------------------------------------- a real run


def test_short_natural_run_learns_and_writes_its_files(make_cfg) -> None:
    cfg = make_cfg("natural", "optim.epochs=3", "eval.max_samples=0", "eval.pgd_steps=0", name="learn")
    final = train_local(cfg)
    # Measured: ~0.91 val clean accuracy after 3 epochs (MLP, lr 0.05); chance is 0.1.
    assert final["epoch"] == 3 and final["val_clean_acc"] > 0.8

    run = cfg.run_dir
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert without_timing(rows[-1]) == without_timing(json.loads(json.dumps(final)))
    assert rows[0]["loss"] > rows[-1]["loss"] and math.isfinite(rows[-1]["loss"])
    with open(run / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in table] == [1, 2, 3]
    assert float(table[-1]["val_clean_acc"]) == pytest.approx(final["val_clean_acc"])
    assert load_config(run / "config.yaml") == cfg  # the resolved config, loadable as is
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file"
    payload = ckpt.read(run / "checkpoint.pt")
    assert payload["epoch"] == 3 and payload["model"]["arch"] == "mlp" and payload["model"]["num_classes"] == 10
    model = ckpt.load_checkpoint(run / "checkpoint.pt")  # the student checkpoint stands on its own
    assert sum(p.numel() for p in model.parameters()) > 0


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), f"weights differ at {k}"
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for k in oa:
        assert torch.equal(oa[k]["momentum_buffer"], ob[k]["momentum_buffer"]), f"momentum differs for param {k}"
    assert a["method"] == b["method"]
    assert without_timing(a["metrics"]) == without_timing(b["metrics"])


def test_resume_continues_exactly(make_cfg, trained_teachers: Path) -> None:
    # MTARD, with the milestone (and the balance-lr decay) falling on the resume boundary.
    common = ("optim.milestones=[1]", "balance.tau_lr=0.01", "eval.max_samples=32")
    straight = make_cfg("mtard", "optim.epochs=2", *common, catalog=trained_teachers, name="straight")
    train_local(straight)

    split = make_cfg("mtard", "optim.epochs=1", *common, catalog=trained_teachers, name="split")
    train_local(split)
    first = ckpt.read(split.run_dir / "checkpoint.pt")
    assert first["epoch"] == 1 and first["method"]["weights"]["ref_nat"] is not None
    split.optim.epochs = 2
    train_local(split, resume=True)

    a = ckpt.read(straight.run_dir / "checkpoint.pt")
    b = ckpt.read(split.run_dir / "checkpoint.pt")
    _assert_same_state(a, b)
    assert a["method"]["entropy"]["lr"] == pytest.approx(0.001)  # decayed once, at the boundary
    assert a["method"]["entropy"]["tau_adv"] != 1.0 or a["method"]["entropy"]["tau_nat"] != 1.0  # τ moved
    ra, rb = read_metrics(straight.run_dir), read_metrics(split.run_dir)
    assert [without_timing(r) for r in ra] == [without_timing(r) for r in rb]
    assert {"kl_adv", "kl_nat", "w_adv", "w_nat", "tau_adv", "tau_nat"} <= set(ra[-1])


def test_resume_without_a_checkpoint(make_cfg) -> None:
    cfg = make_cfg("natural", name="fresh")
    with pytest.raises(MtardError, match="--resume: no checkpoint"):
        train_local(cfg, resume=True)


# ---------------------------------------------------------------- divergence


def test_divergence_stops_and_keeps_the_last_good_checkpoint(make_cfg) -> None:
    cfg = make_cfg("natural", "eval.pgd_steps=0", name="boom")
    train_local(cfg)
    path = cfg.run_dir / "checkpoint.pt"
    good = ckpt.read(path)
    # The same run continued with an absurd lr: the first step blows the weights up to inf.
    cfg.optim.epochs, cfg.optim.lr = 2, 1e30
    with pytest.raises(TrainingDiverged) as err:
        train_local(cfg, resume=True)
    msg = str(err.value)
    assert "epoch 2" in msg and "lower optim.lr" in msg and "last good checkpoint (epoch 1)" in msg
    assert isinstance(err.value, MtardError) and err.value.epoch == 2  # the CLI prints it as one line
    kept = ckpt.read(path)
    assert kept["epoch"] == 1
    for k, v in good["state_dict"].items():
        assert torch.equal(kept["state_dict"][k], v)
    ckpt.load_checkpoint(path)
    assert all(math.isfinite(r.get("loss", 0.0)) for r in read_metrics(cfg.run_dir))


def test_divergence_in_the_first_epoch(make_cfg) -> None:
    cfg = make_cfg("natural", "optim.lr=1e30", "eval.pgd_steps=0", name="boom1")
    with pytest.raises(TrainingDiverged, match="at epoch 1.*no checkpoint was written yet.*lower optim.lr"):
        train_local(cfg)
    assert not (cfg.run_dir / "checkpoint.pt").exists()


def test_cuda_requested_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(MtardError, match="runtime.device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"

"""The step loop reads device values on the host only every `runtime.divergence_check_every` steps:
loss parts are summed on the device, and divergence is a device-side flag that keeps the first bad step."""

from __future__ import annotations

import math

import pytest
import torch

from mtard import checkpoint as ckpt
from mtard.config import load_config
from mtard.errors import MtardError
from mtard.logs import read_metrics
from mtard.loop import EpochLog, TrainingDiverged, train_local


def test_epoch_log_sums_tensor_and_float_parts_like_python_floats() -> None:
    log = EpochLog(torch.device("cpu"))
    values = [0.1, 1e-8, 3.0, 2.5e7]
    for step, v in enumerate(values):
        log.add(step, {"loss": torch.tensor(v, dtype=torch.float32), "w": v / 2}, torch.tensor(v))
    means = {k: t.item() for k, t in log.means().items()}
    # What the loop used to do: float() every part each step, sum in Python (float64).
    expected_loss = sum(float(torch.tensor(v, dtype=torch.float32)) for v in values) / len(values)
    assert means == {"loss": expected_loss, "w": sum(v / 2 for v in values) / len(values)}
    assert log.first_bad() is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_epoch_log_keeps_the_first_bad_step_and_its_value(bad: float) -> None:
    log = EpochLog(torch.device("cpu"))
    losses = [1.0, 2.0, bad, math.nan, 5.0]  # a finite loss after the bad ones does not clear the flag
    for step, v in enumerate(losses):
        log.add(step, {"loss": torch.tensor(v)}, torch.tensor(v))
    step, value = log.first_bad()
    assert step == 2 and (value == bad or (math.isnan(bad) and math.isnan(value)))


@pytest.mark.parametrize("every", [1, 3, 1000])
def test_divergence_is_reported_at_its_first_bad_batch_whatever_the_check_interval(make_cfg, every: int) -> None:
    # lr 1e30: batch 0's loss is finite and its update blows the weights up, so batch 1's loss is NaN (the
    # loop's former per-step read, = check every step, said so too). Checking every 3 steps (first read after
    # batch 2) or only at the epoch's end must name the same batch and value.
    cfg = make_cfg("natural", "optim.lr=1e30", "eval.pgd_steps=0", f"runtime.divergence_check_every={every}", name=f"boom{every}")
    with pytest.raises(TrainingDiverged) as err:
        train_local(cfg)
    msg = str(err.value)
    assert "at epoch 1, batch 1 " in msg and "loss is nan" in msg, msg
    assert "no checkpoint was written yet" in msg and "lower optim.lr" in msg
    assert not (cfg.run_dir / "checkpoint.pt").exists()


def test_divergence_detected_between_checks_keeps_the_last_good_checkpoint(make_cfg) -> None:
    cfg = make_cfg("natural", "eval.pgd_steps=0", "runtime.divergence_check_every=1000", name="late")
    train_local(cfg)
    good = ckpt.read(cfg.run_dir / "checkpoint.pt")
    cfg.optim.epochs, cfg.optim.lr = 2, 1e30
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, batch \d+ .*last good checkpoint \(epoch 1\) is kept") as err:
        train_local(cfg, resume=True)
    assert err.value.epoch == 2
    kept = ckpt.read(cfg.run_dir / "checkpoint.pt")
    assert kept["epoch"] == 1 and all(torch.equal(kept["state_dict"][k], v) for k, v in good["state_dict"].items())
    assert [r["epoch"] for r in read_metrics(cfg.run_dir)] == [1]


def test_logged_means_do_not_depend_on_the_check_interval(make_cfg, trained_teachers) -> None:
    runs = []
    for every in (1, 7):
        cfg = make_cfg("mtard", "eval.max_samples=32", f"runtime.divergence_check_every={every}", catalog=trained_teachers, name=f"m{every}")
        train_local(cfg)
        runs.append({k: v for k, v in read_metrics(cfg.run_dir)[-1].items() if not k.endswith("_s")})
    assert runs[0] == runs[1]
    assert {"loss", "kl_adv", "kl_nat", "w_adv", "tau_adv"} <= set(runs[0]) and math.isfinite(runs[0]["loss"])


def test_check_interval_must_be_positive() -> None:
    with pytest.raises(MtardError, match="runtime.divergence_check_every"):
        load_config("digits", ["runtime.divergence_check_every=0"])

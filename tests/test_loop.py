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
from mtard.loop import (
    BEST_FILE,
    SELECTION_METRICS,
    TrainingDiverged,
    is_selection_epoch,
    lr_at,
    parameter_groups,
    resolve_device,
    train_local,
    update_selection,
    validation_autocast,
)

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


def test_lr_at_ard_official_bug() -> None:
    """ARD's code sets lr = 0.1 × 0.1 at both milestones [100, 150]: one effective decay."""
    cfg = TrainConfig()
    cfg.optim.epochs, cfg.optim.milestones = 200, [100, 150]
    assert [lr_at(cfg, e) for e in (100, 101, 150, 151, 200)] == pytest.approx([0.1, 0.01, 0.01, 0.001, 0.001])
    cfg.optim.milestone_decay = "once"
    assert [lr_at(cfg, e) for e in (100, 101, 150, 151, 200)] == pytest.approx([0.1, 0.01, 0.01, 0.01, 0.01])


def test_weight_decay_on_weights_only() -> None:
    from mtard.models import build_model

    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    cfg = TrainConfig()
    (everything,) = parameter_groups(cfg, model)
    assert everything["weight_decay"] == 2e-4 and len(everything["params"]) == len(list(model.parameters()))
    cfg.optim.weight_decay_on = "weights"
    decayed, free = parameter_groups(cfg, model)
    names = {id(p): n for n, p in model.named_parameters()}
    conv_fc = {n for n, p in model.named_parameters() if isinstance(model.get_submodule(n.rpartition(".")[0]), (torch.nn.Conv2d, torch.nn.Linear)) and n.endswith("weight")}
    assert {names[id(p)] for p in decayed["params"]} == conv_fc and decayed["weight_decay"] == 2e-4
    assert free["weight_decay"] == 0.0 and len(free["params"]) == len(names) - len(conv_fc) > 0  # biases, BN γ/β


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


# ---------------------------------------------------------------- choosing the epoch


def test_selection_schedule_is_the_official_one() -> None:
    cfg = TrainConfig()  # 300 epochs, first milestone 215, eval.select_every 20
    candidates = [e for e in range(1, 301) if is_selection_epoch(cfg, e)]
    assert candidates == list(range(20, 215, 20)) + list(range(215, 301))
    cfg.optim.milestones, cfg.optim.epochs, cfg.eval.select_every = [], 7, 3
    assert [e for e in range(1, 8) if is_selection_epoch(cfg, e)] == [3, 6, 7]  # the final epoch always


def _epochs(cfg: TrainConfig, accs: list[tuple[float, float]]) -> list[dict]:
    selected, out = {}, []
    for epoch, (clean, pgd) in enumerate(accs, start=1):
        selected, chosen = update_selection(cfg, selected, {"epoch": epoch, "val_clean_acc": clean, "val_pgd_acc": pgd})
        out.append({**selected, "chosen": chosen})
    return out


def test_update_selection_known_answers() -> None:
    cfg = TrainConfig()
    cfg.optim.epochs, cfg.optim.milestones, cfg.eval.select_every = 6, [4], 2
    # candidates: 2, 4, 5, 6 (every 2nd epoch before milestone 4, every epoch from it, the last)
    accs = [(0.9, 0.9), (0.6, 0.2), (0.8, 0.6), (0.5, 0.3), (0.7, 0.3), (0.6, 0.4)]
    cfg.eval.select = "best"
    rows = _epochs(cfg, accs)
    assert [r["selected_epoch"] for r in rows] == [0, 2, 2, 2, 5, 5]  # epoch 1 (0.9) is no candidate; 6 ties 5
    assert math.isnan(rows[0]["selected_score"]) and math.isnan(rows[0]["selected_val_pgd_acc"])
    assert [r["chosen"] for r in rows] == [False, True, False, False, True, False]
    assert rows[-1]["selected_score"] == pytest.approx(0.5) and rows[-1]["selected_val_clean_acc"] == 0.7
    cfg.eval.select_criterion = "pgd"
    assert [r["selected_epoch"] for r in _epochs(cfg, accs)] == [0, 2, 2, 4, 4, 6]
    cfg.eval.select = "last"
    rows = _epochs(cfg, accs)
    assert [r["selected_epoch"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(r["chosen"] for r in rows)
    assert rows[-1]["selected_val_pgd_acc"] == 0.4


def test_best_epoch_is_kept_beside_the_last(make_cfg) -> None:
    sets = ("optim.epochs=4", "optim.lr=0.5", "eval.select=best", "eval.select_every=1", "eval.pgd_steps=2")
    cfg = make_cfg("natural", *sets, name="best")
    final = train_local(cfg)
    rows = read_metrics(cfg.run_dir)
    scores = [(r["val_clean_acc"] + r["val_pgd_acc"]) / 2 for r in rows]
    best_epoch = scores.index(max(scores)) + 1  # the first epoch with the highest (clean + PGD)/2
    assert final["selected_epoch"] == best_epoch and final["selected_score"] == pytest.approx(max(scores))
    assert final["selected_val_clean_acc"] == rows[best_epoch - 1]["val_clean_acc"]
    assert all(set(SELECTION_METRICS) <= set(r) for r in rows)  # every epoch reports them
    best = ckpt.read(cfg.run_dir / BEST_FILE)
    last = ckpt.read(cfg.run_dir / ckpt.CHECKPOINT_FILE)
    assert best["epoch"] == best_epoch and last["epoch"] == 4
    assert best["metrics"]["val_clean_acc"] == rows[best_epoch - 1]["val_clean_acc"]
    ckpt.load_checkpoint(cfg.run_dir / BEST_FILE)  # evaluable like any checkpoint

    # Resumed after epoch 2: the selection continues as if never stopped.
    split = make_cfg("natural", *sets, "optim.epochs=2", name="best_split")
    train_local(split)
    split.optim.epochs = 4
    resumed = train_local(split, resume=True)
    assert {k: resumed[k] for k in SELECTION_METRICS} == {k: final[k] for k in SELECTION_METRICS}
    assert ckpt.read(split.run_dir / BEST_FILE)["epoch"] == best_epoch


def test_last_selection_writes_no_best_file(make_cfg) -> None:
    cfg = make_cfg("natural", "optim.epochs=2", name="last")
    final = train_local(cfg)
    assert final["selected_epoch"] == 2 and final["selected_val_clean_acc"] == final["val_clean_acc"]
    assert not (cfg.run_dir / BEST_FILE).exists()


def test_validation_attacks_in_fp32_unless_asked() -> None:
    from contextlib import nullcontext

    cfg = TrainConfig()
    cfg.runtime.bf16 = True  # bf16 training does not make the ranking numbers bf16
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert isinstance(validation_autocast(cfg, device), nullcontext)
    cfg.eval.bf16 = True  # the explicit request, honoured on CUDA only (like runtime.bf16)
    assert isinstance(validation_autocast(cfg, torch.device("cpu")), nullcontext)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else nullcontext():  # "CUDA is not available"
        context = validation_autocast(cfg, torch.device("cuda"))
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16


def test_teachers_are_loaded_once_per_process_until_their_file_changes(trained_teachers) -> None:
    """Trial after trial in one search process: a teacher loads once; a retrained file loads again."""
    import os

    from mtard.data import dataset_info
    from mtard.loop import _teacher
    from mtard.teachers import checkpoint_path, get_entry, load_catalog

    entry = get_entry(load_catalog(trained_teachers), "tiny_clean")
    info, cpu = dataset_info("digits"), torch.device("cpu")
    first = _teacher(entry, info, cpu)
    assert _teacher(entry, info, cpu) is first
    path = checkpoint_path(entry)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # "retrained"
    assert _teacher(entry, info, cpu) is not first

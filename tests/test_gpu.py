"""The CUDA path: training, exact resume, bf16, channels_last, a search trial on half a GPU, NCCL.

Marked `gpu` and skipped without CUDA (CI has no GPU); `benchmarks/gpu_check.sh` runs them on a
GPU machine (`pytest -m gpu`). Exact resume on a GPU needs deterministic kernels: cuBLAS reads
CUBLAS_WORKSPACE_CONFIG when it first starts, so it is set here, before this module touches CUDA.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from mtard import checkpoint as ckpt
from mtard.logs import read_metrics
from mtard.loop import train_local

DEVICE = "cuda"
NO_CUDA = "no CUDA device (these run on a GPU machine: benchmarks/gpu_check.sh)"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason=NO_CUDA)]
TIMING = {"train_time_s", "samples_per_s", "epoch_time_s", "time_in_epochs_s"}


@pytest.fixture
def deterministic():
    # warn_only: adaptive_avg_pool2d's CUDA backward is flagged as nondeterministic as a whole, but
    # for small_cnn's exact 8×8 → 4×4 windows it takes the kernel without atomics.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def _raw_state(path: Path) -> dict[str, torch.Tensor]:
    """The student's tensors where they were saved from (no map_location): shows the device it trained on."""
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_mtard_trains_and_resumes_exactly_on_cuda(make_cfg, trained_teachers, deterministic, precision: str) -> None:
    common = (f"runtime.device={DEVICE}", f"runtime.bf16={str(precision == 'bf16').lower()}", "student.arch=small_cnn",
              "optim.milestones=[1]", "balance.tau_lr=0.01", "eval.max_samples=64")
    straight = make_cfg("mtard", "optim.epochs=2", *common, catalog=trained_teachers, name=f"straight_{precision}")
    train_local(straight)
    split = make_cfg("mtard", "optim.epochs=1", *common, catalog=trained_teachers, name=f"split_{precision}")
    train_local(split)
    split.optim.epochs = 2
    train_local(split, resume=True)

    a, b = ckpt.read(straight.run_dir / "checkpoint.pt"), ckpt.read(split.run_dir / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), f"{precision}: weights differ at {k} after resume"
    assert a["method"] == b["method"]
    assert [_untimed(r) for r in read_metrics(straight.run_dir)] == [_untimed(r) for r in read_metrics(split.run_dir)]
    last = read_metrics(straight.run_dir)[-1]
    assert all(math.isfinite(last[k]) for k in ("loss", "kl_adv", "kl_nat")), last
    assert all(t.device.type == DEVICE for t in _raw_state(straight.run_dir / "checkpoint.pt").values())


def test_bf16_autocast_really_changes_the_arithmetic(make_cfg, trained_teachers, deterministic) -> None:
    states = []
    for bf16 in ("false", "true"):
        cfg = make_cfg("mtard", f"runtime.device={DEVICE}", f"runtime.bf16={bf16}", "student.arch=small_cnn", "eval.pgd_steps=0",
                       catalog=trained_teachers, name=f"bf16_{bf16}")
        train_local(cfg)
        states.append(ckpt.read(cfg.run_dir / "checkpoint.pt")["state_dict"])
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0]), "bf16 run is bit-identical to fp32: autocast did not act"


def test_divergence_flag_on_the_device_names_the_first_bad_batch(make_cfg) -> None:
    # As tests/test_loop_syncs.py on CPU: batch 0's update blows the weights up, batch 1's loss is NaN.
    from mtard.loop import TrainingDiverged

    cfg = make_cfg("natural", f"runtime.device={DEVICE}", "optim.lr=1e30", "eval.pgd_steps=0", "runtime.divergence_check_every=1000", name="boom")
    with pytest.raises(TrainingDiverged, match=r"loss is -?(nan|inf) at epoch 1, batch 1 .*no checkpoint was written yet"):
        train_local(cfg)


def test_channels_last_trains_in_nhwc(make_cfg) -> None:
    runs = {}
    for cl in ("false", "true"):
        cfg = make_cfg("sat", f"runtime.device={DEVICE}", f"runtime.channels_last={cl}", "student.arch=small_cnn", "optim.epochs=2",
                       "eval.max_samples=0", name=f"cl_{cl}")
        runs[cl] = (train_local(cfg), _raw_state(cfg.run_dir / "checkpoint.pt"))
    weight = runs["true"][1]["features.3.weight"]  # the 32→64 conv: NHWC and NCHW strides differ
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert runs["false"][1]["features.3.weight"].is_contiguous()
    # Same maths in another layout: the two runs learn alike (not bit-identical: kernels differ).
    assert abs(runs["true"][0]["val_clean_acc"] - runs["false"][0]["val_clean_acc"]) < 0.1
    assert runs["true"][0]["val_clean_acc"] > 0.5


def _write_space(path: Path) -> Path:
    path.write_text(textwrap.dedent("""\
        base: digits
        set: {method.name: sat, student.arch: small_cnn, attack.steps: 2, eval.pgd_steps: 5, eval.max_samples: 128}
        objectives:
          - {metric: val_clean_acc, direction: max}
          - {metric: val_pgd_acc, direction: max}
        sampler: {name: random, seed: 0}
        num_samples: 1
        max_concurrent: 1
        resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0.5}
        budget: {epochs: 1, scale_milestones: true, time_budget_s: null}
        enqueue_defaults: false
        space:
          optim.lr: {loguniform: [0.02, 0.1]}
        """))
    return path


@pytest.mark.slow
def test_a_search_trial_trains_on_half_a_gpu(tmp_path: Path) -> None:
    import csv

    import ray

    from mtard.cli import main

    space = _write_space(tmp_path / "half_gpu.yaml")
    try:
        assert main(["search", str(space), "--storage", str(tmp_path / "runs"), "--name", "half"]) == 0
    finally:
        ray.shutdown()
    with open(tmp_path / "runs" / "half" / "trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    assert [t["status"] for t in trials] == ["complete"], trials
    state = _raw_state(Path(trials[0]["checkpoint"]))
    assert all(t.device.type == "cuda" for t in state.values()), "the trial did not train on the GPU"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="a 2-worker NCCL run needs >= 2 GPUs on this machine")
def test_two_workers_over_nccl(make_cfg, tmp_path: Path) -> None:
    import ray

    from mtard.distributed import train_distributed

    cfg = make_cfg("sat", "student.arch=small_cnn", "scaling.workers=2", "scaling.gpus_per_worker=1", "runtime.device=auto", name="nccl")
    try:
        metrics = train_distributed(cfg, storage=str(tmp_path / "ray"))
    finally:
        ray.shutdown()
    assert metrics["epoch"] == 1 and metrics["val_clean_acc"] > 0.3
    assert all(t.device.type == "cuda" for t in _raw_state(Path(metrics["checkpoint"])).values())

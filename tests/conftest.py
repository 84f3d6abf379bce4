"""Shared fixtures: an isolated teacher directory, a tiny teacher catalog, tiny run configs.

Every test gets its own `$MTARD_TEACHERS` (autouse), so no test reads or writes
~/.cache/mtard. Tests that need trained teachers use `trained_teachers`: a tiny catalog
(MLP teachers on digits, one epoch each, trained once per session) and its directory.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

# The tests use tiny models: one intra-op thread is fastest, and on a shared, loaded CPU
# torch's default (one thread per core) spin-waits and runs tiny ops ~50x slower.
torch.set_num_threads(1)

def train_digits_mlp(model: torch.nn.Module, opt: torch.optim.Optimizer, splits, epochs: int) -> None:
    """Plain cross-entropy epochs (batch 64) on the digits train split: a real model for evaluation tests."""
    x = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    y = torch.tensor([int(splits.train[i][1]) for i in range(len(splits.train))])
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


TINY_CLEAN = "tiny_clean"
TINY_ROBUST = "tiny_robust"

# Digits recipes that train in one epoch on a CPU (MLP, 2-step attack, 64 validation samples).
_FAST = "optim.epochs: 1, optim.milestones: [], attack.steps: 2, eval.pgd_steps: 2, eval.max_samples: 64, runtime.progress: false"


def tiny_catalog_text(subdir: str = "tiny") -> str:
    return textwrap.dedent(
        f"""\
        # a test catalog: same format as mtard/teachers.yaml
        {TINY_CLEAN}:
          dataset: digits
          arch: mlp
          role: clean
          checkpoint: {subdir}/clean.pt
          auto_train: true
          source: "tests: natural training, 1 epoch"
          recipe: {{config: digits, set: {{method.name: natural, {_FAST}}}}}
        {TINY_ROBUST}:
          dataset: digits
          arch: mlp
          role: robust
          checkpoint: {subdir}/robust.pt
          auto_train: true
          source: "tests: TRADES, 1 epoch"
          recipe: {{config: digits, set: {{method.name: trades, {_FAST}}}}}
        """
    )


@pytest.fixture(autouse=True)
def teacher_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty $MTARD_TEACHERS for every test."""
    path = tmp_path_factory.mktemp("teachers")
    monkeypatch.setenv("MTARD_TEACHERS", str(path))
    return path


@pytest.fixture
def tiny_catalog(tmp_path: Path) -> Path:
    """The tiny catalog YAML (teachers not trained yet: auto-trained on first use)."""
    path = tmp_path / "catalog.yaml"
    path.write_text(tiny_catalog_text())
    return path


@pytest.fixture(scope="session")
def _trained_teacher_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from mtard.teachers import load_catalog
    from mtard.train import ensure_teachers

    root = tmp_path_factory.mktemp("trained_teachers")
    catalog_path = root / "catalog.yaml"
    catalog_path.write_text(tiny_catalog_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTARD_TEACHERS", str(root))
        catalog = load_catalog(catalog_path)
        ensure_teachers(catalog, [("teachers.clean", TINY_CLEAN), ("teachers.robust", TINY_ROBUST)], "digits", progress=False)
    return catalog_path, root


@pytest.fixture
def trained_teachers(_trained_teacher_store: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny catalog with both teachers trained (once per session); returns the catalog path."""
    catalog_path, root = _trained_teacher_store
    monkeypatch.setenv("MTARD_TEACHERS", str(root))
    return catalog_path


def fast_polling(mp: pytest.MonkeyPatch) -> None:
    """Ray Train's polling as `mtard search` / `mtard train` set it when they start Ray themselves."""
    from mtard.distributed import FAST_POLLING

    for key, value in FAST_POLLING.items():
        mp.setenv(key, value)


@pytest.fixture(scope="session")
def _ray_for_this_process():
    """Shuts down, at the end of the session, the Ray that `local_ray` started in this test process."""
    import ray

    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_ray(_trained_teacher_store: tuple[Path, Path], _ray_for_this_process):
    """One local Ray (2 CPUs, the `mtard_driver` resource of a cluster head) for this test process's searches.

    Started by the first module that needs it and kept for the next ones: a start costs ~10 s on 2
    cores. (test_distributed.py shuts it down for clusters of its own; the next module starts it again.)
    A test that starts its own local Ray in a subprocess gets a cluster of its own beside it. Ray's
    workers inherit $MTARD_TEACHERS (the trained tiny teachers) from ray.init; Ray Train polls its
    workers as often as in a search started by `mtard search`.
    """
    import ray

    if not ray.is_initialized():
        _, root = _trained_teacher_store
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MTARD_TEACHERS", str(root))
            fast_polling(mp)
            ray.init(address="local", num_cpus=2, resources={"mtard_driver": 1000}, include_dashboard=False,
                     configure_logging=False, log_to_driver=False)
    yield ray


@pytest.fixture
def make_cfg(tmp_path: Path):
    """`make_cfg(method, *overrides)`: a tiny digits TrainConfig (MLP, 1 epoch, 2-step attacks) under tmp_path."""
    from mtard.config import load_config

    def make(method: str = "natural", *overrides: str, catalog: Path | None = None, name: str = "run"):
        sets = [
            f"out_dir={tmp_path / 'runs'}", f"name={name}", f"method.name={method}", "student.arch=mlp",
            "optim.epochs=1", "optim.milestones=[]", "attack.steps=2", "eval.pgd_steps=2",
            "eval.max_samples=64", "runtime.progress=false", "runtime.device=cpu",
            f"teachers.clean={TINY_CLEAN}", f"teachers.robust={TINY_ROBUST}",
        ]
        if catalog is not None:
            sets.append(f"teachers.catalog={catalog}")
        return load_config("digits", sets + list(overrides))

    return make

"""Plain-process training runs, and training teachers by their catalog recipes.

Training a teacher is always an explicit step of a driver (`mtard teachers train`, or the
first `mtard train` / `mtard search` that needs an `auto_train` teacher): the epoch loop
(`mtard.loop.fit`, which every trial runs) only ever loads teachers.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict

from mtard.config import TrainConfig, save_config
from mtard.errors import MtardError
from mtard.loop import LocalContext, fit, resolve_device
from mtard.methods import teacher_fields
from mtard.storage import atomic_write
from mtard.teachers import (
    TeacherEntry,
    checkpoint_path,
    fetch_zoo_file,
    load_catalog,
    missing_message,
    resolve,
    sha256_of,
    writable_dir,
    write_sidecar,
)


def train_local(cfg: TrainConfig, *, resume: bool = False) -> dict:
    """A plain single-process run: resolved config, metrics and checkpoint under `cfg.run_dir`."""
    prepare_teachers(cfg, teacher_fields(cfg))
    ctx = LocalContext(resolve_device(cfg.runtime.device), cfg.run_dir, resume=resume)
    save_config(cfg, cfg.run_dir / "config.yaml")
    return fit(cfg, ctx)


def prepare_teachers(cfg: TrainConfig, names: list[tuple[str, str]]) -> list[TeacherEntry]:
    """`ensure_teachers` for the (field, name) pairs of a run config."""
    t = cfg.teachers
    return ensure_teachers(load_catalog(t.catalog), names, cfg.data.name, robustbench_dir=t.robustbench_dir, progress=cfg.runtime.progress)


def recipe_config(entry: TeacherEntry) -> TrainConfig:
    """The TrainConfig that trains this teacher: its recipe's bundled config + overrides."""
    from mtard.config import load_config

    if not entry.recipe.get("config"):
        raise MtardError(f"teacher {entry.name!r} has no recipe in the catalog; add `recipe: {{config: ..., set: {{...}}}}`")
    overrides = [f"{k}={json.dumps(v)}" for k, v in (entry.recipe.get("set") or {}).items()]
    cfg = load_config(entry.recipe["config"], overrides)
    cfg.name = entry.name
    cfg.student.arch = entry.arch
    return cfg


def train_teacher(entry: TeacherEntry, *, progress: bool = True) -> dict:
    """Train a teacher by its recipe, install its checkpoint and sidecar, return the sidecar."""
    cfg = recipe_config(entry)
    if cfg.data.name != entry.dataset:
        raise MtardError(f"teacher {entry.name!r}: recipe trains on {cfg.data.name} but the catalog says {entry.dataset}")
    path = checkpoint_path(entry)
    writable_dir(path.parent)  # fail before hours of training, not after
    cfg.out_dir = str(writable_dir(path.parent / "runs"))
    cfg.runtime.progress = progress
    metrics = train_local(cfg, resume=False)
    atomic_write(path, lambda tmp: shutil.copyfile(cfg.run_dir / "checkpoint.pt", tmp), shared=True)  # a concurrent reader never sees half a file
    record = {
        "teacher": entry.name,
        "sha256": sha256_of(path),
        "method": cfg.method.name,
        "epochs": cfg.optim.epochs,
        "val_clean_acc": metrics["val_clean_acc"],
        "val_pgd_acc": metrics["val_pgd_acc"],
        "eval": asdict(cfg.eval),
    }
    write_sidecar(entry, record)
    return record


def ensure_teachers(
    catalog: dict[str, TeacherEntry], names: list[tuple[str, str]], dataset: str, *, robustbench_dir: str = "", progress: bool = True
) -> list[TeacherEntry]:
    """The driver's explicit step before any training starts: every (field, name) resolved and present here.

    A missing `auto_train` teacher is trained now (once, on this machine); a missing RobustBench
    teacher is downloaded; any other missing teacher stops the run here, naming it and the fix.
    """
    entries = [resolve(catalog, name, dataset, field_path=f, robustbench_dir=robustbench_dir) for f, name in names]
    for entry in entries:
        path = checkpoint_path(entry)
        if path.is_file():
            continue
        if entry.auto_train:
            # First use on this machine: say so, since it takes a while and happens only once.
            print(f"[teachers] {entry.name} ({entry.arch}) is not cached: training it once into {path}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            record = train_teacher(entry, progress=progress)
            print(f"[teachers] {entry.name}: {record['method']}, {record['epochs']} epochs, {time.perf_counter() - start:.0f} s; "
                  f"val clean {record['val_clean_acc']:.4f}, val PGD {record['val_pgd_acc']:.4f}", file=sys.stderr, flush=True)
        else:
            fetch_zoo_file(entry)
            if not path.is_file():
                raise MtardError(missing_message(entry, path))
    return entries

"""Teachers: a catalog of named checkpoints, safe loading, and training recipes.

The catalog is YAML (`mtard/teachers.yaml` by default, `teachers.catalog` to use
your own): name -> dataset, architecture, role, checkpoint file, sha256, where it
came from, and a recipe (a bundled config + overrides) that trains it. Relative
checkpoint paths live in the teacher directory ($MTARD_TEACHERS, default
~/.cache/mtard/teachers). Training writes a sidecar `<checkpoint>.json` with the
file's sha256 and its validation accuracies, which `mtard teachers list` shows.

Entries marked `auto_train: true` (the 8×8 digits teachers: seconds on a CPU) are
trained on first use, so the embedded default ships no binary.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mtard import checkpoint as ckpt
from mtard.config import from_dict, read_yaml
from mtard.errors import MtardError

DEFAULT_CATALOG = Path(__file__).parent / "teachers.yaml"


@dataclass
class TeacherEntry:
    dataset: str
    arch: str
    role: Literal["clean", "robust"]
    checkpoint: str
    source: str = ""
    sha256: str = ""  # when set, the file must match it
    auto_train: bool = False
    recipe: dict = field(default_factory=dict)  # {"config": bundled config name, "set": {dotted.field: value}}
    name: str = ""


def teacher_dir() -> Path:
    return Path(os.environ.get("MTARD_TEACHERS", Path.home() / ".cache" / "mtard" / "teachers"))


def load_catalog(path: str | Path = "") -> dict[str, TeacherEntry]:
    path = Path(path) if path else DEFAULT_CATALOG
    raw = read_yaml(path)
    catalog = {}
    for name, data in raw.items():
        if not isinstance(data, dict):
            raise MtardError(f"{path}: teacher {name!r} must be a mapping of fields")
        entry = from_dict(TeacherEntry, data, where=f"{path.name}:{name}")
        entry.name = str(name)
        catalog[entry.name] = entry
    return catalog


def get_entry(catalog: dict[str, TeacherEntry], name: str, *, field_path: str = "teacher") -> TeacherEntry:
    if name not in catalog:
        raise MtardError(f"{field_path}: unknown teacher {name!r}; known teachers: {', '.join(sorted(catalog))} (see `mtard teachers list`)")
    return catalog[name]


def checkpoint_path(entry: TeacherEntry) -> Path:
    path = Path(os.path.expanduser(entry.checkpoint))
    return path if path.is_absolute() else teacher_dir() / path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar(entry: TeacherEntry) -> dict:
    """What training recorded about this teacher (sha256, validation accuracies), or {}."""
    path = checkpoint_path(entry).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


class FrozenTeacher(nn.Module):
    """A teacher that cannot be trained by accident: always eval mode, no grad, no parameters to optimise."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.training = False  # the wrapper reports eval mode too (train() below never changes it)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return self  # BN statistics of a teacher never move

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def load_teacher(entry: TeacherEntry, *, num_classes: int, in_channels: int, image_size: int) -> FrozenTeacher:
    """Build the catalog architecture and strictly load the checkpoint into it (weights only)."""
    from mtard.models import build_model

    path = checkpoint_path(entry)
    if not path.is_file():
        how = f"train it with `mtard teachers train {entry.name}`"
        if entry.source:
            how = f"get it from {entry.source} and place it there, or {how}"
        raise MtardError(f"teacher {entry.name!r}: checkpoint {path} not found; {how}")
    expected = entry.sha256 or sidecar(entry).get("sha256", "")
    if expected and sha256_of(path) != expected:
        raise MtardError(f"teacher {entry.name!r}: {path} does not match its recorded sha256 {expected[:12]}…; the file changed or is corrupt — re-download or retrain it")
    model = build_model(entry.arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    ckpt.load_weights(model, ckpt.state_dict_of(ckpt.read(path)), arch=entry.arch, source=path)
    return FrozenTeacher(model)


def recipe_config(entry: TeacherEntry):
    """The TrainConfig that trains this teacher: its recipe's bundled config + overrides."""
    from mtard.config import load_config

    if not entry.recipe.get("config"):
        raise MtardError(f"teacher {entry.name!r} has no recipe in the catalog; add `recipe: {{config: ..., set: {{...}}}}`")
    overrides = [f"{k}={json.dumps(v)}" for k, v in (entry.recipe.get("set") or {}).items()]
    cfg = load_config(entry.recipe["config"], overrides)
    cfg.name = entry.name
    cfg.out_dir = str(teacher_dir() / "runs")
    cfg.student.arch = entry.arch
    return cfg


def train_teacher(entry: TeacherEntry, *, progress: bool = True) -> dict:
    """Train a teacher by its recipe, install its checkpoint and sidecar, return the sidecar."""
    from mtard.loop import train_local

    cfg = recipe_config(entry)
    if cfg.data.name != entry.dataset:
        raise MtardError(f"teacher {entry.name!r}: recipe trains on {cfg.data.name} but the catalog says {entry.dataset}")
    cfg.runtime.progress = progress
    metrics = train_local(cfg, resume=False)
    path = checkpoint_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    shutil.copyfile(cfg.run_dir / "checkpoint.pt", tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    record = {
        "teacher": entry.name,
        "sha256": sha256_of(path),
        "method": cfg.method.name,
        "epochs": cfg.optim.epochs,
        "val_clean_acc": metrics["val_clean_acc"],
        "val_pgd_acc": metrics["val_pgd_acc"],
        "eval": asdict(cfg.eval),
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=2))
    return record


def ensure_teachers(catalog: dict[str, TeacherEntry], names: list[tuple[str, str]], dataset: str, *, progress: bool = True) -> None:
    """Check each (field, name): known, on the right data set and role; auto-train the cheap ones when missing."""
    for field_path, name in names:
        entry = get_entry(catalog, name, field_path=field_path)
        if entry.dataset != dataset:
            raise MtardError(f"{field_path}: teacher {name!r} was trained on {entry.dataset}, but data.name is {dataset}; pick a {dataset} teacher (`mtard teachers list`)")
        role = field_path.rsplit(".", 1)[-1]
        if role in ("clean", "robust") and entry.role != role:
            raise MtardError(f"{field_path}: teacher {name!r} is a {entry.role} teacher; pick a {role} one (`mtard teachers list`)")
        if entry.auto_train and not checkpoint_path(entry).is_file():
            # First use on this machine: say so, since it takes a while and happens only once.
            print(f"[teachers] {name} ({entry.arch}) is not cached: training it once into {checkpoint_path(entry)}",
                  file=sys.stderr, flush=True)
            start = time.perf_counter()
            record = train_teacher(entry, progress=progress)
            print(f"[teachers] {name}: {record['method']}, {record['epochs']} epochs, {time.perf_counter() - start:.0f} s; "
                  f"val clean {record['val_clean_acc']:.4f}, val PGD {record['val_pgd_acc']:.4f}", file=sys.stderr, flush=True)

"""Teachers: a catalog of named checkpoints, RobustBench zoo names, safe loading, node-local copies.

The catalog is YAML (`mtard/teachers.yaml` by default, `teachers.catalog` to use
your own): name -> dataset, architecture, role, checkpoint file, sha256, where it
came from, and a recipe (a bundled config + overrides) that trains it
(`mtard teachers train`, see `mtard.train`). Relative checkpoint paths live in the
teacher directory ($MTARD_TEACHERS, default ~/.cache/mtard/teachers). Training
writes a sidecar `<checkpoint>.json` with the file's sha256 and its validation
accuracies, which `mtard teachers list` shows.

A name `rb:<ModelID>` (or `rb:<threat>:<ModelID>`, e.g. `rb:L2:...`) needs no catalog
entry: it is a robust teacher from the RobustBench model zoo for the run's data set
(`mtard.robustbench_zoo`).

On a cluster the search driver stages every teacher a trial can use into the shared
storage (`mtard.staging`), and each node fetches its own copy once: `node_copy`.
Nothing here trains a teacher.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mtard import checkpoint as ckpt
from mtard import robustbench_zoo
from mtard.config import from_dict, read_yaml
from mtard.errors import MtardError
from mtard.storage import atomic_write, check_folder_name, check_inside, is_uri, read_into

DEFAULT_CATALOG = Path(__file__).parent / "teachers.yaml"
STAGED_DIR = "staged"  # <teacher dir>/staged/<sha256>.pt: copies fetched from the staging store


@dataclass
class TeacherEntry:
    dataset: str
    arch: str
    role: Literal["clean", "robust"]
    checkpoint: str
    source: str = ""
    sha256: str = ""  # when set, the file must match it
    auto_train: bool = False  # cheap enough to train on first use (by the driver, never by a trial)
    recipe: dict = field(default_factory=dict)  # {"config": bundled config name, "set": {dotted.field: value}}
    name: str = ""


def teacher_dir() -> Path:
    return Path(os.environ.get("MTARD_TEACHERS", Path.home() / ".cache" / "mtard" / "teachers"))


TEACHER_DIR_FIX = "point $MTARD_TEACHERS at a writable directory (default ~/.cache/mtard/teachers)"


def writable_dir(path: Path, *, what: str = "teacher directory", fix: str = TEACHER_DIR_FIX) -> Path:
    """`path`, created; an unwritable teacher cache is one clear line, not a traceback from deep inside."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise MtardError(f"{what} {path} is not writable ({err.strerror or err}); {fix}") from err
    return path


def load_catalog(path: str | Path = "") -> dict[str, TeacherEntry]:
    path = Path(path) if path else DEFAULT_CATALOG
    raw = read_yaml(path)
    catalog = {}
    for name, data in raw.items():
        if not isinstance(data, dict):
            raise MtardError(f"{path}: teacher {name!r} must be a mapping of fields")
        entry = from_dict(TeacherEntry, data, where=f"{path.name}:{name}")
        entry.name = check_folder_name(str(name), f"{path.name}: teacher name", example="digits_mlp_clean")  # names its training run's folder
        if not Path(os.path.expanduser(entry.checkpoint)).is_absolute():
            check_inside(entry.checkpoint, f"{path.name}:{name}.checkpoint", "the teacher directory ($MTARD_TEACHERS)")
        catalog[entry.name] = entry
    return catalog


def get_entry(catalog: dict[str, TeacherEntry], name: str, *, field_path: str = "teacher") -> TeacherEntry:
    if name not in catalog:
        raise MtardError(f"{field_path}: unknown teacher {name!r}; known teachers: {', '.join(sorted(catalog))} (see `mtard teachers list`)")
    return catalog[name]


def resolve(
    catalog: dict[str, TeacherEntry], name: str, dataset: str, *, field_path: str = "teacher", robustbench_dir: str = ""
) -> TeacherEntry:
    """The entry a teacher name stands for, checked against the run: the one place for the data set and role checks.

    `field_path` is the config field the name came from (`teachers.clean` / `teachers.robust`, or
    `space.teachers.robust` in a search space); its last part is the role the run needs.
    """
    if robustbench_zoo.is_zoo_name(name):
        root = Path(os.path.expanduser(robustbench_dir)) if robustbench_dir else teacher_dir() / "robustbench"
        entry = TeacherEntry(**robustbench_zoo.zoo_fields(name, dataset, root, field_path=field_path))
    else:
        entry = get_entry(catalog, name, field_path=field_path)
    if entry.dataset != dataset:
        raise MtardError(f"{field_path}: teacher {name!r} was trained on {entry.dataset}, but data.name is {dataset}; pick a {dataset} teacher (`mtard teachers list`)")
    role = field_path.rsplit(".", 1)[-1]
    if role in ("clean", "robust") and entry.role != role:
        raise MtardError(f"{field_path}: teacher {name!r} is a {entry.role} teacher; pick a {role} one (`mtard teachers list`)")
    return entry


def checkpoint_path(entry: TeacherEntry) -> Path:
    path = Path(os.path.expanduser(entry.checkpoint))
    return path if path.is_absolute() else teacher_dir() / path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(entry: TeacherEntry) -> Path:
    return checkpoint_path(entry).with_suffix(".json")


def sidecar(entry: TeacherEntry) -> dict:
    """What training recorded about this teacher (sha256, validation accuracies), or {}.

    An unreadable or truncated sidecar counts as missing (with a warning): it only adds a
    check and a few numbers, and must never stop a run whose checkpoint itself is fine.
    """
    path = sidecar_path(entry)
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise TypeError(f"expected a JSON object, got {type(record).__name__}")
        return record
    except (OSError, ValueError, TypeError) as err:
        print(f"[teachers] warning: ignoring unreadable {path} ({err}); retrain the teacher to rewrite it", file=sys.stderr)
        return {}


def write_sidecar(entry: TeacherEntry, record: dict) -> None:
    atomic_write(sidecar_path(entry), json.dumps(record, indent=2), shared=True)  # a reader sees the old record or the new one


def expected_sha256(entry: TeacherEntry) -> str:
    return entry.sha256 or sidecar(entry).get("sha256", "")


def missing_message(entry: TeacherEntry, path: Path) -> str:
    """The error for a teacher whose file is not here: where it should be and how to get it there."""
    if robustbench_zoo.is_zoo_name(entry.name):
        return robustbench_zoo.missing_message(entry, path)
    how = f"train it with `mtard teachers train {entry.name}` (on a cluster: launch/train_teacher.sh {entry.name}, which publishes it to the storage)"
    if entry.source:
        how = f"get it from {entry.source} and place it there, or {how}"
    return f"teacher {entry.name!r}: checkpoint {path} not found; {how}"


def verified_file(entry: TeacherEntry) -> tuple[Path, str]:
    """The teacher's file on this machine and its sha256 (checked against the catalog or sidecar)."""
    path = checkpoint_path(entry)
    if not path.is_file():
        raise MtardError(missing_message(entry, path))
    digest = sha256_of(path)
    expected = expected_sha256(entry)
    if expected and digest != expected:
        raise MtardError(f"teacher {entry.name!r}: {path} does not match its recorded sha256 {expected[:12]}…; the file changed or is corrupt — re-download or retrain it")
    return path, digest


# ---------------------------------------------------------------- node-local copies of staged teachers


@contextmanager
def node_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` across the processes of this machine: one fetch per node, the others wait."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def copy_verified(
    source: Path | None, read_remote, sha256: str, dest: Path, *, what: str, where: str = "teacher directory", fix: str = TEACHER_DIR_FIX
) -> Path:
    """Put the file with this sha256 at `dest` (atomically, checked), unless a good copy is already there.

    `source` is a local file to copy, else `read_remote(tmp_path)` writes the bytes.
    A copy whose sha256 differs is refused and removed, so nothing half-written or corrupt is
    ever used and the next attempt starts clean.
    """
    writable_dir(dest.parent, what=where, fix=fix)
    with node_lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file() and sha256_of(dest) == sha256:
            return dest

        def write_checked(tmp: Path) -> None:
            if source is not None:
                # A copy, never a hard link: a link would let anything that writes into one cache
                # in place (a user, a tool) silently change the storage's and the driver's file too.
                shutil.copyfile(source, tmp)
            else:
                read_remote(tmp)
            got = sha256_of(tmp)
            if got != sha256:
                raise MtardError(
                    f"{what}: sha256 {got[:12]}… does not match the staged teacher's {sha256[:12]}… (a corrupted copy); "
                    f"refused. Delete it and start the search again so the driver stages the teacher anew"
                )

        atomic_write(dest, write_checked, shared=True)
    return dest


def staged_path(sha256: str) -> Path:
    """This node's copy of a staged teacher (shared by every process on the node)."""
    return teacher_dir() / STAGED_DIR / f"{sha256}.pt"


def node_copy(store: str, sha256: str) -> Path:
    """Fetch a staged teacher from `<store>/<sha256>.pt` into `staged_path(sha256)` once, verified.

    `store` is a local directory (shared file system) or a URI (s3://, gs://, ...) that every
    node can read. Call it on one process per node (the others wait on the lock anyway).
    """
    return fetch_staged(store, sha256, staged_path(sha256))


def fetch_staged(store: str, sha256: str, dest: Path) -> Path:
    """`<store>/<sha256>.pt` copied to `dest`, sha256-checked (a good copy already there is kept)."""
    remote = f"{store.rstrip('/')}/{sha256}.pt"
    if not is_uri(store):
        source = Path(remote)
        if not source.is_file() and not dest.is_file():
            raise MtardError(f"staged teacher {remote} is missing: start the search again so the driver stages its teachers")
        return copy_verified(source, None, sha256, dest, what=remote)

    def download(tmp: Path) -> None:
        try:
            read_into(remote, tmp)
        except (FileNotFoundError, OSError) as err:
            raise MtardError(f"staged teacher {remote} cannot be read from this node ({err}); check that every node can read the storage") from err

    return copy_verified(None, download, sha256, dest, what=remote)


# ---------------------------------------------------------------- loading


class FrozenTeacher(nn.Module):
    """A teacher that cannot be trained by accident: always eval mode, no grad, no parameters to optimise."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.training = False  # the wrapper reports eval mode too (train() below never changes it)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        return self  # BN statistics of a teacher never move

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build_teacher(entry: TeacherEntry, path: Path, *, num_classes: int, in_channels: int, image_size: int) -> FrozenTeacher:
    """Build the entry's architecture and strictly load `path` into it (weights only)."""
    from mtard.models import build_model

    if robustbench_zoo.is_zoo_name(entry.name):
        model = robustbench_zoo.build(entry)
    else:
        model = build_model(entry.arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    state = ckpt.state_dict_of(ckpt.read(path))
    for prefix in ("module.", "model."):  # DataParallel / wrapper prefixes (RobustBench strips the same two)
        state = ckpt.strip_prefix(state, prefix)
    ckpt.load_weights(model, state, arch=entry.arch, source=path)
    return FrozenTeacher(model)


def load_teacher(name: str, dataset: str, catalog: str | None = None, *, robustbench_dir: str = "") -> nn.Module:
    """The frozen, eval-mode teacher `name` (a catalog name or `rb:<ModelID>`) for `dataset`.

    The same path training uses. It never trains or downloads a catalog teacher: train one with
    `mtard teachers train NAME`. A RobustBench teacher is downloaded once when missing.
    """
    from mtard.data import dataset_info

    info = dataset_info(dataset)
    entry = resolve(load_catalog(catalog or ""), name, dataset, robustbench_dir=robustbench_dir)
    fetch_zoo_file(entry)
    path, _ = verified_file(entry)
    return build_teacher(entry, path, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)


def teacher_state(entry: TeacherEntry) -> tuple[str, str]:
    """(state, why) for `mtard teachers list`: "ready" only when the file loads into the entry's
    architecture (and matches its recorded sha256); else "unloadable" with the reason, "auto-train" or "missing"."""
    from mtard.data import dataset_info

    path = checkpoint_path(entry)
    if not path.is_file():
        return ("auto-train" if entry.auto_train else "missing"), ""
    try:
        info = dataset_info(entry.dataset)
        verified_file(entry)
        build_teacher(entry, path, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)
    except MtardError as err:
        return "unloadable", str(err)
    return "ready", ""


def fetch_zoo_file(entry: TeacherEntry) -> None:
    """A RobustBench teacher missing here is downloaded (once per node, under a lock); others are left alone."""
    path = checkpoint_path(entry)
    if not robustbench_zoo.is_zoo_name(entry.name) or path.is_file():
        return
    writable_dir(path.parent)
    with node_lock(path.with_name(path.name + ".lock")):
        if not path.is_file():  # else another process on this node fetched it while we waited
            robustbench_zoo.download(entry)

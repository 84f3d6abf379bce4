"""Teachers that reach every node: the driver stages them in the shared storage before any trial starts.

`mtard search` and `mtard train --workers` call one function here before the first worker starts:
  1. every teacher a trial can use is resolved and must exist on the driver (`train.prepare_teachers`:
     a missing `auto_train` teacher is trained here once, a RobustBench one downloaded, any other
     missing one stops the run now, naming it and the fix);
  2. each file is put into `<storage>/teachers/<sha256>.pt` (the storage the run already uses: S3, GCS,
     or a shared path; content-addressed, so each version is uploaded once);
  3. the run config records where (`teachers.staged_store`) and each name's sha256 (`teachers.staged`).
A worker then fetches each teacher once per node into its own cache, checking the sha256
(`mtard.teachers.node_copy`); a node never trains a teacher or depends on files placed by hand.

A teacher trained elsewhere (`mtard teachers train NAME --publish STORAGE`, e.g. as a GPU job on
the cluster: launch/train_teacher.sh) is published to the same place with a small record,
`<storage>/teachers/published/<name>.json`; a driver that lacks the file pulls it from there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mtard.config import TrainConfig
from mtard.errors import MtardError
from mtard.methods import teacher_fields
from mtard.storage import exists, is_uri, join, put_file, read_text, write_text
from mtard.teachers import (
    TeacherEntry,
    checkpoint_path,
    copy_verified,
    fetch_staged,
    load_catalog,
    resolve,
    sidecar,
    verified_file,
    write_sidecar,
)
from mtard.train import prepare_teachers

STORE_DIR = "teachers"
PUBLISHED_DIR = "published"


def store_of(storage: str) -> str:
    return join(storage, STORE_DIR)


def _publish(path: Path, sha256: str, store: str) -> None:
    target = join(store, f"{sha256}.pt")
    if not is_uri(store):
        copy_verified(path, None, sha256, Path(target), what=f"{store}/{sha256}.pt",
                      where="teacher storage", fix="give --storage a location this machine can write")
        return
    try:
        if exists(target):
            return  # content-addressed: the same name is the same bytes (each node checks on fetch)
        put_file(path, target)
    except OSError as err:
        raise MtardError(f"cannot stage teacher {path} in {store} ({err}); the driver needs write access to the storage") from err


def _record_location(store: str, name: str) -> str:
    return join(store, PUBLISHED_DIR, f"{name}.json")


def publish_teacher(entry: TeacherEntry, storage: str) -> str:
    """Put a teacher trained here into `<storage>/teachers`, findable by name from any machine; returns where."""
    path, sha256 = verified_file(entry)
    store = store_of(storage)
    _publish(path, sha256, store)
    location = _record_location(store, entry.name)
    write_text(location, json.dumps({**sidecar(entry), "teacher": entry.name, "sha256": sha256}, indent=2))
    return location


def pull_published(entry: TeacherEntry, store: str) -> bool:
    """A teacher missing here but published to the store: fetched into its catalog place (checked). True if pulled."""
    if checkpoint_path(entry).is_file():
        return False
    text = read_text(_record_location(store, entry.name))
    if text is None:
        return False
    record = json.loads(text)
    fetch_staged(store, record["sha256"], checkpoint_path(entry))
    write_sidecar(entry, record)
    print(f"[teachers] {entry.name}: pulled the published copy from {store}", file=sys.stderr, flush=True)
    return True


def stage(cfg: TrainConfig, names: list[tuple[str, str]], storage: str) -> tuple[str, dict[str, str]]:
    """Prepare every (field, teacher name) of `cfg` on the driver, publish it: (store, {name: sha256})."""
    store = store_of(storage)
    catalog = load_catalog(cfg.teachers.catalog)
    for field_path, name in names:
        pull_published(resolve(catalog, name, cfg.data.name, field_path=field_path, robustbench_dir=cfg.teachers.robustbench_dir), store)
    staged: dict[str, str] = {}
    for entry in prepare_teachers(cfg, names):
        if entry.name not in staged:
            path, sha256 = verified_file(entry)
            _publish(path, sha256, store)
            staged[entry.name] = sha256
    if staged:
        print(f"[teachers] {len(staged)} teacher(s) staged in {store}; each node fetches its own copy once", file=sys.stderr, flush=True)
    return store, staged


def _record(cfg: TrainConfig, store: str, staged: dict[str, str]) -> None:
    if staged:
        cfg.teachers.staged_store, cfg.teachers.staged = store, staged


def stage_run_teachers(cfg: TrainConfig, storage: str) -> None:
    """`mtard train --workers`: the run's teachers, recorded in `cfg`."""
    _record(cfg, *stage(cfg, teacher_fields(cfg), storage))


def stage_search_teachers(space, storage: str) -> None:
    """`mtard search`: every teacher any trial of `space` can choose, recorded in the config every trial starts from."""
    _record(space.base_config, *stage(space.fixed_config(), space.teacher_names(), storage))

"""Teacher catalog, safe loading, auto-training and the frozen wrapper."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import TINY_CLEAN, TINY_ROBUST
from mtard import checkpoint as ckpt
from mtard import teachers as teachers_mod
from mtard.errors import MtardError
from mtard.models import build_model
from mtard.teachers import (
    FrozenTeacher,
    TeacherEntry,
    build_teacher,
    checkpoint_path,
    get_entry,
    load_catalog,
    sha256_of,
    sidecar,
    verified_file,
)
from mtard.train import ensure_teachers, recipe_config, train_teacher

DIGITS = {"num_classes": 10, "in_channels": 1, "image_size": 8}


def write_catalog(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def one_entry_catalog(tmp_path: Path, checkpoint: Path, *, arch: str = "mlp", extra: str = "") -> dict:
    path = write_catalog(
        tmp_path / "one.yaml",
        f"""\
        foreign:
          dataset: digits
          arch: {arch}
          role: robust
          checkpoint: {checkpoint}
          source: "https://example.org/teacher.pt"
        {textwrap.indent(textwrap.dedent(extra), '  ')}""",
    )
    return load_catalog(path)


def load_teacher(entry: TeacherEntry, **dims) -> FrozenTeacher:
    """What a run does with a catalog entry: its checked file, built and loaded."""
    return build_teacher(entry, verified_file(entry)[0], **dims)


def mlp(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("mlp", **DIGITS)


# ---------------------------------------------------------------- the catalog


def test_default_catalog() -> None:
    catalog = load_catalog()
    for name in ("digits_cnn_clean", "digits_cnn_trades", "cifar10_wrn34_10_trades", "cifar10_resnet56_clean"):
        assert catalog[name].name == name
    assert catalog["digits_cnn_trades"].role == "robust" and catalog["digits_cnn_trades"].auto_train
    assert catalog["cifar10_wrn34_10_trades"].arch == "wrn34_10" and not catalog["cifar10_wrn34_10_trades"].auto_train
    # every recipe names a bundled config whose overrides are valid fields
    for entry in catalog.values():
        cfg = recipe_config(entry)
        assert cfg.student.arch == entry.arch and cfg.data.name == entry.dataset, entry.name


def test_relative_checkpoints_live_in_the_teacher_dir(teacher_dir: Path) -> None:
    assert teachers_mod.teacher_dir() == teacher_dir  # the autouse fixture isolates every test
    entry = load_catalog()["digits_cnn_clean"]
    assert checkpoint_path(entry) == teacher_dir / "digits" / "cnn_clean.pt"


def test_unknown_catalog_field_is_rejected(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "cat.yaml",
        """\
        t1:
          dataset: digits
          arch: mlp
          role: clean
          checkpoint: t1.pt
          sha: abc
        """,
    )
    with pytest.raises(MtardError) as err:
        load_catalog(path)
    msg = str(err.value)
    assert "unknown field" in msg and "sha" in msg and "t1" in msg
    assert "valid fields:" in msg and "sha256" in msg and "checkpoint" in msg


def test_bad_catalog_values(tmp_path: Path) -> None:
    bad_role = write_catalog(tmp_path / "a.yaml", "t: {dataset: digits, arch: mlp, role: teacher, checkpoint: t.pt}\n")
    with pytest.raises(MtardError, match=r"t\.role: 'teacher' is not one of \['clean', 'robust'\]"):
        load_catalog(bad_role)
    not_mapping = write_catalog(tmp_path / "b.yaml", "t: just a string\n")
    with pytest.raises(MtardError, match="must be a mapping"):
        load_catalog(not_mapping)
    missing_field = write_catalog(tmp_path / "c.yaml", "t: {dataset: digits, arch: mlp, role: clean}\n")
    with pytest.raises((MtardError, TypeError)):  # no checkpoint given
        load_catalog(missing_field)


def test_unknown_teacher_lists_known_ones(tiny_catalog: Path) -> None:
    catalog = load_catalog(tiny_catalog)
    with pytest.raises(MtardError) as err:
        get_entry(catalog, "tiny_cleen", field_path="teachers.clean")
    msg = str(err.value)
    assert msg.startswith("teachers.clean: unknown teacher 'tiny_cleen'")
    assert f"{TINY_CLEAN}, {TINY_ROBUST}" in msg and "mtard teachers list" in msg
    with pytest.raises(MtardError, match="unknown teacher"):
        ensure_teachers(catalog, [("teachers.robust", "nope")], "digits")


def test_wrong_dataset_and_wrong_role(tiny_catalog: Path, teacher_dir: Path) -> None:
    catalog = load_catalog(tiny_catalog)
    with pytest.raises(MtardError) as err:
        ensure_teachers(catalog, [("teachers.robust", TINY_ROBUST)], "cifar10")
    assert str(err.value).startswith("teachers.robust:") and "digits" in str(err.value) and "cifar10" in str(err.value)
    with pytest.raises(MtardError) as err:
        ensure_teachers(catalog, [("teachers.robust", TINY_CLEAN)], "digits")
    assert str(err.value).startswith("teachers.robust:") and "is a clean teacher" in str(err.value)
    with pytest.raises(MtardError, match="is a robust teacher"):
        ensure_teachers(catalog, [("teachers.clean", TINY_ROBUST)], "digits")
    assert not any(teacher_dir.rglob("*.pt")), "a rejected name must not trigger training"


# ---------------------------------------------------------------- auto-training


def test_auto_train_on_first_use_writes_checkpoint_and_sidecar(tiny_catalog: Path, teacher_dir: Path, capsys) -> None:
    catalog = load_catalog(tiny_catalog)
    entry = catalog[TINY_CLEAN]
    path = checkpoint_path(entry)
    assert path == teacher_dir / "tiny" / "clean.pt" and not path.exists()
    ensure_teachers(catalog, [("teachers.clean", TINY_CLEAN)], "digits", progress=False)
    assert path.is_file()
    record = json.loads(path.with_suffix(".json").read_text())
    assert record == sidecar(entry)
    assert record["sha256"] == sha256_of(path) and len(record["sha256"]) == 64
    assert record["teacher"] == TINY_CLEAN and record["method"] == "natural" and record["epochs"] == 1
    assert 0.3 < record["val_clean_acc"] <= 1.0  # one epoch of an MLP on digits: well above chance
    assert 0.0 <= record["val_pgd_acc"] <= record["val_clean_acc"]
    assert ckpt.spec_of(path)["arch"] == "mlp"
    said = capsys.readouterr().err
    assert f"[teachers] {TINY_CLEAN} (mlp) is not cached: training it once into {path}" in said
    assert f"[teachers] {TINY_CLEAN}: natural, 1 epochs" in said and f"val clean {record['val_clean_acc']:.4f}" in said
    teacher = load_teacher(entry, **DIGITS)
    assert isinstance(teacher, FrozenTeacher)
    # second use: nothing is retrained
    stamp = path.stat().st_mtime_ns
    ensure_teachers(catalog, [("teachers.clean", TINY_CLEAN)], "digits", progress=False)
    assert path.stat().st_mtime_ns == stamp
    assert "[teachers]" not in capsys.readouterr().err
    assert not checkpoint_path(catalog[TINY_ROBUST]).exists()  # only what was asked for


def test_sha256_mismatch_is_detected(trained_teachers: Path, tmp_path: Path) -> None:
    entry = load_catalog(trained_teachers)[TINY_ROBUST]
    original = checkpoint_path(entry)
    load_teacher(entry, **DIGITS)  # the sidecar's sha256 matches
    # A copy whose recorded hash (sidecar) no longer matches the bytes.
    copy = tmp_path / "robust.pt"
    copy.write_bytes(original.read_bytes())
    side = json.loads(original.with_suffix(".json").read_text())
    side["sha256"] = "0" * 64
    copy.with_suffix(".json").write_text(json.dumps(side))
    entry.checkpoint = str(copy)
    with pytest.raises(MtardError) as err:
        load_teacher(entry, **DIGITS)
    assert "sha256" in str(err.value) and str(copy) in str(err.value)
    # The catalog's own sha256 wins over the sidecar: the right one loads...
    entry.sha256 = sha256_of(original)
    load_teacher(entry, **DIGITS)
    # ...and a changed file is caught.
    copy.write_bytes(copy.read_bytes() + b"\0")
    with pytest.raises(MtardError, match="sha256"):
        load_teacher(entry, **DIGITS)


def test_recipe_dataset_must_match_the_catalog(tmp_path: Path) -> None:
    catalog = load_catalog(write_catalog(
        tmp_path / "cat.yaml",
        "x: {dataset: cifar10, arch: mlp, role: clean, checkpoint: x.pt, recipe: {config: digits, set: {method.name: natural}}}\n"
        "y: {dataset: digits, arch: mlp, role: clean, checkpoint: y.pt}\n",
    ))
    with pytest.raises(MtardError, match="recipe trains on digits but the catalog says cifar10"):
        train_teacher(catalog["x"], progress=False)
    with pytest.raises(MtardError, match="has no recipe"):
        train_teacher(catalog["y"], progress=False)


# ---------------------------------------------------------------- loading files


def test_foreign_bare_state_dict_with_module_prefix(tmp_path: Path) -> None:
    model = mlp(3).eval()
    path = tmp_path / "foreign.pt"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)  # DataParallel-style bare dict
    teacher = load_teacher(one_entry_catalog(tmp_path, path)["foreign"], **DIGITS)
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(teacher(x), model(x))


def test_foreign_wrapped_state_dict(tmp_path: Path) -> None:
    model = mlp(4).eval()
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 76, "best_acc": 0.5}, path)
    teacher = load_teacher(one_entry_catalog(tmp_path, path)["foreign"], **DIGITS)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(teacher(x), model(x))


def test_teacher_of_the_wrong_architecture(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save(mlp().state_dict(), path)
    with pytest.raises(MtardError) as err:
        load_teacher(one_entry_catalog(tmp_path, path, arch="small_cnn")["foreign"], **DIGITS)
    assert "'small_cnn'" in str(err.value) and "missing keys" in str(err.value)
    with pytest.raises(MtardError, match=r"shape .*number of classes"):
        load_teacher(one_entry_catalog(tmp_path, path)["foreign"], num_classes=5, in_channels=1, image_size=8)


def test_missing_teacher_checkpoint_says_where_to_get_it(tmp_path: Path) -> None:
    entry = one_entry_catalog(tmp_path, tmp_path / "absent.pt")["foreign"]
    with pytest.raises(MtardError) as err:
        load_teacher(entry, **DIGITS)
    msg = str(err.value)
    assert "absent.pt not found" in msg and "https://example.org/teacher.pt" in msg and "mtard teachers train foreign" in msg


def test_code_executing_teacher_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled_module.pt"
    torch.save(mlp(), path)  # a whole pickled nn.Module: loading it would run code
    with pytest.raises(MtardError, match="weights-only"):
        load_teacher(one_entry_catalog(tmp_path, path)["foreign"], **DIGITS)


# ---------------------------------------------------------------- the frozen wrapper


def test_frozen_teacher_stays_frozen() -> None:
    torch.manual_seed(0)
    net = build_model("small_cnn", **DIGITS)  # has BatchNorm: train mode would move its statistics
    teacher = FrozenTeacher(net)
    buffers = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert not teacher.training and not net.training
    assert not any(p.requires_grad for p in teacher.parameters())
    returned = teacher.train()
    assert returned is teacher and not teacher.training and not net.training
    wrapper = torch.nn.ModuleDict({"t": teacher})
    wrapper.train()  # a parent module switching to train mode does not reach the teacher
    assert not net.training and not teacher.training
    x = torch.rand(8, 1, 8, 8, requires_grad=True)
    out = teacher(x)
    assert not out.requires_grad  # no graph through the teacher
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, buffers[k]), f"{k} changed in a teacher forward"
    teacher.eval()
    assert not teacher.training


# ---------------------------------------------------------------- sidecars and the cache directory


def test_unreadable_sidecar_counts_as_missing_with_a_warning(trained_teachers: Path, capsys) -> None:
    entry = load_catalog(trained_teachers)[TINY_CLEAN]
    side = checkpoint_path(entry).with_suffix(".json")
    good = side.read_text()
    assert sidecar(entry)["sha256"] == sha256_of(checkpoint_path(entry))
    try:
        side.write_text(good[: len(good) // 2])  # truncated, e.g. by a full disk
        assert sidecar(entry) == {}
        assert f"ignoring unreadable {side}" in capsys.readouterr().err
        load_teacher(entry, **DIGITS)  # the checkpoint itself is fine: the run goes on
        side.write_text("[1, 2]")  # valid JSON, wrong shape
        assert sidecar(entry) == {} and "expected a JSON object" in capsys.readouterr().err
    finally:
        side.write_text(good)


def test_training_writes_the_sidecar_atomically(tiny_catalog: Path, teacher_dir: Path) -> None:
    entry = load_catalog(tiny_catalog)[TINY_CLEAN]
    record = train_teacher(entry, progress=False)
    assert sidecar(entry) == json.loads(json.dumps(record))
    leftovers = [p.name for p in (teacher_dir / "tiny").iterdir() if ".tmp" in p.name]
    assert leftovers == [], leftovers  # written to a temporary name, then renamed into place


def test_unwritable_teacher_cache_is_one_clear_line(tiny_catalog: Path, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("MTARD_TEACHERS", str(blocker / "teachers"))  # cannot be created, even by root
    with pytest.raises(MtardError) as err:
        ensure_teachers(load_catalog(tiny_catalog), [("teachers.clean", TINY_CLEAN)], "digits", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(blocker / "teachers" / "tiny") in msg and "$MTARD_TEACHERS" in msg


# ---------------------------------------------------------------- teachers on every node


def _node(monkeypatch, path: Path) -> Path:
    """Pretend to be another machine: its own, empty teacher cache."""
    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MTARD_TEACHERS", str(path))
    return path


@pytest.mark.parametrize("uri", [False, True], ids=["shared-path", "uri"])
def test_driver_stages_teachers_and_another_node_fetches_them(make_cfg, trained_teachers: Path, tmp_path: Path, monkeypatch, uri: bool) -> None:
    from mtard.data import load_splits
    from mtard.loop import Context, build_teachers
    from mtard.staging import stage_run_teachers

    cfg = make_cfg("mtard", catalog=trained_teachers)
    storage = f"file://{tmp_path / 'storage'}" if uri else str(tmp_path / "storage")  # file:// takes the pyarrow (S3/GCS) path
    stage_run_teachers(cfg, storage)
    catalog = load_catalog(trained_teachers)
    originals = {name: checkpoint_path(catalog[name]) for name in (TINY_CLEAN, TINY_ROBUST)}
    assert cfg.teachers.staged == {name: sha256_of(p) for name, p in originals.items()}
    assert cfg.teachers.staged_store.rstrip("/").endswith("storage/teachers")
    for sha in cfg.teachers.staged.values():
        assert sha256_of(tmp_path / "storage" / "teachers" / f"{sha}.pt") == sha

    node = _node(monkeypatch, tmp_path / "worker_node")
    splits = load_splits(cfg.data)
    teachers = build_teachers(cfg, splits, Context(torch.device("cpu")))
    x = torch.rand(4, 1, 8, 8)
    for role, name in (("clean", TINY_CLEAN), ("robust", TINY_ROBUST)):
        fetched = node / "staged" / f"{cfg.teachers.staged[name]}.pt"
        assert fetched.is_file() and sha256_of(fetched) == cfg.teachers.staged[name]
        expected = build_teacher(catalog[name], originals[name], **DIGITS)
        assert torch.equal(teachers[role](x), expected(x))
    assert not (node / "tiny").exists()  # nothing trained or read from a catalog path on the node


def test_corrupted_copies_are_refused_or_replaced(make_cfg, trained_teachers: Path, tmp_path: Path, monkeypatch) -> None:
    from mtard.staging import stage_run_teachers
    from mtard.teachers import node_copy, staged_path

    cfg = make_cfg("rslad", catalog=trained_teachers)
    stage_run_teachers(cfg, str(tmp_path / "storage"))
    (sha,) = cfg.teachers.staged.values()
    good = tmp_path / "storage" / "teachers" / f"{sha}.pt"

    _node(monkeypatch, tmp_path / "node_a")
    own = staged_path(sha)
    own.parent.mkdir(parents=True)
    own.write_bytes(b"half a download")  # this node's copy is damaged: fetched again
    assert node_copy(cfg.teachers.staged_store, sha) == own and sha256_of(own) == sha
    own.write_bytes(b"overwritten in place")  # a node's copy is its own file: the storage's copy is untouched
    assert sha256_of(good) == sha

    _node(monkeypatch, tmp_path / "node_b")
    bad_store = tmp_path / "bad_store"
    bad_store.mkdir()
    (bad_store / f"{sha}.pt").write_bytes(good.read_bytes()[:-1] + b"x")  # one byte changed in the storage
    with pytest.raises(MtardError, match=r"does not match the staged teacher's .*refused"):
        node_copy(str(bad_store), sha)
    assert list((tmp_path / "node_b" / "staged").iterdir()) == [(tmp_path / "node_b" / "staged" / f"{sha}.pt.lock")]
    with pytest.raises(MtardError, match="staged teacher .* is missing"):
        node_copy(str(tmp_path / "nowhere"), sha)


def test_a_missing_teacher_stops_the_driver_before_any_training(tmp_path: Path, make_cfg) -> None:
    from mtard.staging import stage_run_teachers

    catalog = write_catalog(tmp_path / "cat.yaml", f"""\
        far_away: {{dataset: digits, arch: mlp, role: robust, checkpoint: {tmp_path / 'absent.pt'}, source: "https://example.org/t.pt"}}
        """)
    cfg = make_cfg("rslad", "teachers.robust=far_away", catalog=catalog)
    with pytest.raises(MtardError) as err:
        stage_run_teachers(cfg, str(tmp_path / "storage"))
    assert "'far_away'" in str(err.value) and "absent.pt not found" in str(err.value) and "mtard teachers train far_away" in str(err.value)
    assert not (tmp_path / "storage").exists()


def test_a_run_never_trains_a_teacher(make_cfg, tiny_catalog: Path, teacher_dir: Path) -> None:
    from mtard.loop import LocalContext, fit

    cfg = make_cfg("rslad", catalog=tiny_catalog)  # an auto_train teacher, not trained yet
    with pytest.raises(MtardError, match=rf"teacher '{TINY_ROBUST}': checkpoint .* not found; .*mtard teachers train {TINY_ROBUST}"):
        fit(cfg, LocalContext(torch.device("cpu"), cfg.run_dir, resume=False))
    assert not any(teacher_dir.rglob("*.pt"))


def test_a_teacher_trained_elsewhere_is_published_and_pulled_by_the_driver(make_cfg, tiny_catalog: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from mtard.cli import main
    from mtard.staging import stage_run_teachers

    storage = f"file://{tmp_path / 'bucket'}"
    _node(monkeypatch, tmp_path / "gpu_node")  # `mtard teachers train --publish` ran as a job there
    assert main(["teachers", "train", TINY_ROBUST, "--catalog", str(tiny_catalog), "--publish", storage]) == 0
    trained = tmp_path / "gpu_node" / "tiny" / "robust.pt"
    assert "published" in capsys.readouterr().out

    driver = _node(monkeypatch, tmp_path / "head")  # the search driver never saw the file
    cfg = make_cfg("rslad", catalog=tiny_catalog)
    stage_run_teachers(cfg, storage)
    said = capsys.readouterr().err
    assert f"{TINY_ROBUST}: pulled the published copy" in said and "training it once" not in said
    pulled = driver / "tiny" / "robust.pt"
    assert sha256_of(pulled) == sha256_of(trained) == cfg.teachers.staged[TINY_ROBUST]
    assert sidecar(load_catalog(tiny_catalog)[TINY_ROBUST])["sha256"] == sha256_of(trained)


def test_a_search_with_a_missing_teacher_fails_before_any_trial(tmp_path: Path, trained_teachers: Path) -> None:
    import ray
    import yaml

    from mtard.search.run import run_search

    catalog = tmp_path / "cat.yaml"
    catalog.write_text(trained_teachers.read_text() + f"far_away: {{dataset: digits, arch: mlp, role: robust, checkpoint: {tmp_path / 'absent.pt'}}}\n")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "base": "digits_mtard",
        "set": {"teachers.catalog": str(catalog), "teachers.clean": TINY_CLEAN, "student.arch": "mlp"},
        "num_samples": 2, "resources": {"workers": 1, "cpus_per_worker": 1}, "budget": {"epochs": 1}, "enqueue_defaults": False,
        "space": {"teachers.robust": {"choice": [TINY_ROBUST, "far_away"]}},
    }))
    ray_was_up = ray.is_initialized()  # another module's local Ray may be up in this test process
    with pytest.raises(MtardError, match=r"teacher 'far_away': checkpoint .*absent\.pt not found; .*mtard teachers train far_away"):
        run_search(space, storage=str(tmp_path / "runs"), name="s")
    assert ray.is_initialized() == ray_was_up  # stopped before starting Ray, hence before any trial
    assert not list((tmp_path / "runs").rglob("trial_*"))


def test_unwritable_storage_names_the_storage(make_cfg, trained_teachers: Path, tmp_path: Path) -> None:
    from mtard.staging import stage_run_teachers

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(MtardError, match=rf"^teacher storage {blocker}/teachers is not writable .*; give --storage a location"):
        stage_run_teachers(make_cfg("rslad", catalog=trained_teachers), str(blocker))

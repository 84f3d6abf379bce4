"""Bad input, faults and hostile files, tried as a user would: a clear one-line error, nothing lost, nothing run.

Each test is a probe that once ended in lost work, a traceback, or code run from data.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import FAST, assert_user_error, run_cli
from test_data import make_cifar10

from mtard import checkpoint as ckpt
from mtard.config import DataConfig
from mtard.data import load_splits
from mtard.errors import MtardError
from mtard.models import build_model

ROOT = Path(__file__).resolve().parents[1]
HAS_DEV_FULL = Path("/dev/full").exists()  # writes to it fail with ENOSPC: a real full disk


def train(capsys, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "train", "digits", "--out-dir", str(tmp_path), "--name", "r", *FAST, *extra)


def metrics_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- validated before any work


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "eval.pgd_step_size=-1"], ("eval.pgd_step_size", "> 0")),
        (["--set", "eval.batch_size=0"], ("eval.batch_size", ">= 1")),
        (["--set", "runtime.threads=-3"], ("runtime.threads", ">= 0")),
        (["--set", "scaling.max_failures=-5"], ("scaling.max_failures", "-1")),
        (["--set", "name="], ("name", "''")),
        (["--set", "name=a/b"], ("name", "'a/b'")),
        (["--name", ".."], ("name", "'..'")),
        (["--workers", "0"], ("scaling.workers", ">= 1")),
        (["--gpus-per-worker", "-1"], ("scaling.gpus_per_worker", ">= 0")),
    ],
)
def test_bad_value_is_refused_before_any_work(capsys, tmp_path: Path, args: list[str], words: tuple[str, ...]) -> None:
    code, _, err = run_cli(capsys, "train", "digits", "--out-dir", str(tmp_path), *FAST, *args)
    assert_user_error(code, err, *words)
    assert not any(tmp_path.iterdir()), "a rejected config must not create or touch a run"


def test_config_that_is_not_utf8(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "train", str(bad))
    assert_user_error(code, err, "latin1.yaml", "UTF-8")


def test_search_space_that_is_not_utf8(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "space.yaml"
    bad.write_bytes(b"base: digits\n# \xff\xfe\n")
    code, _, err = run_cli(capsys, "search", str(bad), "--storage", str(tmp_path / "runs"))
    assert_user_error(code, err, "space.yaml", "UTF-8")


def test_unwritable_run_folder(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for extra in ([], ["--resume"]):
        code, _, err = run_cli(capsys, "train", "digits", "--out-dir", str(blocker), *FAST, *extra)
        assert_user_error(code, err, "run folder", str(blocker), "--out-dir")


def test_data_root_that_is_a_file(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "data.tar"
    blocker.write_text("not a folder")
    code, _, err = train(capsys, tmp_path / "runs", "--set", "data.name=cifar10", "--set", f"data.root={blocker}", "--set", "data.download=false")
    assert_user_error(code, err, f"data.root {blocker} is a file", "cifar-10-python.tar.gz")


# ---------------------------------------------------------------- a run's folder: nothing overwritten


def test_second_run_in_the_same_folder_is_refused_and_resume_keeps_the_config(capsys, tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    code, _, err = train(capsys, tmp_path)
    assert code == 0, err
    first = (run_dir / "checkpoint.pt").read_bytes()
    saved_config = (run_dir / "config.yaml").read_text()

    code, _, err = train(capsys, tmp_path)  # the same command again, without --resume
    assert_user_error(code, err, str(run_dir), "already holds a run", "--resume", "--name")
    assert (run_dir / "checkpoint.pt").read_bytes() == first
    assert len(metrics_rows(run_dir)) == 1

    code, _, err = train(capsys, tmp_path, "--resume", "--set", "optim.lr=0.07", "--set", "method.name=trades")
    assert_user_error(code, err, "--resume", "method.name ('natural' -> 'trades')", "optim.lr (0.05 -> 0.07)", "optim.epochs")
    assert (run_dir / "config.yaml").read_text() == saved_config
    assert (run_dir / "checkpoint.pt").read_bytes() == first

    # Where and how fast it runs, and a longer schedule, may change.
    code, out, err = train(capsys, tmp_path, "--resume", "--set", "optim.epochs=2", "--set", "runtime.threads=1")
    assert code == 0, err
    assert "r: epoch 2" in out
    assert [row["epoch"] for row in metrics_rows(run_dir)] == [1, 2]


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_full_disk_at_checkpoint_save(capsys, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    ckpt.save(path, {"epoch": 1})
    before = path.read_bytes()
    tmp = tmp_path / "checkpoint.pt.tmp"
    tmp.symlink_to("/dev/full")  # the write lands on a device that is always full
    with pytest.raises(MtardError) as err:
        ckpt.save(path, {"epoch": 2, "weights": torch.zeros(10_000)})
    assert f"could not write checkpoint {path}: no space left on device" in str(err.value)
    assert not tmp.exists() and not tmp.is_symlink(), "the temporary file must be removed"
    assert path.read_bytes() == before, "the previous checkpoint must be kept"

    # The same through `mtard train`: one line, not torch's "enforce fail at inline_container.cc".
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt.tmp").symlink_to("/dev/full")
    code, _, err = train(capsys, tmp_path / "runs")
    assert_user_error(code, err, "no space left on device", str(run_dir / "checkpoint.pt"))


# ---------------------------------------------------------------- evaluate: results never lost


@pytest.fixture
def digits_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "ck" / "checkpoint.pt"
    spec = ckpt.model_spec("mlp", num_classes=10, in_channels=1, image_size=8, dataset="digits")
    ckpt.save(path, {"model": spec, "state_dict": build_model("mlp", num_classes=10, in_channels=1, image_size=8).state_dict()})
    return path


def test_evaluate_checks_its_report_location_before_attacking(capsys, tmp_path: Path, digits_checkpoint: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    code, out, err = run_cli(capsys, "evaluate", str(digits_checkpoint), "--attacks", "clean", "--max-samples", "8", "--out", str(folder))
    assert_user_error(code, err, str(folder), "is a folder", "--out")
    assert out == "", "no attack should have run"

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, out, err = run_cli(capsys, "evaluate", str(digits_checkpoint), "--attacks", "clean", "--max-samples", "8", "--out", str(blocker / "r.json"))
    assert_user_error(code, err, str(blocker), "--out")
    assert out == ""


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_evaluate_prints_results_before_a_failing_write(capsys, digits_checkpoint: Path) -> None:
    code, out, err = run_cli(capsys, "evaluate", str(digits_checkpoint), "--attacks", "clean,fgsm", "--max-samples", "8", "--out", "/dev/full")
    assert_user_error(code, err, "/dev/full", "No space left on device")
    assert "clean" in out and "FGSM" in out and "%" in out, "the computed results must reach the user"


@pytest.mark.parametrize("command", ["evaluate", "evaluate-front"])
def test_empty_attack_list(capsys, tmp_path: Path, digits_checkpoint: Path, command: str) -> None:
    target = str(digits_checkpoint) if command == "evaluate" else str(tmp_path)
    code, out, err = run_cli(capsys, command, target, "--attacks", "")
    assert_user_error(code, err, "--attacks is empty", "autoattack")
    assert out == ""


def test_random_bytes_as_a_checkpoint(capsys, tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code, _, err = run_cli(capsys, "evaluate", str(path), "--attacks", "clean")
    assert_user_error(code, err, str(path), "not a readable PyTorch checkpoint")
    assert "weights_only" not in err and "run code" not in err


def test_checkpoint_spec_without_num_classes(capsys, tmp_path: Path) -> None:
    path = tmp_path / "nospec.pt"
    spec = ckpt.model_spec("mlp", num_classes=10, in_channels=1, image_size=8, dataset="digits")
    del spec["num_classes"]
    ckpt.save(path, {"model": spec, "state_dict": build_model("mlp", num_classes=10, in_channels=1, image_size=8).state_dict()})
    code, _, err = run_cli(capsys, "evaluate", str(path), "--attacks", "clean")
    assert_user_error(code, err, str(path), "'num_classes'")


# ---------------------------------------------------------------- CIFAR files are data, never code


class _Payload:
    """Unpickling this creates a folder: proof that the file's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_cifar_file_with_a_payload_runs_nothing(tmp_path: Path) -> None:
    folder = make_cifar10(tmp_path)
    marker = tmp_path / "payload_ran"
    _dump(folder / "data_batch_1", {"labels": [0], "data": _Payload(marker)})
    with pytest.raises(MtardError) as err:
        load_splits(DataConfig(name="cifar10", root=str(tmp_path), download=False))
    assert not marker.exists(), "the pickle's payload ran"
    msg = str(err.value)
    assert "data_batch_1" in msg and "posix.mkdir" in msg and str(folder) in msg


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"labels": [0, 1], "data": np.zeros((2, 3072), dtype=np.float32)}, ("'data'", "uint8")),
        ({"labels": [0, 1], "data": np.zeros((2, 100), dtype=np.uint8)}, ("'data'", "3072")),
        ({"labels": [0, 10], "data": np.zeros((2, 3072), dtype=np.uint8)}, ("'labels'", "[0, 10)")),
        ({"labels": [0], "data": np.zeros((2, 3072), dtype=np.uint8)}, ("'labels'", "2 class indices")),
    ],
)
def test_cifar_batch_with_the_wrong_content(tmp_path: Path, entry: dict, words: tuple[str, ...]) -> None:
    folder = make_cifar10(tmp_path)
    _dump(folder / "data_batch_2", entry)
    with pytest.raises(MtardError) as err:
        load_splits(DataConfig(name="cifar10", root=str(tmp_path), download=False))
    assert "data_batch_2" in str(err.value)
    for word in words:
        assert word in str(err.value)


# ---------------------------------------------------------------- launch/fetch.sh: no path traversal


def test_fetch_copies_nothing_from_outside_the_experiment(tmp_path: Path) -> None:
    src = tmp_path / "store" / "exp"
    good = src / "trial_1" / "checkpoint_000001"
    good.mkdir(parents=True)
    (good / "checkpoint.pt").write_text("good")
    secret = tmp_path / "outside" / "secret"
    secret.mkdir(parents=True)
    (secret / "payload").write_text("must not be copied")
    # Relative with a ".." inside, and absolute under the experiment with a ".." inside.
    hostile = ["trial_1/../../../outside/secret", f"{src}/trial_1/../../../outside/secret"]
    members = [{"checkpoint": "trial_1/checkpoint_000001"}] + [{"checkpoint": h} for h in hostile]
    (src / "pareto.json").write_text(json.dumps(members))
    (src / "pareto.csv").write_text("trial\n")
    dest = tmp_path / "a" / "b" / "dest"  # deep enough that dest/trial_1/../../../ is still inside tmp_path

    proc = subprocess.run(["bash", str(ROOT / "launch" / "fetch.sh"), str(src), str(dest)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "trial_1" / "checkpoint_000001" / "checkpoint.pt").read_text() == "good"
    assert proc.stderr.count("unsafe checkpoint path") == 2, proc.stderr
    copied = [p for p in tmp_path.rglob("payload")]
    assert copied == [secret / "payload"], f"payload copied to {copied}"

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


# ---------------------------------------------------------------- issue 20: names, almost-right input, no tracebacks


@pytest.mark.parametrize("name, words", [
    ("../x", ("--name", "'../x'", "folder name")),
    ("/abs/path", ("--name", "'/abs/path'")),
    ("a\nb", ("--name", "'a\\nb'", "newlines")),
    ("teachers", ("--name", "'teachers'", "reserved")),
])
def test_search_name_stays_inside_its_storage(capsys, tmp_path: Path, name: str, words: tuple[str, ...]) -> None:
    code, _, err = run_cli(capsys, "search", "--storage", str(tmp_path / "runs"), "--name", name)
    assert_user_error(code, err, *words)
    assert not any(tmp_path.iterdir()), "a refused name must not create anything"


def test_one_yaml_rule_for_every_file(capsys, tmp_path: Path) -> None:
    """A key given twice is refused in a config, a search space, a catalog and a --set value; an empty config too."""
    config = tmp_path / "twice.yaml"
    config.write_text("base: digits\noptim:\n  lr: 0.1\n  lr: 5.0\n")
    code, _, err = run_cli(capsys, "train", str(config), "--out-dir", str(tmp_path / "runs"))
    assert_user_error(code, err, "twice.yaml", "'lr' is given twice", "lines 3 and 4")
    space = tmp_path / "space.yaml"
    space.write_text("base: digits\nspace:\n  optim.lr: {loguniform: [0.01, 0.1]}\n  optim.lr: {loguniform: [0.1, 1]}\n")
    code, _, err = run_cli(capsys, "search", str(space), "--storage", str(tmp_path / "runs"))
    assert_user_error(code, err, "space.yaml", "'optim.lr' is given twice")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("t: {dataset: digits, arch: mlp, role: clean, checkpoint: a.pt}\nt: {dataset: digits, arch: cnn, role: clean, checkpoint: b.pt}\n")
    code, _, err = run_cli(capsys, "teachers", "list", "--catalog", str(catalog))
    assert_user_error(code, err, "catalog.yaml", "'t' is given twice")
    code, _, err = run_cli(capsys, "train", "digits", "--set", "optim={lr: 1, lr: 2}", "--out-dir", str(tmp_path / "runs"))
    assert_user_error(code, err, "--set", "'lr' is given twice")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    code, _, err = run_cli(capsys, "train", str(empty), "--out-dir", str(tmp_path / "runs"))
    assert_user_error(code, err, "empty.yaml", "is empty")
    assert not (tmp_path / "runs").exists()


def test_catalog_entries_stay_inside_the_teacher_cache_and_name_their_fields(capsys, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("out: {dataset: digits, arch: mlp, role: clean, checkpoint: ../outside/x.pt, recipe: {config: digits}}\n")
    code, _, err = run_cli(capsys, "teachers", "train", "out", "--catalog", str(catalog))
    assert_user_error(code, err, "out.checkpoint", "'../outside/x.pt'", "no '..'")
    catalog.write_text("noarch: {dataset: digits, role: clean, checkpoint: x.pt}\n")
    code, _, err = run_cli(capsys, "teachers", "list", "--catalog", str(catalog))
    assert_user_error(code, err, "noarch", "missing field arch")
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("args, words", [
    (["--set", "eval.eps=10"], ("eval.eps", "[0, 1]", "8/255")),
    (["--set", "attack.eps=8"], ("attack.eps", "[0, 1]", "8/255")),
    (["--set", "optim.lr=1.0e308"], ("optim.lr", "float32")),
])
def test_numbers_a_run_cannot_use(capsys, tmp_path: Path, args: list[str], words: tuple[str, ...]) -> None:
    code, _, err = run_cli(capsys, "train", "digits", "--out-dir", str(tmp_path), *FAST, *args)
    assert_user_error(code, err, *words)
    assert not any(tmp_path.iterdir())


def test_eta_below_two_says_so_once(tmp_path: Path) -> None:
    from mtard.search.space import load_space

    for eta in (0, 1):
        path = tmp_path / f"eta{eta}.yaml"
        path.write_text(f"base: digits\nbudget: {{epochs: 4}}\nscheduler: {{name: moasha, eta: {eta}}}\nspace:\n  optim.lr: {{loguniform: [0.01, 0.1]}}\n")
        with pytest.raises(MtardError, match=rf"scheduler.eta: must be >= 2 .*got {eta}"):
            load_space(path)


def test_evaluate_eps_above_one_and_a_spec_that_does_not_fit(capsys, tmp_path: Path, digits_checkpoint: Path) -> None:
    code, out, err = run_cli(capsys, "evaluate", str(digits_checkpoint), "--attacks", "clean", "--eps", "8")
    assert_user_error(code, err, "eps", "[0, 1]", "8/255")
    wrong = tmp_path / "wrong.pt"  # weights of a 16x16 MLP, recorded as such, evaluated on 8x8 digits
    spec = ckpt.model_spec("mlp", num_classes=10, in_channels=1, image_size=16, dataset="digits")
    ckpt.save(wrong, {"model": spec, "state_dict": build_model("mlp", num_classes=10, in_channels=1, image_size=16).state_dict()})
    code, out, err = run_cli(capsys, "evaluate", str(wrong), "--attacks", "clean")
    assert_user_error(code, err, str(wrong), "cannot take digits images", "image_size")
    assert out == ""


def test_a_second_evaluate_keeps_the_first_results(capsys, digits_checkpoint: Path) -> None:
    base = ["evaluate", str(digits_checkpoint), "--max-samples", "16"]
    assert run_cli(capsys, *base, "--attacks", "fgsm")[0] == 0
    report = digits_checkpoint.with_name("checkpoint.eval-test.json")
    fgsm = json.loads(report.read_text())["results"]
    assert run_cli(capsys, *base, "--attacks", "clean")[0] == 0
    merged = json.loads(report.read_text())["results"]
    assert [r["attack"] for r in merged] == ["fgsm", "clean"] and merged[0] == fgsm[0]
    # Another evaluation (other samples) at the same default path is refused before any attack.
    code, out, err = run_cli(capsys, "evaluate", str(digits_checkpoint), "--max-samples", "8", "--attacks", "clean")
    assert_user_error(code, err, str(report), "another evaluation", "--out")
    assert out == "" and json.loads(report.read_text())["results"] == merged


def test_teachers_list_calls_ready_only_what_loads(capsys, tmp_path: Path) -> None:
    weights = tmp_path / "mlp.pt"
    ckpt.save(weights, {"state_dict": build_model("mlp", num_classes=10, in_channels=1, image_size=8).state_dict()})
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"as_cnn: {{dataset: digits, arch: small_cnn, role: clean, checkpoint: {weights}}}\n"
                       f"as_mlp: {{dataset: digits, arch: mlp, role: clean, checkpoint: {weights}}}\n")
    code, out, _ = run_cli(capsys, "teachers", "list", "--catalog", str(catalog))
    assert code == 0
    rows = {line.split()[0]: line.split()[4] for line in out.splitlines()[2:4]}
    assert rows == {"as_cnn": "unloadable", "as_mlp": "ready"}
    assert "as_cnn: " in out and "does not match architecture 'small_cnn'" in out


def test_compare_refuses_one_dir_twice_and_an_out_that_is_a_file(capsys, tmp_path: Path) -> None:
    from test_compare import experiment, trial

    a = experiment(tmp_path, "a", [trial("x", 0.9, 0.5, "mtard")])
    b = experiment(tmp_path, "b", [trial("y", 0.8, 0.6, "sat")])
    code, _, err = run_cli(capsys, "compare", f"A={a}", f"B={a}")
    assert_user_error(code, err, str(a), "given twice", "count twice")
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    code, _, err = run_cli(capsys, "compare", str(a), str(b), "--out", str(blocker))
    assert_user_error(code, err, str(blocker), "is a file", "--out")
    code, _, err = run_cli(capsys, "compare", str(a), str(b), "--out", str(blocker / "sub"))
    assert_user_error(code, err, str(blocker / "sub"), "not writable", "--out")
    assert blocker.read_text() == "keep me"


def test_an_unreachable_address_fails_in_seconds(capsys, tmp_path: Path) -> None:
    import time

    start = time.monotonic()
    code, _, err = run_cli(capsys, "search", "--storage", str(tmp_path / "runs"), "--address", "127.0.0.1:1")
    assert_user_error(code, err, "127.0.0.1:1", "cannot reach a Ray cluster", "leave --address out")
    assert time.monotonic() - start < 30
    assert not (tmp_path / "runs").exists()


def test_train_resume_after_a_torn_metrics_line(capsys, tmp_path: Path) -> None:
    import shlex

    code, out, _ = train(capsys, tmp_path / "with space")
    assert code == 0
    run_dir = tmp_path / "with space" / "r"
    assert f"tensorboard --logdir {shlex.quote(str(run_dir))}" in out  # a hint that pastes into a shell
    text = (run_dir / "metrics.jsonl").read_text()
    (run_dir / "metrics.jsonl").write_text(text[: len(text) // 2])  # the crash tore epoch 1's line
    code, _, err = train(capsys, tmp_path / "with space", "--resume", "--set", "optim.epochs=2")
    assert code == 0, err
    assert "repaired" in err and "epoch 1" in err
    assert [row["epoch"] for row in metrics_rows(run_dir)] == [1, 2]


def test_a_failed_start_leaves_no_empty_folders(capsys, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"gone: {{dataset: digits, arch: mlp, role: robust, checkpoint: {tmp_path / 'absent.pt'}}}\n")
    code, _, err = run_cli(capsys, "train", "digits", "--out-dir", str(tmp_path / "new" / "runs"), *FAST,
                           "--set", "method.name=ard", "--set", f"teachers.catalog={catalog}", "--set", "teachers.robust=gone")
    assert_user_error(code, err, "gone", "not found")
    assert not (tmp_path / "new").exists()


def test_a_search_that_cannot_start_leaves_nothing(capsys, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"c: {{dataset: digits, arch: mlp, role: clean, checkpoint: {tmp_path / 'absent.pt'}}}\n"
                       f"r: {{dataset: digits, arch: mlp, role: robust, checkpoint: {tmp_path / 'absent.pt'}}}\n")
    space = tmp_path / "space.yaml"
    space.write_text(f"base: digits_mtard\nset: {{teachers.catalog: {catalog}, teachers.clean: c, teachers.robust: r}}\n"
                     "space:\n  optim.lr: {loguniform: [0.01, 0.1]}\n")
    for _ in range(2):  # and the same start again is not refused as "already holds a search"
        code, _, err = run_cli(capsys, "search", str(space), "--storage", str(tmp_path / "runs"))
        assert_user_error(code, err, "teacher 'c'", "not found")
    assert not (tmp_path / "runs").exists()


def test_a_failed_evaluate_front_leaves_no_empty_verified_folder(capsys, tmp_path: Path) -> None:
    from test_compare import experiment

    from mtard.search.records import TrialRecord

    gone = TrialRecord(trial_id="x", status="complete", metrics={"val_clean_acc": 0.9, "val_pgd_acc": 0.5}, epochs=1, budget=1,
                       checkpoint=str(tmp_path / "gone" / "checkpoint.pt"))
    exp = experiment(tmp_path, "exp", [gone])
    code, _, err = run_cli(capsys, "evaluate-front", str(exp), "--attacks", "clean")
    assert_user_error(code, err, "no front member could be evaluated")
    assert not (exp / "verified").exists()

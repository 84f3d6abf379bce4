"""`mtard` command line: user errors are one line on stderr and exit 2; --debug shows the traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import TINY_CLEAN, TINY_ROBUST
from mtard import checkpoint as ckpt
from mtard.cli import main
from mtard.config import field_paths
from mtard.errors import MtardError
from mtard.models import build_model

# A fast, valid digits run: combine with one bad override to test that one problem.
FAST = ["--set", "method.name=natural", "--set", "student.arch=mlp", "--set", "optim.epochs=1",
        "--set", "eval.max_samples=32", "--set", "eval.pgd_steps=1", "--set", "runtime.progress=false"]


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("mtard: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- user errors: exit 2, one line


@pytest.mark.parametrize(
    "override, words",
    [
        ("data.name=mnist", ("data.name", "'mnist'", "digits")),
        ("method.name=mtrad", ("method.name", "'mtrad'", "mtard")),
        ("optim.lr=fast", ("optim.lr", "expected a number")),
        ("optim.learning_rate=0.1", ("optim.learning_rate", "unknown config field")),
        ("optim.epochs=0", ("optim.epochs", ">= 1")),
    ],
)
def test_bad_overrides(capsys, tmp_path: Path, override: str, words: tuple[str, ...]) -> None:
    code, _, err = run_cli(capsys, "train", "digits", "--out-dir", str(tmp_path), *FAST, "--set", override)
    assert_user_error(code, err, *words)
    assert not any(tmp_path.iterdir()), "a rejected config must not create a run"


def test_unknown_model(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "train", "digits", "--out-dir", str(tmp_path), *FAST, "--set", "student.arch=resnet99")
    assert_user_error(code, err, "resnet99", "small_cnn")  # names the problem and the valid choices


def test_unknown_config_name(capsys) -> None:
    code, _, err = run_cli(capsys, "train", "no_such_config")
    assert_user_error(code, err, "no_such_config", "digits_mtard")


def test_malformed_yaml(capsys, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "name: x\noptim: {lr: 0.1\n")
    code, _, err = run_cli(capsys, "train", str(bad))
    assert_user_error(code, err, "bad.yaml", "malformed YAML", "line 3")


def test_unknown_field_in_yaml(capsys, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "base: digits\nbalance:\n  tau_rate: 0.1\n")
    code, _, err = run_cli(capsys, "train", str(bad))
    assert_user_error(code, err, "balance.tau_rate", "valid fields", "tau_lr")


def test_resume_without_checkpoint(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "train", "digits", "--out-dir", str(tmp_path), "--name", "r", *FAST, "--resume")
    assert_user_error(code, err, "--resume", "checkpoint")


def test_evaluate_missing_checkpoint(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "missing.pt"))
    assert_user_error(code, err, "missing.pt", "does not exist")


def test_evaluate_wrong_shape_checkpoint(capsys, tmp_path: Path) -> None:
    path = tmp_path / "five.pt"
    spec = ckpt.model_spec("mlp", num_classes=10, in_channels=1, image_size=8, dataset="digits")
    ckpt.save(path, {"model": spec, "state_dict": build_model("mlp", num_classes=5, in_channels=1, image_size=8).state_dict()})
    code, _, err = run_cli(capsys, "evaluate", str(path), "--attacks", "clean", "--max-samples", "8")
    assert_user_error(code, err, "five.pt", "'mlp'", "shape")


def test_train_with_wrong_shape_teacher(capsys, tmp_path: Path) -> None:
    # A catalog teacher whose file has 5 outputs: digits has 10 classes.
    teacher = tmp_path / "robust5.pt"
    torch.save(build_model("mlp", num_classes=5, in_channels=1, image_size=8).state_dict(), teacher)
    catalog = write(tmp_path / "cat.yaml", f"r5: {{dataset: digits, arch: mlp, role: robust, checkpoint: {teacher}}}\n")
    code, _, err = run_cli(
        capsys, "train", "digits", "--out-dir", str(tmp_path / "runs"), *FAST,
        "--set", "method.name=rslad", "--set", f"teachers.catalog={catalog}", "--set", "teachers.robust=r5",
    )
    assert_user_error(code, err, "robust5.pt", "'mlp'", "(5,", "(10,")


def test_train_with_unknown_teacher(capsys, tiny_catalog: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(
        capsys, "train", "digits", "--out-dir", str(tmp_path / "runs"), *FAST,
        "--set", "method.name=rslad", "--set", f"teachers.catalog={tiny_catalog}", "--set", "teachers.robust=nobody",
    )
    assert_user_error(code, err, "teachers.robust", "'nobody'", TINY_ROBUST)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "optimizer: {lr: 0.1}\n")
    with pytest.raises(MtardError, match="unknown field optimizer"):
        main(["--debug", "train", str(bad)])


def test_train_needs_a_config(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train"])
    assert exc.value.code == 2
    assert "CONFIG is required" in capsys.readouterr().err


# ---------------------------------------------------------------- working commands


def test_help_fields_lists_every_field(capsys) -> None:
    code, out, err = run_cli(capsys, "train", "--help-fields")
    assert code == 0 and err == ""
    lines = out.splitlines()
    listed = {line.split()[0] for line in lines}
    assert listed == set(field_paths())
    lr_line = next(line for line in lines if line.startswith("optim.lr "))
    assert "float" in lr_line and "default 0.1" in lr_line
    assert any(line.startswith("method.name ") and "mtard" in line for line in lines)


def test_train_runs_and_prints_the_result(capsys, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "train", "digits", "--out-dir", str(tmp_path), "--name", "ok", *FAST)
    assert code == 0, err
    assert "ok: epoch 1" in out and "val clean" in out
    assert (tmp_path / "ok" / "checkpoint.pt").is_file() and (tmp_path / "ok" / "metrics.jsonl").is_file()


def test_teachers_list(capsys, trained_teachers: Path) -> None:
    code, out, _ = run_cli(capsys, "teachers", "list", "--catalog", str(trained_teachers))
    assert code == 0
    header, rule, *rows = out.splitlines()
    assert header.split()[:5] == ["name", "dataset", "role", "arch", "state"] and set(rule) == {"-", " "}
    by_name = {row.split()[0]: row.split() for row in rows}
    assert set(by_name) == {TINY_CLEAN, TINY_ROBUST}
    assert by_name[TINY_CLEAN][1:5] == ["digits", "clean", "mlp", "ready"]
    assert "/" in by_name[TINY_CLEAN][5]  # val clean/PGD accuracies from the sidecar


def test_teachers_list_default_catalog(capsys) -> None:
    code, out, _ = run_cli(capsys, "teachers", "list")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["digits_cnn_clean"][4] == "auto-train"  # the isolated teacher dir is empty
    assert rows["cifar10_wrn34_10_trades"][4] == "missing"


def test_teachers_train(capsys, tiny_catalog: Path, teacher_dir: Path) -> None:
    code, out, err = run_cli(capsys, "teachers", "train", TINY_CLEAN, "--catalog", str(tiny_catalog))
    assert code == 0, err
    assert f"{TINY_CLEAN}: val clean" in out and (teacher_dir / "tiny" / "clean.pt").is_file()
    code, out, _ = run_cli(capsys, "teachers", "train", TINY_CLEAN, "--catalog", str(tiny_catalog))
    assert code == 0 and "already trained" in out
    code, _, err = run_cli(capsys, "teachers", "train", "nobody", "--catalog", str(tiny_catalog))
    assert_user_error(code, err, "'nobody'", TINY_CLEAN)


# ---------------------------------------------------------------- the real executable


def _mtard(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mtard")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(exe), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_subprocess_exit_code_and_one_line_error(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "base: digits\noptim:\n  lrr: 0.1\n")
    proc = _mtard("train", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtard: error: unknown field optim.lrr"), proc.stderr
    assert proc.stdout == ""

    proc = _mtard("--debug", "train", str(bad), cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr and "MtardError: unknown field optim.lrr" in proc.stderr


def test_train_then_evaluate_prints_table_and_writes_json(capsys, tmp_path: Path) -> None:
    code, _, _ = run_cli(capsys, "train", "digits", "--name", "ev", "--out-dir", str(tmp_path), *FAST)
    assert code == 0
    ckpt = tmp_path / "ev" / "checkpoint.pt"
    code, out, err = run_cli(capsys, "evaluate", str(ckpt), "--split", "val", "--attacks", "clean,fgsm", "--max-samples", "32")
    assert code == 0, err
    assert "FGSM" in out and "written:" in out
    report = json.loads((tmp_path / "ev" / "checkpoint.eval-val.json").read_text())
    assert [r["attack"] for r in report["results"]] == ["clean", "fgsm"]
    assert report["results"][1]["accuracy"] <= report["results"][0]["accuracy"]

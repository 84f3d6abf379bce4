"""RobustBench teachers (`rb:<ModelID>`): names, errors, loading against RobustBench's own loader.

Offline: the weight files are written here in RobustBench's format (random weights for the real
zoo architecture), where RobustBench itself would look for them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mtard import load_teacher
from mtard import robustbench_zoo as zoo
from mtard.errors import MtardError
from mtard.teachers import FrozenTeacher, resolve

pytestmark = pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="needs pip install 'mtard[robustbench]'")


def write_robustbench_file(model: nn.Module, root: Path, dataset: str, threat: str, model_id: str) -> Path:
    """The layout and wrapping RobustBench's own checkpoints use: {'state_dict': {'module.…': tensor}}."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                # random but sane: BN variances positive, weights small, so logits stay finite
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t) * 0.05)
    path = root / dataset / threat / f"{model_id}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_zoo_names_resolve_without_a_catalog(tmp_path: Path) -> None:
    entry = resolve({}, "rb:Zhang2019Theoretically", "cifar10", field_path="teachers.robust", robustbench_dir=str(tmp_path))
    assert entry.role == "robust" and entry.dataset == "cifar10"
    assert Path(entry.checkpoint) == tmp_path / "cifar10" / "Linf" / "Zhang2019Theoretically.pt"
    l2 = resolve({}, "rb:l2:Engstrom2019Robustness", "cifar10", field_path="teachers.robust")
    assert l2.checkpoint.endswith("robustbench/cifar10/L2/Engstrom2019Robustness.pt")  # default dir: $MTARD_TEACHERS/robustbench
    with pytest.raises(MtardError, match=r"^teachers\.robust: RobustBench has no cifar10 Linf model 'Zhang2019Theoretical'; close matches: Zhang2019Theoretically"):
        resolve({}, "rb:Zhang2019Theoretical", "cifar10", field_path="teachers.robust")
    with pytest.raises(MtardError, match=r"^teachers\.clean: teacher 'rb:Zhang2019Theoretically' is a robust teacher"):
        resolve({}, "rb:Zhang2019Theoretically", "cifar10", field_path="teachers.clean")
    with pytest.raises(MtardError, match="exist for cifar10 and cifar100 only|exist for cifar10 and cifar100, but data.name is digits"):
        resolve({}, "rb:Zhang2019Theoretically", "digits", field_path="teachers.robust")
    with pytest.raises(MtardError, match="unknown RobustBench threat model 'L3'"):
        resolve({}, "rb:L3:Zhang2019Theoretically", "cifar10")
    with pytest.raises(MtardError, match="not a RobustBench name"):
        resolve({}, "rb:", "cifar10")
    assert "Gowal2020Uncovering" in zoo.zoo_listing("cifar100")


def test_zoo_teacher_gives_robustbench_logits(tmp_path: Path) -> None:
    """The paper's CIFAR-10 robust teacher (TRADES WRN-34-10): mtard's load == robustbench.utils.load_model."""
    rb = zoo.robustbench_modules()
    reference_arch = zoo.zoo_models("cifar10")["Zhang2019Theoretically"]["model"]()
    path = write_robustbench_file(reference_arch, tmp_path, "cifar10", "Linf", "Zhang2019Theoretically")
    theirs = rb.utils.load_model("Zhang2019Theoretically", model_dir=tmp_path, dataset="cifar10", threat_model="Linf")
    ours = load_teacher("rb:Zhang2019Theoretically", "cifar10", robustbench_dir=str(tmp_path))
    assert isinstance(ours, FrozenTeacher) and not ours.training
    assert not any(p.requires_grad for p in ours.parameters())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = theirs(x)
    got = ours(x)
    assert got.shape == (2, 10) and torch.isfinite(got).all()
    assert torch.equal(got, expected)
    assert path.is_file()  # read in place, nothing downloaded or moved


def test_the_official_cifar100_robust_teacher_builds() -> None:
    """Gowal et al.'s WRN-70-16 (DeepMind layout, Swish, CIFAR-100 normalisation inside): the real path, once."""
    entry = resolve({}, "rb:Gowal2020Uncovering", "cifar100", field_path="teachers.robust")
    model = zoo.build(entry).eval()
    assert sum(p.numel() for p in model.parameters()) > 260e6
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 100)


def test_a_wrong_file_for_a_zoo_teacher_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cifar10" / "Linf" / "Zhang2019Theoretically.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(MtardError, match=r"Zhang2019Theoretically.pt does not match architecture 'RobustBench cifar10/Linf/Zhang2019Theoretically' \(missing keys"):
        load_teacher("rb:Zhang2019Theoretically", "cifar10", robustbench_dir=str(tmp_path))


class _StandIn(nn.Module):
    """A CPU-sized stand-in registered in RobustBench's zoo: what the trial test distils from."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

    def forward(self, x):
        return self.net(x)


def test_search_space_with_a_zoo_and_a_catalog_teacher(tmp_path: Path, monkeypatch) -> None:
    """Both choices validate before the search; a trial with the zoo teacher is staged, fetched on a fresh node and run."""
    import yaml
    from test_data import make_cifar10

    from mtard.data import load_splits
    from mtard.loop import LocalContext, fit
    from mtard.search.space import load_space
    from mtard.staging import stage_run_teachers

    zoo_models = zoo.zoo_models("cifar10")
    monkeypatch.setitem(zoo_models, "MtardStandIn", {"model": _StandIn, "gdrive_id": "none"})
    rb_dir = tmp_path / "robustbench"
    write_robustbench_file(_StandIn(), rb_dir, "cifar10", "Linf", "MtardStandIn")
    catalog_teacher = tmp_path / "c10_mlp.pt"
    torch.manual_seed(1)
    from mtard.models import build_model

    torch.save(build_model("mlp", num_classes=10, in_channels=3, image_size=32).state_dict(), catalog_teacher)
    catalog = tmp_path / "cat.yaml"
    catalog.write_text(f"c10_mlp: {{dataset: cifar10, arch: mlp, role: robust, checkpoint: {catalog_teacher}}}\n")
    make_cifar10(tmp_path / "data")
    space_path = tmp_path / "space.yaml"
    space_path.write_text(yaml.safe_dump({
        "base": "cifar10_mtard",
        "set": {
            "method.name": "rslad", "student.arch": "mlp", "teachers.catalog": str(catalog),
            "teachers.robustbench_dir": str(rb_dir), "data.root": str(tmp_path / "data"), "data.num_workers": 0,
            "data.batch_size": 16, "attack.steps": 1, "eval.pgd_steps": 1, "eval.max_samples": 16,
            "runtime.bf16": False, "runtime.device": "cpu",
        },
        "num_samples": 2, "resources": {"workers": 1, "cpus_per_worker": 1}, "budget": {"epochs": 1}, "enqueue_defaults": False,
        "space": {"teachers.robust": {"choice": ["rb:MtardStandIn", "c10_mlp"]}},
    }))
    space = load_space(space_path)
    assert space.teacher_names() == [("teachers.robust", "rb:MtardStandIn"), ("teachers.robust", "c10_mlp")]

    bad = space_path.read_text().replace("rb:MtardStandIn", "rb:MtardStandInn")
    (tmp_path / "bad.yaml").write_text(bad)
    with pytest.raises(MtardError, match=r"^space\.teachers\.robust: RobustBench has no cifar10 Linf model 'MtardStandInn'; close matches: MtardStandIn"):
        load_space(tmp_path / "bad.yaml")

    cfg = space.trial_config({"teachers.robust": "rb:MtardStandIn"}, name="t0")
    cfg.out_dir = str(tmp_path / "runs")
    stage_run_teachers(cfg, str(tmp_path / "storage"))
    monkeypatch.setenv("MTARD_TEACHERS", str(tmp_path / "fresh_node"))  # the trial runs on another machine
    metrics = fit(cfg, LocalContext(torch.device("cpu"), cfg.run_dir, resume=False))
    assert metrics["epoch"] == 1 and 0.0 <= metrics["val_clean_acc"] <= 1.0
    assert list((tmp_path / "fresh_node" / "staged").glob("*.pt"))
    assert len(load_splits(cfg.data).val) > 0


def test_the_extra_installs_beside_the_pinned_torch_and_imports() -> None:
    """`pip install 'mtard[robustbench]'` keeps the pinned torch, and mtard reads the zoo without pkg_resources.

    This environment is the one the README's test command installs (`pip install -e '.[test]'`, which pulls
    the extra): had the extra needed another torch, pip would have installed that one here; `pip check`
    confirms every installed requirement is met."""
    from importlib.metadata import version

    chosen = {name: version(name).split("+")[0] for name in ("robustbench", "torch", "pyautoattack")}
    assert chosen == {"robustbench": "1.1.1", "torch": "2.14.1", "pyautoattack": "0.2.0"}
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    # The import, in a process where pkg_resources and autoattack cannot be imported at all.
    code = (
        "import sys; sys.modules['pkg_resources'] = None; sys.modules['autoattack'] = None\n"
        "from mtard import robustbench_zoo as zoo; print(len(zoo.zoo_listing('cifar10')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300)
    assert int(out.stdout.split()[-1]) > 50


@pytest.mark.parametrize(("arch", "mean"), [("dm_wrn22_6", (0.5071, 0.4865, 0.4409)), ("dm_wrn22_6_c10stats", (0.4914, 0.4822, 0.4465))])
def test_deepmind_wrn_matches_robustbench(arch: str, mean: tuple[float, ...]) -> None:
    """mtard's DeepMind-layout WRN-22-6 (Swish) == RobustBench's DMWideResNet: same keys, same logits."""
    zoo.robustbench_modules()  # the package without its __init__ (see mtard/robustbench_zoo.py)
    from robustbench.model_zoo.architectures.dm_wide_resnet import (
        CIFAR10_STD,
        CIFAR100_STD,
        DMWideResNet,
        Swish,
    )

    from mtard.models import build_model

    ours = build_model(arch, num_classes=100, in_channels=3, image_size=32).eval()
    std = CIFAR100_STD if arch == "dm_wrn22_6" else CIFAR10_STD
    theirs = DMWideResNet(num_classes=100, depth=22, width=6, activation_fn=Swish, mean=mean, std=std).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())  # strict loading of DeepMind / RobustBench files
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in theirs.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t) * 0.05)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert torch.allclose(ours.mean.flatten(), torch.tensor(mean))


def test_teachers_list_zoo(capsys) -> None:
    from mtard.cli import main

    assert main(["teachers", "list", "--zoo", "--dataset", "cifar100"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:-1]}  # after the header and its rule
    assert rows["rb:Gowal2020Uncovering"] == ["cifar100", "Linf"]
    assert all(name.startswith("rb:") for name in rows) and "robustbench.github.io" in out.splitlines()[-1]
    assert main(["teachers", "list", "--zoo", "--threat", "L2"]) == 0
    assert "rb:L2:Engstrom2019Robustness" in capsys.readouterr().out

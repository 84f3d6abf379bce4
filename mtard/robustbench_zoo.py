"""Teachers from the RobustBench model zoo: `rb:<ModelID>` (L∞) or `rb:<threat>:<ModelID>`.

The architecture comes from RobustBench's own model definitions (`pip install 'mtard[robustbench]'`),
the weights from the file RobustBench itself would use, `<dir>/<dataset>/<threat>/<ModelID>.pt`
with `<dir>` = `teachers.robustbench_dir` (an existing RobustBench `models/` folder) or by default
`$MTARD_TEACHERS/robustbench`. mtard loads that file through its own safe path (weights only).
RobustBench models take images in [0, 1] and normalise inside, like every mtard model.

Why RobustBench is imported without its package `__init__`: 1.1.1's `__init__` also imports its
benchmark runner, which needs `pkg_resources` (gone from setuptools >= 81) and `autoattack.state`
(only in the GitHub AutoAttack, not in the PyPI `pyautoattack` that robustbench 1.1.1 itself
depends on), so `import robustbench` fails in any fresh venv. The model zoo and `load_model`
need neither, and that is all mtard uses.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
import types
from pathlib import Path

from torch import nn

from mtard import checkpoint as ckpt
from mtard.errors import MtardError
from mtard.storage import atomic_write

PREFIX = "rb:"
DATASETS = ("cifar10", "cifar100")
INSTALL = "pip install 'mtard[robustbench]'"


def is_zoo_name(name: str) -> bool:
    return name.startswith(PREFIX)


def parse(name: str, *, field_path: str = "teacher") -> tuple[str, str]:
    """'rb:Zhang2019Theoretically' -> ('Linf', 'Zhang2019Theoretically'); 'rb:L2:X' -> ('L2', 'X')."""
    parts = name[len(PREFIX):].split(":")
    if len(parts) == 1 and parts[0]:
        return "Linf", parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise MtardError(f"{field_path}: {name!r} is not a RobustBench name; write rb:<ModelID> (L∞) or rb:<threat>:<ModelID>, e.g. rb:Zhang2019Theoretically")


def robustbench_modules() -> types.SimpleNamespace:
    """RobustBench's model zoo and utils, imported without the package `__init__` (see the module docstring)."""
    if "robustbench.utils" not in sys.modules:
        spec = importlib.util.find_spec("robustbench")
        if spec is None or not spec.submodule_search_locations:
            raise MtardError(f"rb: teachers need RobustBench's model zoo: {INSTALL}")
        if "robustbench" not in sys.modules:
            package = types.ModuleType("robustbench")
            package.__path__ = list(spec.submodule_search_locations)
            package.__spec__ = spec
            sys.modules["robustbench"] = package
    from robustbench import utils
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return types.SimpleNamespace(utils=utils, model_dicts=model_dicts, BenchmarkDataset=BenchmarkDataset, ThreatModel=ThreatModel)


def zoo_models(dataset: str, threat: str = "Linf", *, field_path: str = "teacher") -> dict:
    """{ModelID: RobustBench's entry} for a data set and threat model."""
    if dataset not in DATASETS:
        raise MtardError(f"{field_path}: RobustBench teachers exist for {' and '.join(DATASETS)}, but data.name is {dataset}")
    rb = robustbench_modules()
    threats = {t.value.lower(): t for t in rb.ThreatModel}
    if threat.lower() not in threats:
        raise MtardError(f"{field_path}: unknown RobustBench threat model {threat!r}; use one of {', '.join(t.value for t in rb.ThreatModel)}")
    return rb.model_dicts[rb.BenchmarkDataset(dataset)].get(threats[threat.lower()], {})


def zoo_fields(name: str, dataset: str, root: Path, *, field_path: str = "teacher") -> dict[str, str]:
    """The catalog fields of `rb:...` (`mtard.teachers.TeacherEntry`): role robust, the file where
    RobustBench keeps it under `root` (its `models/` folder)."""
    threat, model_id = parse(name, field_path=field_path)
    models = zoo_models(dataset, threat, field_path=field_path)
    if model_id not in models:
        close = difflib.get_close_matches(model_id, list(models), n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else f"`mtard teachers list --zoo --dataset {dataset}` lists them"
        raise MtardError(f"{field_path}: RobustBench has no {dataset} {threat} model {model_id!r}; {hint}")
    if isinstance(models[model_id].get("gdrive_id"), list):
        raise MtardError(f"{field_path}: {name} is an ensemble of several files in RobustBench; mtard loads single-file models only")
    threat = next(t for t in ("Linf", "L2", "corruptions") if t.lower() == threat.lower())
    return dict(
        dataset=dataset, arch=f"RobustBench {dataset}/{threat}/{model_id}", role="robust",
        checkpoint=str((root / dataset / threat / f"{model_id}.pt").absolute()),
        source=f"RobustBench model zoo ({dataset}, {threat}): {model_id}", name=name,
    )


def _location(entry) -> tuple[str, str, str]:
    dataset, threat, model_id = entry.arch.split(" ", 1)[1].split("/")
    return dataset, threat, model_id


def build(entry) -> nn.Module:
    """RobustBench's own definition of the model (random weights)."""
    dataset, threat, model_id = _location(entry)
    return zoo_models(dataset, threat)[model_id]["model"]()


def missing_message(entry, path: Path) -> str:
    return (
        f"teacher {entry.name!r}: {path} not found and could not be downloaded; place RobustBench's file for "
        f"{_location(entry)[2]} exactly there (or set teachers.robustbench_dir to an existing RobustBench models/ folder)"
    )


def download(entry) -> None:
    """Download the file through RobustBench's downloader to `entry.checkpoint` (atomically), checking it loads.

    The caller holds the node's lock (`mtard.teachers.fetch_zoo_file`): one download per node.
    """
    dataset, threat, model_id = _location(entry)
    path = Path(entry.checkpoint)

    def fetch(tmp: Path) -> None:
        robustbench_modules().utils.download_gdrive_new(zoo_models(dataset, threat)[model_id]["gdrive_id"], tmp)
        ckpt.read(tmp)  # a truncated or HTML-error download fails here, never at training time

    print(f"[teachers] downloading RobustBench {dataset}/{threat}/{model_id} to {path}", file=sys.stderr, flush=True)
    try:
        atomic_write(path, fetch, shared=True)
    except MtardError:
        raise
    except Exception as err:  # offline, quota, moved file: say where to put it by hand
        raise MtardError(f"{missing_message(entry, path)} (download failed: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__})") from err


def zoo_listing(dataset: str, threat: str = "Linf") -> list[str]:
    """Every single-file model RobustBench offers for this data set and threat model."""
    return sorted(m for m, info in zoo_models(dataset, threat).items() if not isinstance(info.get("gdrive_id"), list))

"""Robustness evaluation: the attack suite of this line of work, as plain data.

The protocol (see docs/evaluation.md, "The attacks") is L∞ white-box
evaluation of a model in eval mode: clean, FGSM, PGD-20 in the TRADES setting (step 0.003)
and in the SAT setting (step 2/255), CW∞ (confidence 50, 30 steps of 2/255) and standard
AutoAttack (APGD-CE, APGD-T, FAB-T, Square, via ``pyautoattack``).

Provenance: only PGD-20 comes from the official MTARD/RSLAD/ARD/TRADES code. FGSM and CW∞
follow the DAT/FAT evaluation code (FGSM there has a uniform random start: ``fgsm_rs``; plain
``fgsm`` has none), and AutoAttack is fra31/auto-attack as repackaged on PyPI by
``pyautoattack`` (the same attack code behind a different API). Every result records the
library (and version) that ran it, and every report its precision: fp32 unless the caller
asks for bf16 autocast, because a low-precision gradient can weaken an attack.

Design ("compute then render"):

* `evaluate_model` returns a list of `AttackResult` — plain numbers and strings — and
  `render_attack_table` is a thin formatter over it, so the CLI, the search's final report
  and the tests all consume the same data.
* The published step sizes are defined for ε = 8/255. At another ε (0.2 on the 8×8
  digits) a fixed step would make the attack either too weak to leave the start
  point or unable to reach the ball's surface in its step budget, so every step size is
  scaled by ε/(8/255) — the same attack *shape* at a different radius — and each
  result's description says so, because a number without its attack settings cannot
  be compared with anything.
* Every attack runs from the same seed inside `torch.random.fork_rng`: results are a
  function of (model, data, seed), independent of what ran before, and evaluating
  mid-training does not perturb the trainer's random stream.
* `evaluate_checkpoint` rebuilds the exact data split the checkpoint was trained with
  (its saved ``config["data"]``), so ``split="val"`` is the held-out split the run
  selected on and never overlaps its training data; ``split="test"`` is for final
  reports only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from mtard import attacks as _attacks
from mtard.config import EPS_FIX, DataConfig, coerce, from_dict
from mtard.errors import MtardError
from mtard.loop import resolve_device
from mtard.stats import accuracy_interval
from mtard.text import format_eps, text_table

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "REFERENCE_EPS",
    "AttackResult",
    "AttackSpec",
    "check_attacks",
    "evaluate_checkpoint",
    "evaluate_model",
    "render_attack_table",
    "resolve_device",
]

#: The ε the published step sizes were chosen for; other ε scale them proportionally.
REFERENCE_EPS = 8 / 255

SPLITS = ("val", "test")


@dataclass
class AttackResult:
    """One row of an evaluation: accuracy of the model under one named attack."""

    attack: str  # registry name, e.g. "pgd20_trades"
    description: str  # the attack and its exact settings, e.g. "PGD-20 (TRADES: step 0.003, uniform start), L∞ ε=8/255"
    accuracy: float  # fraction of `samples` still classified correctly, in [0, 1]
    samples: int
    library: str = ""  # what ran the attack, with its version, e.g. "pyautoattack 0.2.0 (fra31/auto-attack, repackaged)"


@dataclass
class _Context:
    """What an attack needs besides the batch."""

    eps: float
    batch_size: int
    seed: int
    device: torch.device


# An attack either perturbs one batch at a time (`perturb`), or needs the whole sample set at
# once (`run_all`: AutoAttack schedules its sub-attacks over the points still robust).
Perturb = Callable[[nn.Module, Tensor, Tensor, _Context], Tensor]
RunAll = Callable[[nn.Module, Tensor, Tensor, _Context], Tensor]


@dataclass(frozen=True)
class AttackSpec:
    """A named attack: how to describe it at a given ε and how to run it."""

    name: str
    describe: Callable[[float], str]
    perturb: Perturb | None = None  # per batch -> adversarial batch (None for "clean")
    run_all: RunAll | None = None  # whole set -> predicted labels under attack


# ---------------------------------------------------------------- descriptions


def _scale(eps: float) -> float:
    return eps / REFERENCE_EPS


def _step_text(base: float, base_text: str, eps: float) -> str:
    """'step 0.003' at ε=8/255, 'step 0.01882 (0.003 × ε/(8/255))' otherwise."""
    if math.isclose(eps, REFERENCE_EPS, rel_tol=1e-9):
        return f"step {base_text}"
    return f"step {base * _scale(eps):.4g} ({base_text} × ε/(8/255))"


def _linf(eps: float) -> str:
    return f"L∞ ε={format_eps(eps)}"


# ---------------------------------------------------------------- the attacks

_TRADES_STEP = 0.003
_SAT_STEP = 2 / 255
_CW_STEP = 2 / 255
_PGD_STEPS = 20
_CW_STEPS = 30
_CW_CONFIDENCE = 50.0


def _fgsm(model: nn.Module, x: Tensor, y: Tensor, ctx: _Context) -> Tensor:
    return _attacks.fgsm(model, x, y, eps=ctx.eps)


def _fgsm_rs(model: nn.Module, x: Tensor, y: Tensor, ctx: _Context) -> Tensor:
    return _attacks.fgsm(model, x, y, eps=ctx.eps, random_start=True)


def _pgd20_trades(model: nn.Module, x: Tensor, y: Tensor, ctx: _Context) -> Tensor:
    step = _TRADES_STEP * _scale(ctx.eps)
    return _attacks.pgd(model, x, y, eps=ctx.eps, step_size=step, steps=_PGD_STEPS, start="uniform")


def _pgd20_sat(model: nn.Module, x: Tensor, y: Tensor, ctx: _Context) -> Tensor:
    step = _SAT_STEP * _scale(ctx.eps)
    return _attacks.pgd(model, x, y, eps=ctx.eps, step_size=step, steps=_PGD_STEPS, start="uniform")


def _cw(model: nn.Module, x: Tensor, y: Tensor, ctx: _Context) -> Tensor:
    step = _CW_STEP * _scale(ctx.eps)
    return _attacks.cw_inf(model, x, y, eps=ctx.eps, step_size=step, steps=_CW_STEPS, confidence=_CW_CONFIDENCE)


def _autoattack(model: nn.Module, x: Tensor, y: Tensor, ctx: _Context) -> Tensor:
    """Standard AutoAttack on the whole set; returns predicted labels on its output (on CPU).

    pyautoattack 0.2.0 API notes (read from its source): the constructor takes no
    `verbose` (it sets `self.verbose = True`, which only drives debug logging, so we turn
    it off afterwards); `run_standard_evaluation(x, y, /, *, batch_size)` returns
    `(x_adv, y_adv)`; APGD-T and FAB-T default to 9 target classes, which assumes ≥ 10
    classes, so fewer classes get C−1 targets. Its `check_dynamic` calls
    `sys.settrace(None)`, which would silently switch off a coverage tool or debugger,
    so the previous trace function is restored.
    """
    from pyautoattack import AutoAttack

    with torch.no_grad():
        num_classes = int(model(x[:1].to(ctx.device)).shape[1])
    if num_classes < 4:
        raise MtardError(
            f"AutoAttack's targeted DLR loss needs at least 4 classes, the model has {num_classes}: "
            f"drop 'autoattack' from the attacks"
        )
    adversary = AutoAttack(model, norm="Linf", eps=ctx.eps, version="standard", device=ctx.device, seed=ctx.seed)
    adversary.verbose = False
    targets = min(9, num_classes - 1)
    adversary.apgd_targeted.n_target_classes = targets
    adversary.fab.n_target_classes = targets
    tracer = sys.gettrace()
    try:
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=ctx.batch_size)
    finally:
        sys.settrace(tracer)
    # Count on the returned images ourselves rather than trusting its bookkeeping.
    return _predict(model, x_adv, ctx)


def _describe_pgd(setting: str, base: float, base_text: str) -> Callable[[float], str]:
    return lambda eps: f"PGD-{_PGD_STEPS} ({setting}: {_step_text(base, base_text, eps)}, uniform start), {_linf(eps)}"


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in [
        AttackSpec("clean", lambda eps: "clean (no attack)"),
        AttackSpec("fgsm", lambda eps: f"FGSM (1 step of size ε, no random start), {_linf(eps)}", perturb=_fgsm),
        AttackSpec(
            "fgsm_rs",
            lambda eps: f"FGSM (1 step of size ε from a uniform random start, as the DAT/FAT evaluation code), {_linf(eps)}",
            perturb=_fgsm_rs,
        ),
        AttackSpec("pgd20_trades", _describe_pgd("TRADES", _TRADES_STEP, "0.003"), perturb=_pgd20_trades),
        AttackSpec("pgd20_sat", _describe_pgd("SAT", _SAT_STEP, "2/255"), perturb=_pgd20_sat),
        AttackSpec(
            "cw",
            lambda eps: (
                f"CW∞ (margin loss, confidence {_CW_CONFIDENCE:g}, {_CW_STEPS} steps, "
                f"{_step_text(_CW_STEP, '2/255', eps)}, uniform start), {_linf(eps)}"
            ),
            perturb=_cw,
        ),
        AttackSpec(
            "autoattack",
            lambda eps: f"AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square; fra31/auto-attack via pyautoattack), {_linf(eps)}",
            run_all=_autoattack,
        ),
    ]
}
"""Every named attack, in report order."""

DEFAULT_ATTACKS: list[str] = ["clean", "fgsm", "pgd20_trades", "pgd20_sat", "cw", "autoattack"]

PRECISIONS = ("fp32", "bf16")


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def attack_library(name: str) -> str:
    """What runs attack `name`, with its version: recorded beside every result."""
    if name == "autoattack":
        return f"pyautoattack {_version('pyautoattack')} (fra31/auto-attack's code, repackaged on PyPI with a different API)"
    if name == "clean":
        return f"mtard {_version('mtard')} (no attack)"
    return f"mtard {_version('mtard')} (mtard.attacks, torch {torch.__version__})"


def check_attacks(names: list[str]) -> list[str]:
    """Validate attack names (user input) and drop repeats, keeping the given order."""
    if not names:
        raise MtardError(f"no attacks to run: name at least one of {', '.join(ATTACKS)}")
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise MtardError(f"unknown attack {unknown[0]!r}; valid attacks: {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------- evaluation


def _collect(dataset: Dataset, max_samples: int, batch_size: int) -> tuple[Tensor, Tensor]:
    """The first `max_samples` items (all when 0), in dataset order, as CPU tensors.

    Loaded once and shared by every attack: re-reading (and re-decoding) the data per
    attack would cost more than the cheap attacks themselves, and all attacks must see
    exactly the same images for their accuracies to be comparable.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if max_samples:
        n = min(n, max_samples)
    if n == 0:
        raise MtardError("the evaluation data set is empty: check the split and max_samples")
    # An explicit generator: a DataLoader otherwise draws its base seed from the global
    # torch RNG, and evaluation must not shift the caller's (e.g. the trainer's) stream.
    loader = DataLoader(
        Subset(dataset, range(n)), batch_size=batch_size, shuffle=False, num_workers=0, generator=torch.Generator()
    )
    xs, ys = [], []
    for x, y in loader:
        xs.append(x.float())
        ys.append(torch.as_tensor(y).long())
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    lo, hi = float(x_all.min()), float(x_all.max())
    if lo < 0 or hi > 1:
        raise MtardError(
            f"evaluation images must lie in [0, 1] (attacks clip to that box and ε is in pixel units), "
            f"found values in [{lo:.3g}, {hi:.3g}]: remove the mean/std normalisation from the data "
            f"and put it inside the model"
        )
    return x_all, y_all


def _batches(x: Tensor, y: Tensor, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def _predict(model: nn.Module, x: Tensor, ctx: _Context) -> Tensor:
    """Predicted labels (CPU), batch by batch, without gradients."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), ctx.batch_size):
            xb = x[i : i + ctx.batch_size]
            out.append(model(xb.to(ctx.device)).argmax(dim=1).cpu())
    return torch.cat(out)


def _run_attack(spec: AttackSpec, model: nn.Module, x: Tensor, y: Tensor, ctx: _Context) -> int:
    """Number of samples still classified correctly under `spec`."""
    if spec.run_all is not None and ctx.eps > 0:
        return int((spec.run_all(model, x, y, ctx) == y).sum())
    correct = 0
    for xb, yb in _batches(x, y, ctx.batch_size):
        xb, yb = xb.to(ctx.device), yb.to(ctx.device)
        # ε = 0 is the clean input by definition; skipping avoids 0-size steps in the attacks.
        if spec.perturb is not None and ctx.eps > 0:
            xb = spec.perturb(model, xb, yb, ctx)
        with torch.no_grad():
            correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise MtardError(f"unknown precision {precision!r}: use 'fp32' (default) or 'bf16'")


def check_eps(eps: float) -> None:
    if not (math.isfinite(eps) and 0 <= eps <= 1):
        raise MtardError(f"eps must be in [0, 1], got {eps}: {EPS_FIX}")


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    attacks: list[str],
    eps: float,
    batch_size: int = 256,
    max_samples: int = 0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    precision: str = "fp32",
) -> list[AttackResult]:
    """Accuracy of `model` on `dataset` under each named attack, in the order given.

    Args:
        model: maps images in [0, 1] to logits; moved to `device` and evaluated in eval
            mode (each submodule's mode is restored afterwards).
        dataset: items `(x, y)` with `x` a C×H×W float tensor in [0, 1].
        attacks: names from `ATTACKS`; repeats are dropped.
        eps: L∞ radius in pixel units; step sizes scale by eps/(8/255).
        max_samples: evaluate the first `max_samples` items only (0 = all). A prefix, not
            a random subset, so the same images are used whatever the seed.
        seed: torch is seeded with it before each attack (random starts, AutoAttack).
        precision: "fp32" (default, as the official evaluations) or "bf16" (autocast on the
            device: faster on GPUs, but a low-precision gradient can weaken the attacks).

    Returns:
        One `AttackResult` per attack; all share the same samples.
    """
    names = check_attacks(list(attacks))
    check_eps(eps)
    if batch_size < 1:
        raise MtardError(f"batch size must be >= 1, got {batch_size}")
    if max_samples < 0:
        raise MtardError(f"max_samples must be >= 0 (0 = the whole split), got {max_samples}")
    check_precision(precision)
    dev = resolve_device(device)
    x, y = _collect(dataset, max_samples, batch_size)
    ctx = _Context(eps=eps, batch_size=batch_size, seed=seed, device=dev)

    modes = [(m, m.training) for m in model.modules()]
    model.to(dev).eval()
    rng_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    results = []
    try:
        for name in names:
            spec = ATTACKS[name]
            autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
            with torch.random.fork_rng(devices=rng_devices), autocast:
                torch.manual_seed(seed)
                correct = _run_attack(spec, model, x, y, ctx)
            results.append(AttackResult(name, spec.describe(eps), correct / len(y), len(y), attack_library(name)))
    finally:
        for module, was_training in modes:
            module.training = was_training
    return results


# ---------------------------------------------------------------- rendering


def render_attack_table(results: list[AttackResult]) -> str:
    """A plain-text table: attack, accuracy (%), samples, its 95 % Wilson interval, description."""
    header = ("attack", "accuracy", "samples", "95 % interval", "description")
    rows = []
    for r in results:
        ci = accuracy_interval(r.accuracy, r.samples)
        rows.append((r.attack, f"{100 * r.accuracy:.2f}%", str(r.samples), f"[{100 * ci.low:.1f}, {100 * ci.high:.1f}]", r.description))
    return "\n".join(text_table(header, rows, right=(1, 2)))


def _with_interval(result: AttackResult) -> dict[str, Any]:
    """A result as the report stores it: with the 95 % Wilson interval of its accuracy on its samples."""
    ci = accuracy_interval(result.accuracy, result.samples)
    return {**asdict(result), "interval_95": [ci.low, ci.high]}


# ---------------------------------------------------------------- checkpoints


def _data_config(payload: dict[str, Any], path: Path, data_root: str | None) -> DataConfig:
    """The DataConfig the checkpoint was trained with (so 'val' is its held-out split)."""
    saved = payload.get("config")
    if isinstance(saved, dict) and isinstance(saved.get("data"), dict):
        cfg = from_dict(DataConfig, saved["data"], "data")
    else:
        spec = payload.get("model")
        name = spec.get("dataset") if isinstance(spec, dict) else None
        if not name:
            raise MtardError(
                f"{path} records neither its training config nor its data set: "
                f"it was not written by mtard (evaluate it with mtard.evaluate.evaluate_model)"
            )
        cfg = DataConfig(name=name)
    if data_root is not None:
        cfg.root = data_root
    return cfg


def _eps_of(payload: dict[str, Any]) -> float:
    saved = payload.get("config")
    if isinstance(saved, dict) and isinstance(saved.get("eval"), dict) and "eps" in saved["eval"]:
        return float(coerce(saved["eval"]["eps"], float, "config.eval.eps"))
    return REFERENCE_EPS


def evaluate_checkpoint(
    path: str | Path,
    *,
    split: str = "test",
    attacks: list[str] | None = None,
    eps: float | None = None,
    data_root: str | None = None,
    max_samples: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    out: str | Path | None = None,
    seed: int = 0,
    on_results: Callable[[list[AttackResult]], None] | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Evaluate an mtard checkpoint on its own data set and write the report as JSON.

    The data settings come from the checkpoint's saved config (same root, val_fraction
    and split_seed, hence the same validation split as training); without one, from the
    model spec's data set with default settings. `data_root` overrides the root (data
    moved since training). ε defaults to the config's ``eval.eps``, else 8/255.

    Returns ``{checkpoint, split, dataset, eps, samples, precision, torch, results}`` with
    `results` a list of `AttackResult` dicts (each naming the library that ran it), and writes it to
    `out` (default ``<checkpoint stem>.eval-<split>.json`` next to the checkpoint). The report's
    location is checked before any attack runs, and `on_results` (e.g. printing the table) gets the
    results before the report is written, so a failing write cannot lose them.
    """
    from mtard.checkpoint import read

    # Cheap user-input checks first: fail before loading anything large.
    if split not in SPLITS:
        raise MtardError(f"unknown split {split!r}: use 'val' (model selection) or 'test' (final report)")
    names = check_attacks(list(attacks) if attacks is not None else DEFAULT_ATTACKS)
    if eps is not None:
        check_eps(eps)
    check_precision(precision)
    path = Path(path)
    out_path = Path(out) if out is not None else path.with_name(f"{path.stem}.eval-{split}.json")
    _check_report_location(out_path)
    payload = read(path)
    eps = _eps_of(payload) if eps is None else eps
    model, dataset, dataset_name = _model_and_split(payload, path, split, data_root)
    setting = {"split": split, "dataset": dataset_name, "eps": eps, "precision": precision,
               "samples": min(max_samples, len(dataset)) if max_samples else len(dataset)}
    earlier = _earlier_results(out_path, setting, explicit=out is not None)
    results = evaluate_model(
        model,
        dataset,
        attacks=names,
        eps=eps,
        batch_size=batch_size,
        max_samples=max_samples,
        device=device,
        seed=seed,
        precision=precision,
    )
    report = {
        "checkpoint": str(path),
        "split": split,
        "dataset": dataset_name,
        "eps": eps,
        "samples": results[0].samples,
        "precision": precision,
        "torch": torch.__version__,
        "results": [_with_interval(r) for r in results],
    }
    if earlier:  # the same evaluation with other attacks: keep them (this run's result wins for a repeated attack)
        ran = {r["attack"] for r in report["results"]}
        report["results"] = [r for r in earlier if r.get("attack") not in ran] + report["results"]
    if on_results is not None:
        on_results(results)
    try:
        out_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    except OSError as err:
        raise MtardError(f"could not write the report {out_path} ({err.strerror}): free space there, or give --out another path") from err
    return {**report, "json": str(out_path)}


def _model_and_split(payload: dict, path: Path, split: str, data_root: str | None):
    """The checkpoint's model, the split it is evaluated on (with the data settings it was trained with) and
    that data set's name; a model whose classes or input size do not fit that data set is refused."""
    from mtard.checkpoint import model_from_payload
    from mtard.data import load_splits

    data_cfg = _data_config(payload, path, data_root)
    model = model_from_payload(payload, path)
    splits = load_splits(data_cfg)
    spec = payload.get("model", {})
    if spec.get("num_classes") not in (None, splits.info.num_classes):
        raise MtardError(
            f"{path}: the model has {spec['num_classes']} classes but {data_cfg.name} has "
            f"{splits.info.num_classes}: evaluate it on the data set it was trained for"
        )
    dataset = splits.val if split == "val" else splits.test
    _check_input_fits(model, dataset, path, data_cfg.name)
    return model, dataset, data_cfg.name


def _earlier_results(out_path: Path, setting: dict[str, Any], *, explicit: bool) -> list[dict]:
    """The results of an earlier report at `out_path` to keep beside this run's (merged by attack).

    An earlier report of the same evaluation (split, data set, ε, samples, precision) is merged;
    one of another evaluation is refused at the default path (its numbers would be lost), and
    replaced only at a path the user named with --out.
    """
    if not out_path.is_file():
        return []
    try:
        earlier = json.loads(out_path.read_text())
        same = all(earlier.get(k) == v for k, v in setting.items())
        results = [r for r in earlier["results"] if isinstance(r, dict)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        same, results = False, []
    if same:
        return results
    if explicit:
        return []
    raise MtardError(
        f"{out_path} already holds another evaluation of this checkpoint (not {', '.join(f'{k}={v}' for k, v in setting.items())}): "
        f"give --out another path to keep both, or delete it"
    )


def _check_input_fits(model: nn.Module, dataset: Dataset, path: Path, data_name: str) -> None:
    """One image through the model before any attack: a recorded spec that does not fit the data set
    (e.g. its image_size) fails here with one line instead of inside an attack."""
    x = dataset[0][0].unsqueeze(0)
    try:
        with torch.no_grad():
            model.eval()(x)
    except RuntimeError as err:
        raise MtardError(
            f"{path}: its model cannot take {data_name} images of shape {tuple(x.shape[1:])} "
            f"({str(err).splitlines()[0]}): its recorded spec (in_channels, image_size) does not fit this data set; "
            f"evaluate it on the data set it was trained for"
        ) from err


def _check_report_location(out_path: Path) -> None:
    """Fail before the attacks (minutes to hours), not after them, when the report cannot be written."""
    if out_path.is_dir():
        raise MtardError(f"report path {out_path} is a folder: give --out a file name, e.g. {out_path / 'eval.json'}")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MtardError(f"cannot create the report folder {out_path.parent} ({err.strerror}): give --out a writable path") from err
    if not os.access(out_path.parent, os.W_OK | os.X_OK) or (out_path.exists() and not os.access(out_path, os.W_OK)):
        raise MtardError(f"cannot write the report {out_path} (permission denied): give --out a writable path")

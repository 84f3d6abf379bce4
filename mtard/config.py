"""Training configuration: a dataclass tree loaded from YAML.

One `TrainConfig` describes one training run completely. Every knob of the
reference algorithm is a field whose default is the official value
(docs/algorithm.md); bundled configs in `mtard/configs/` override
what a data set needs (e.g. ε on 8×8 digits).

A search parameter is just a dotted path into this tree (`optim.lr`,
`balance.tau_lr`, `teachers.robust`), so `set_path` is the only way a search
changes a config, and it goes through the same type checks as YAML and `--set`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mtard.errors import MtardError
from mtard.storage import check_folder_name

DatasetName = Literal["digits", "cifar10", "cifar100"]
MethodName = Literal["natural", "sat", "trades", "ard", "rslad", "mtard"]
# The teacher roles each method distils from (the one definition: validation, loop and search read it).
NEEDS_TEACHERS: dict[str, tuple[str, ...]] = {
    "natural": (), "sat": (), "trades": (), "ard": ("robust",), "rslad": ("robust",), "mtard": ("clean", "robust"),
}
AttackStart = Literal["method", "gaussian", "uniform", "uniform_unclamped", "zero"]
Placement = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]

BUNDLED_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    name: DatasetName = "cifar10"
    root: str = "data"  # CIFAR lives here in torchvision's layout
    download: bool = True  # try to download CIFAR when missing (fails offline, clearly)
    val_fraction: float = 0.1  # carved from the training set, seeded
    split_seed: int = 0
    batch_size: int = 128  # global: divided among Ray Train workers
    augment: bool = True  # CIFAR: RandomCrop(32, 4) + flip; digits: none
    num_workers: int = 0  # DataLoader worker processes per training worker


@dataclass
class StudentConfig:
    arch: str = "resnet18"


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    epochs: int = 300
    milestones: list[int] = field(default_factory=lambda: [215, 260, 285])
    gamma: float = 0.1  # lr multiplier at each milestone
    # "compound": lr × gamma at every milestone. "once": every milestone sets lr × gamma, so only the
    # first one changes anything — the official ARD code's bug (its [100, 150] is one decay at 100).
    milestone_decay: Literal["compound", "once"] = "compound"
    # "all" parameters (official MTARD, TRADES, ARD), or "weights": conv and linear weights only, no
    # biases or BN scales/shifts (Madry's cifar10_challenge).
    weight_decay_on: Literal["all", "weights"] = "all"


@dataclass
class AttackConfig:
    """The training-time attack (inner maximisation), L∞."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    # "method": each method's official start (MTARD/RSLAD/TRADES gaussian 0.001, SAT uniform, ARD uniform unclamped)
    start: AttackStart = "method"
    # The student's BN mode during the attack. "method": train for ARD (its official attack), eval for
    # the others; "train" for SAT as Madry ran it. Train-mode attack forwards also update BN running
    # statistics, as ARD's official (PyTorch) attack does.
    bn_mode: Literal["method", "eval", "train"] = "method"


@dataclass
class BalanceConfig:
    """MTARD's two controllers (B-MTARD defaults)."""

    learn_temperature: bool = True  # False = the ECCV MTARD (τ fixed at the init values)
    tau_nat_init: float = 1.0
    tau_adv_init: float = 1.0
    tau_lr: float = 1e-3
    tau_min: float = 1.0
    tau_max: float = 10.0
    w_nat_init: float = 0.5
    w_lr: float = 0.025
    alpha: float = 1.0
    decay_with_lr: bool = True  # tau_lr and w_lr are multiplied by optim.gamma at optim.milestones


@dataclass
class MethodConfig:
    name: MethodName = "mtard"
    kl_scale: float = 1.0  # official: 10 on CIFAR-100 (MTARD, RSLAD)
    trades_beta: float = 6.0
    ard_temperature: float = 30.0
    ard_alpha: float = 1.0
    rslad_adv_weight: float = 5 / 6  # the clean term gets 1 - this


@dataclass
class TeachersConfig:
    clean: str = ""  # a name in the teacher catalog (distillation methods only)
    robust: str = ""  # a catalog name, or rb:<ModelID> from the RobustBench zoo
    catalog: str = ""  # "" = the catalog shipped with mtard
    robustbench_dir: str = ""  # an existing RobustBench models/ folder; "" = $MTARD_TEACHERS/robustbench
    # Set by `mtard search` / `mtard train --workers`, not by hand: where the driver staged the teachers
    # (<storage>/teachers) and the sha256 of each teacher name there; each node fetches its own copy.
    staged_store: str = ""
    staged: dict = field(default_factory=dict)


@dataclass
class EvalConfig:
    """Per-epoch validation: clean accuracy and PGD accuracy ("SAT" setting by default).

    Always on the validation split (there is no field to choose another: selecting on the test
    split would make the reported test numbers optimistic). `select` says which epoch the run
    stands for: "last" (default) or "best" by `select_criterion` among the candidate epochs —
    every `select_every` epochs before the first lr milestone, every epoch from it on, and the
    final epoch (the official B-MTARD schedule is 20 / from epoch 215, on the *test* set there).
    """

    eps: float = 8 / 255
    pgd_steps: int = 20
    pgd_step_size: float = 2 / 255
    max_samples: int = 0  # 0 = the whole validation split
    batch_size: int = 256
    # "last" by default: a search budget is a proxy whose last epoch is what the budget trained,
    # and picking the best of many epochs on the split the objectives are read from inflates them.
    select: Literal["last", "best"] = "last"
    select_criterion: Literal["mean", "clean", "pgd"] = "mean"  # mean = (clean + PGD)/2, the official criterion
    select_every: int = 20
    # Validation PGD under bf16 autocast (CUDA). Off: a low-precision gradient can weaken the attack
    # and inflate the robust accuracy that ranks trials; the official runs are fp32.
    bf16: bool = False


@dataclass
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False  # autocast to bfloat16 on CUDA
    channels_last: bool = False  # NHWC memory format on CUDA
    seed: int = 0
    threads: int = 0  # torch intra-op threads per worker, 0 = torch's default
    progress: bool = True
    # The loop reads its divergence flag on the host every this many steps (and at each epoch's end):
    # a host read waits for the GPU's queue, so 1 (a read per step) stalls every step.
    divergence_check_every: int = 50
    compile: bool = False  # torch.compile the student and the teachers (off until measured on a GPU)


@dataclass
class ScalingConfig:
    """Ray Train resources for one run (ignored by the plain single-process trainer)."""

    workers: int = 1
    gpus_per_worker: float = 0.0  # fractions allowed: several small students share a GPU
    cpus_per_worker: float = 1.0
    placement_strategy: Placement = "PACK"
    accelerator_type: str = ""  # e.g. "A100"; "" = any
    resources: dict = field(default_factory=dict)  # extra custom resources per worker, e.g. {FAKE_GPU: 1}
    max_failures: int = 2  # worker-group restarts from the last checkpoint
    # With several CUDA workers the student's BN layers become SyncBatchNorm (statistics over the
    # global batch, as on one worker). CPU/gloo keeps per-worker BN: torch's SyncBatchNorm is CUDA-only.
    sync_batchnorm: bool = True


@dataclass
class TrainConfig:
    name: str = "train"
    out_dir: str = "runs"  # results go to <out_dir>/<name>/
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


# ---------------------------------------------------------------- typed conversion


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fraction(text: str) -> float | None:
    """'8/255' -> 0.0313...: ε values are written that way in papers.

    Also '1e-4': YAML 1.1 (PyYAML) reads exponents without a dot as strings.
    """
    num, sep, den = text.partition("/")
    if not sep:
        try:
            return float(text)
        except ValueError:
            return None
    try:
        return float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        return None


FLOAT32_MAX = 3.4028234663852886e38


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` to type `tp` or raise MtardError naming `where`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise MtardError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except MtardError as err:
                errors.append(str(err))
        raise MtardError(errors[0])
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise MtardError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise MtardError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise MtardError(f"{where}: expected a mapping of fields, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise MtardError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise MtardError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
        elif isinstance(value, str) and _fraction(value) is not None:
            out = _fraction(value)
        else:
            raise MtardError(f"{where}: expected a number (e.g. 0.1 or 8/255), got {value!r}")
        if not math.isfinite(out):
            raise MtardError(f"{where}: must be finite, got {value!r}")
        if abs(out) > FLOAT32_MAX:  # torch would fail deep inside (e.g. SGD's update) instead of saying why
            raise MtardError(f"{where}: {value!r} is beyond the float32 range that training computes in (±3.4e38): give a realistic value")
        return out
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise MtardError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {where}")  # a bug in this module


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys are rejected with the valid ones."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        prefix = "" if where == "config" else f"{where}."
        raise MtardError(
            f"unknown field {prefix}{unknown[0]} in {where}; valid fields: {', '.join(sorted(types_))}"
        )
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise MtardError(f"{where}: missing field {missing[0]} (required: {', '.join(required)})")
    kwargs = {}
    for name, value in data.items():
        path = name if where == "config" else f"{where}.{name}"
        kwargs[name] = coerce(value, types_[name], path)
    return cls(**kwargs)


# ---------------------------------------------------------------- dotted paths


def get_path(cfg: Any, path: str) -> Any:
    obj = cfg
    for part in path.split("."):
        if not dataclasses.is_dataclass(obj) or part not in _field_types(type(obj)):
            raise MtardError(f"unknown config field {path!r}; see `mtard train --help-fields`")
        obj = getattr(obj, part)
    return obj


def set_path(cfg: Any, path: str, value: Any) -> None:
    """Set a dotted field with the same type checks as YAML (in place)."""
    *parents, leaf = path.split(".")
    obj = cfg
    for part in parents:  # name the whole path in errors, not just the failing part
        if not dataclasses.is_dataclass(obj) or part not in _field_types(type(obj)):
            raise MtardError(f"unknown config field {path!r}; see `mtard train --help-fields`")
        obj = getattr(obj, part)
    if not dataclasses.is_dataclass(obj) or leaf not in _field_types(type(obj)):
        raise MtardError(f"unknown config field {path!r}; see `mtard train --help-fields`")
    setattr(obj, leaf, coerce(value, _field_types(type(obj))[leaf], path))


def field_paths(cls: type = TrainConfig, prefix: str = "") -> dict[str, Any]:
    """Every leaf field as 'a.b' -> type (for help text and search-space validation)."""
    out: dict[str, Any] = {}
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(field_paths(tp, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = tp
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=0.05' -> ('optim.lr', 0.05); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise MtardError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optim.lr=0.05")
    try:
        value = parse_yaml(raw) if raw != "" else ""
    except yaml.constructor.ConstructorError as err:
        raise MtardError(f"--set {text!r}: {err.problem}") from err
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


# ---------------------------------------------------------------- files


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A file path, or the name of a bundled config (`digits_mtard`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = BUNDLED_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml")))
    raise MtardError(f"config {str(name_or_path)!r} not found: give a YAML file path or a bundled config ({names})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently:
    a config with `lr` twice would train with whichever came last, without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}): keep one", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """The one YAML parser of mtard (files, --set values): safe, and a key given twice is an error."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path) -> dict:
    """A YAML file holding a mapping; every problem (syntax, a duplicate key, emptiness, encoding) is one MtardError."""
    try:
        data = parse_yaml(path.read_text())
    except yaml.constructor.ConstructorError as err:
        raise MtardError(f"{path}: {err.problem}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MtardError(f"{path}: malformed YAML{at}: {getattr(err, 'problem', err)}") from err
    except UnicodeDecodeError as err:
        raise MtardError(f"{path} is not a UTF-8 text file (byte {err.start} is not valid UTF-8): give a YAML file saved as UTF-8") from err
    except OSError as err:
        raise MtardError(f"cannot read {path}: {err.strerror}") from err
    if data is None:
        raise MtardError(f"{path} is empty: give it at least one setting (e.g. `base: digits`), or name a bundled config instead")
    if not isinstance(data, dict):
        raise MtardError(f"{path}: expected a mapping of config sections at the top level")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(name_or_path: str | Path, _seen: tuple = ()) -> dict:
    """Read a config file, resolving `base:` (a path relative to the file, or a bundled name)."""
    path = resolve_config_path(name_or_path).resolve()
    if path in _seen:
        raise MtardError(f"{path}: `base:` chain loops back to itself")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    candidate = path.parent / str(base)
    base_ref = candidate if candidate.is_file() else str(base)
    return _merge(load_raw(base_ref, _seen + (path,)), data)


def load_config(name_or_path: str | Path, overrides: list[str] | None = None, values: dict[str, Any] | None = None) -> TrainConfig:
    """The file, then `overrides` ('KEY=VALUE' text, as --set), then typed `values` (command-line flags), validated once."""
    cfg = config_from_dict(load_raw(name_or_path))
    for text in overrides or []:
        set_path(cfg, *parse_override(text))
    for path, value in (values or {}).items():
        set_path(cfg, path, value)
    validate_config(cfg)
    return cfg


def config_from_dict(data: dict) -> TrainConfig:
    return from_dict(TrainConfig, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------- validation


# Inputs are images in [0, 1]: an L∞ radius above 1 allows any image at all (0 % robust accuracy, no
# information), and is nearly always a radius in pixel levels meant as levels/255.
EPS_FIX = "images are in [0, 1], so write ε as a fraction, e.g. 8/255 (not 8)"


def _check(ok: bool, field_path: str, message: str) -> None:
    if not ok:
        raise MtardError(f"{field_path}: {message}")


def check_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float, custom: dict, *, where: str, custom_where: str) -> None:
    """The one rule for what each worker of a run reserves, for a config's `scaling.*` and a search
    space's `resources:` alike; the error names `<where>.<field>` or `<custom_where>.<resource>`.

    A custom resource must be a number > 0: listing one says the worker needs some of it, so a 0
    (which asks for nothing) is a mistake to point at, not a request to pass on to Ray.
    """
    _check(workers >= 1, f"{where}.workers", f"must be >= 1, got {workers}")
    _check(cpus_per_worker > 0, f"{where}.cpus_per_worker", f"must be > 0, got {cpus_per_worker}")
    _check(gpus_per_worker >= 0 and (gpus_per_worker <= 1 or float(gpus_per_worker).is_integer()),
           f"{where}.gpus_per_worker", f"must be >= 0, and a whole number above 1 (got {gpus_per_worker})")
    for name, amount in custom.items():
        _check(isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount > 0,
               f"{custom_where}.{name}", f"must be a number > 0, got {amount!r}")


def validate_config(cfg: TrainConfig) -> None:
    """Range checks that types cannot express; each names the field and the fix.

    Every field with a limited range is checked here, before any work starts: a value
    that fails later (at the first validation, after an epoch) would lose that epoch.
    """
    check_folder_name(cfg.name, "name")
    _check(0 < cfg.data.val_fraction < 1, "data.val_fraction", "must be in (0, 1), e.g. 0.1")
    _check(cfg.data.batch_size >= 1, "data.batch_size", "must be >= 1")
    _check(cfg.data.num_workers >= 0, "data.num_workers", "must be >= 0")
    _check(cfg.optim.lr > 0, "optim.lr", "must be > 0")
    _check(cfg.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _check(0 <= cfg.optim.momentum < 1, "optim.momentum", "must be in [0, 1)")
    _check(cfg.optim.epochs >= 1, "optim.epochs", "must be >= 1")
    _check(cfg.optim.milestones == sorted(cfg.optim.milestones), "optim.milestones", "must be increasing")
    _check(all(m >= 1 for m in cfg.optim.milestones), "optim.milestones", "epochs count from 1: every milestone must be >= 1")
    _check(not cfg.optim.nesterov or cfg.optim.momentum > 0, "optim.nesterov", "needs optim.momentum > 0")
    _check(0 < cfg.optim.gamma <= 1, "optim.gamma", "must be in (0, 1]")
    _check(0 <= cfg.attack.eps <= 1, "attack.eps", f"must be in [0, 1], got {cfg.attack.eps}: {EPS_FIX}")
    _check(cfg.attack.step_size > 0, "attack.step_size", "must be > 0")
    _check(cfg.attack.steps >= 1, "attack.steps", "must be >= 1")
    b = cfg.balance
    _check(0 < b.tau_min <= b.tau_max, "balance.tau_min", "must satisfy 0 < tau_min <= tau_max")
    for name in ("tau_nat_init", "tau_adv_init"):
        value = getattr(b, name)
        _check(b.tau_min <= value <= b.tau_max, f"balance.{name}", f"{value} is outside [tau_min, tau_max] = [{b.tau_min}, {b.tau_max}]")
    _check(0 <= b.w_nat_init <= 1, "balance.w_nat_init", "must be in [0, 1]")
    _check(b.tau_lr >= 0, "balance.tau_lr", "must be >= 0")
    _check(b.w_lr >= 0, "balance.w_lr", "must be >= 0")
    _check(b.alpha > 0, "balance.alpha", "must be > 0")
    _check(cfg.method.kl_scale > 0, "method.kl_scale", "must be > 0")
    _check(cfg.method.ard_temperature > 0, "method.ard_temperature", "must be > 0")
    _check(cfg.method.trades_beta >= 0, "method.trades_beta", "must be >= 0")
    _check(0 <= cfg.method.ard_alpha <= 1, "method.ard_alpha", "must be in [0, 1]")
    _check(0 <= cfg.method.rslad_adv_weight <= 1, "method.rslad_adv_weight", "must be in [0, 1]")
    for role in NEEDS_TEACHERS[cfg.method.name]:
        _check(bool(getattr(cfg.teachers, role)), f"teachers.{role}", f"method {cfg.method.name} needs a {role} teacher; see `mtard teachers list`")
    _check(0 <= cfg.eval.eps <= 1, "eval.eps", f"must be in [0, 1], got {cfg.eval.eps}: {EPS_FIX}")
    _check(cfg.eval.pgd_steps >= 0, "eval.pgd_steps", "must be >= 0")
    _check(cfg.eval.pgd_step_size > 0, "eval.pgd_step_size", "must be > 0, e.g. 2/255")
    _check(cfg.eval.max_samples >= 0, "eval.max_samples", "must be >= 0 (0 = whole split)")
    _check(cfg.eval.batch_size >= 1, "eval.batch_size", "must be >= 1")
    _check(cfg.runtime.threads >= 0, "runtime.threads", "must be >= 0 (0 = torch's default)")
    _check(cfg.runtime.divergence_check_every >= 1, "runtime.divergence_check_every", "must be >= 1 (steps between host reads)")
    _check(cfg.eval.select_every >= 1, "eval.select_every", "must be >= 1 (1 = every epoch is a candidate)")
    if cfg.eval.select == "best" and cfg.eval.select_criterion != "clean":
        _check(cfg.eval.pgd_steps > 0, "eval.select_criterion", f"{cfg.eval.select_criterion!r} needs PGD accuracy: set eval.pgd_steps > 0 or select_criterion: clean")
    s = cfg.scaling
    check_resources(s.workers, s.cpus_per_worker, s.gpus_per_worker, s.resources, where="scaling", custom_where="scaling.resources")
    _check(s.max_failures >= -1, "scaling.max_failures", "must be >= 0, or -1 for unlimited restarts")
    _check(cfg.data.batch_size >= s.workers, "data.batch_size", f"is global and must be >= scaling.workers ({s.workers})")

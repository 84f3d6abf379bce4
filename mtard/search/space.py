"""Search spaces: YAML data -> a validated `SearchSpace` -> an Optuna define-by-run function.

A search space file (see `search_spaces/*.yaml`) looks like this; every key but
`base` and `space` is optional and shown with its default:

```yaml
base: digits_mtard            # bundled config name, or a path (relative to this file)
set: {}                       # fixed overrides, dotted paths: {attack.steps: 3, eval.max_samples: 200}
objectives:                   # 1 or 2; `label` defaults to one that names the attack
  - {metric: val_clean_acc, direction: max}
  - {metric: val_pgd_acc, direction: max}
sampler: {name: tpe, seed: 0} # tpe | nsga2 | random | gp; other keys go to the Optuna sampler
                              # (e.g. n_startup_trials: 4, population_size: 8 for nsga2)
num_samples: 12               # trials in all, the defaults trial included
max_concurrent: null          # null: as many as the cluster's CPUs/GPUs fit (see run.py)
resources:                    # per trial worker (mtard.search.resources)
  workers: 1                  # 1: a direct trial (the epoch loop runs in the trial's own process);
                              # > 1: a Ray Train run of that many DDP workers per trial
  cpus_per_worker: 1
  gpus_per_worker: 0          # fractions allowed (0.5: two trials share a GPU)
  accelerator_type: ""        # e.g. A100; "" = any
  custom: {}                  # extra custom resources per worker, e.g. {FAKE_GPU: 1}
  ray_train: false            # true: one worker through Ray Train too (rehearses a multi-worker search)
budget:
  epochs: <base optim.epochs> # every trial trains this many epochs (sets optim.epochs)
  scale_milestones: false     # true: scale optim.milestones by epochs / base epochs (proxy budgets)
  time_budget_s: null         # wall-clock limit of the whole search (Tune's time_budget_s)
  total: null                 # {device_hours: 2.5} or {epochs: 200}: what all trials together may spend;
                              # no trial starts that could pass it (mtard.search.budget)
scheduler: {name: none}       # or {name: moasha, eta: 3, rungs: [1, 3]} (or min_epochs: 1 instead of
                              # rungs: rungs at 1, 3, 9, ... below the budget): stop trials dominated
                              # on both objectives at a rung (mtard.search.rung_rule); rungs < budget.epochs
enqueue_defaults: true        # trial 0 = the base config's value of every searched field
stop: {}                      # {hypervolume_plateau: {window: 10, min_improvement: 0.01, min_trials: 10}}:
                              # no new trial once W finished trials raised the front's hypervolume by
                              # less than the fraction X (after M full-budget trials; mtard.search.budget)
space:                        # dotted config path -> one distribution
  optim.lr: {loguniform: [0.01, 0.2]}           # low > 0
  attack.steps: {int: [3, 10], step: 1, log: false}   # both ends included
  balance.w_nat_init: {uniform: [0.3, 0.7], step: 0.1}  # step optional
  teachers.clean: {choice: [digits_cnn_clean, digits_mlp_clean]}  # scalars only
  balance.learn_temperature: {choice: [true, false]}
  balance.tau_max: {uniform: [2, 10], when: {balance.learn_temperature: true}}
  # `when`: sample only if every named (searched, `choice`) parameter has that value, or one
  # of a list of values: when: {method.name: [mtard, rslad]}. Otherwise the parameter is
  # absent from the trial (Optuna's conditional parameters) and the base value is used.
```

Everything is checked when the file is loaded, before Ray or any training starts, and
every error names the field: unknown keys, unknown config paths, fields the search owns
(`optim.epochs` is `budget.epochs`, `scaling.*` is `resources`), fields that define the
objectives (`eval.*`, the validation split) in `space`, impossible ranges, choices that do
not convert to the field's type, values that make an invalid config (each range end and
each choice is tried on the base config), teachers that are unknown or of the wrong data
set/role, unknown samplers or sampler options, and `when` clauses that refer to a
parameter that is not searched or to a value it cannot take.

A trial's config = base config + `set` + budget + resources + the trial's parameters,
validated like any config (`SearchSpace.trial_config`).
"""

from __future__ import annotations

import copy
import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtard.config import (
    NEEDS_TEACHERS,
    TrainConfig,
    check_resources,
    coerce,
    config_from_dict,
    field_paths,
    get_path,
    load_raw,
    read_yaml,
    resolve_config_path,
    set_path,
    validate_config,
)
from mtard.errors import MtardError
from mtard.runs import EPOCH_METRICS
from mtard.search.budget import UNITS, Plateau, SearchLimits
from mtard.search.records import Objective
from mtard.text import format_eps

KINDS = ("loguniform", "uniform", "int", "choice")
SAMPLERS = ("tpe", "nsga2", "random", "gp")
TOP_KEYS = (
    "base", "set", "objectives", "sampler", "num_samples", "max_concurrent",
    "resources", "budget", "scheduler", "enqueue_defaults", "stop", "space",
)
SCHEDULERS = ("none", "moasha")
SCHEDULER_KEYS = ("name", "eta", "rungs", "min_epochs")
RESOURCE_KEYS = {
    "workers": int, "cpus_per_worker": float, "gpus_per_worker": float, "accelerator_type": str, "custom": dict,
    "ray_train": bool,
}
BUDGET_KEYS = ("epochs", "scale_milestones", "time_budget_s", "total")
STOP_KEYS = ("hypervolume_plateau",)
PLATEAU_DEFAULTS = {"window": 10, "min_improvement": 0.01, "min_trials": 10}
KNOWN_METRICS = EPOCH_METRICS  # what an objective may name: every trial reports these every epoch
DEFAULT_OBJECTIVES = ({"metric": "val_clean_acc", "direction": "max"}, {"metric": "val_pgd_acc", "direction": "max"})

# Fields the search itself owns: where to set them instead.
_USE_RESOURCES = "use `resources:` (workers, cpus_per_worker, gpus_per_worker, accelerator_type, custom)"
OWNED = {
    "name": "the experiment is named by --name; trials by their id",
    "out_dir": "results go to --storage",
    "optim.epochs": "use budget.epochs",
    **{f"scaling.{k}": _USE_RESOURCES for k in ("workers", "cpus_per_worker", "gpus_per_worker", "accelerator_type", "resources")},
}
# Fields that define what the objectives measure: fixed for a whole search (`set` is fine).
NOT_SEARCHABLE_PREFIXES = ("eval.",)
NOT_SEARCHABLE = ("data.name", "data.val_fraction", "data.split_seed", "teachers.catalog", "data.root")


# ---------------------------------------------------------------- small pieces


@dataclass(frozen=True)
class Param:
    """One searched field and its distribution."""

    path: str
    kind: str  # loguniform | uniform | int | choice
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()  # AND over (param path, allowed values)

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.path, float(self.low), float(self.high), step=self.step, log=self.kind == "loguniform")

    def active(self, values: dict) -> bool:
        """Is this parameter sampled, given the values of the parameters sampled before it?"""
        return all(path in values and values[path] in allowed for path, allowed in self.when)

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return any(_same(value, c) for c in self.choices)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def probes(self) -> list:
        """Values tried on the base config at load time: both range ends, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def to_yaml(self) -> dict:
        out: dict[str, Any] = {self.kind: list(self.choices) if self.kind == "choice" else [self.low, self.high]}
        if self.step is not None:
            out["step"] = self.step
        if self.kind == "int" and self.log:
            out["log"] = True
        if self.when:
            out["when"] = {p: (list(v) if len(v) > 1 else v[0]) for p, v in self.when}
        return out


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1 (both are valid, different choices)."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def default_label(metric: str, cfg: TrainConfig) -> str:
    e = cfg.eval
    if metric == "val_clean_acc":
        return "val clean accuracy"
    if metric == "val_pgd_acc":
        return f"val PGD-{e.pgd_steps} accuracy (L∞ ε={format_eps(e.eps)}, step {format_eps(e.pgd_step_size)})"
    return metric


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MtardError(f"{where}: expected a mapping, got {value!r}")
    return value


def _unknown_keys(data: dict, allowed, where: str) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise MtardError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(allowed)}")


def _number(value: Any, where: str, *, integer: bool = False) -> float | int:
    return coerce(value, int if integer else float, where)


# ---------------------------------------------------------------- the space


@dataclass
class SearchSpace:
    source: Path | None
    base: str  # as written (name or path)
    base_config: TrainConfig  # the base config exactly as loaded (before set / budget / resources)
    fixed: dict  # `set:` (coerced values)
    objectives: list[Objective]
    sampler: dict  # {"name": ..., "seed": ..., **options}
    num_samples: int
    max_concurrent: int | None
    resources: dict  # workers, cpus_per_worker, gpus_per_worker, accelerator_type
    budget: dict  # epochs, scale_milestones, time_budget_s, total ({unit: amount} or None)
    scheduler: dict  # {"name": "none"} or {"name": "moasha", "eta": int, "rungs": [epochs]}
    enqueue_defaults: bool
    params: list[Param] = field(default_factory=list)  # sampling order (conditions first)
    stop: dict = field(default_factory=dict)  # {} or {"hypervolume_plateau": {window, min_improvement, min_trials}}

    # -------- what a trial trains

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def param_paths(self) -> list[str]:
        return [p.path for p in self.params]

    def limits(self) -> SearchLimits:
        """`budget.total` and `stop:` as the rule that decides whether another trial starts."""
        total = self.budget.get("total")
        plateau = self.stop.get("hypervolume_plateau")
        unit, amount = next(iter(total.items())) if total else ("epochs", None)
        return SearchLimits(total=amount, unit=unit, plateau=Plateau(**plateau) if plateau else None)

    def fixed_config(self) -> TrainConfig:
        """Base + set + budget + resources: what every trial starts from."""
        cfg = copy.deepcopy(self.base_config)
        base_epochs = cfg.optim.epochs
        for path, value in self.fixed.items():
            set_path(cfg, path, value)
        epochs = int(self.budget["epochs"])
        cfg.optim.epochs = epochs
        if self.budget["scale_milestones"] and base_epochs != epochs:
            scaled = sorted({max(1, round(m * epochs / base_epochs)) for m in cfg.optim.milestones})
            cfg.optim.milestones = [m for m in scaled if m < epochs]
        r = self.resources
        cfg.scaling.workers = int(r["workers"])
        cfg.scaling.cpus_per_worker = float(r["cpus_per_worker"])
        cfg.scaling.gpus_per_worker = float(r["gpus_per_worker"])
        cfg.scaling.accelerator_type = str(r["accelerator_type"])
        cfg.scaling.resources = dict(r["custom"])
        return cfg

    def trial_config(self, params: dict, *, name: str = "trial") -> TrainConfig:
        """The full TrainConfig of one trial (validated)."""
        cfg = self.fixed_config()
        for path, value in params.items():
            if path not in self.param_paths:
                raise MtardError(f"trial parameter {path!r} is not in the search space ({', '.join(self.param_paths)})")
            set_path(cfg, path, value)
        cfg.name = name
        cfg.runtime.progress = False  # a progress bar per trial worker is noise in the search log
        if cfg.runtime.threads == 0 and cfg.scaling.gpus_per_worker == 0:
            # CPU trials share the machine: one torch thread per reserved CPU, not one per core.
            cfg.runtime.threads = max(1, int(cfg.scaling.cpus_per_worker))
        validate_config(cfg)
        return cfg

    # -------- Optuna

    def define_by_run(self, trial) -> None:
        """Optuna define-by-run: suggest every active parameter (Ray's OptunaSearch captures them)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.path] = p.suggest(trial)

    def default_point(self) -> dict:
        """The official-defaults trial: the base (+ set) value of every active searched field."""
        cfg = self.fixed_config()
        point: dict[str, Any] = {}
        for p in self.params:
            if p.active(point):
                point[p.path] = get_path(cfg, p.path)
        return point

    def make_sampler(self):
        return build_sampler(self.sampler)

    # -------- teachers

    def teacher_names(self) -> list[tuple[str, str]]:
        """Every (teachers.<role>, name) some trial can use: train them before the search starts."""
        cfg = self.fixed_config()
        methods = self._values("method.name", cfg)
        roles = sorted({role for m in methods for role in NEEDS_TEACHERS[m]})
        out = []
        for role in roles:
            for name in self._values(f"teachers.{role}", cfg):
                if name and (f"teachers.{role}", name) not in out:
                    out.append((f"teachers.{role}", name))
        return out

    def _values(self, path: str, cfg: TrainConfig) -> list:
        for p in self.params:
            if p.path == path:
                values = list(p.choices)
                if p.when:  # when inactive, the base value is used
                    values.append(get_path(cfg, path))
                return list(dict.fromkeys(values))
        return [get_path(cfg, path)]

    # -------- saving

    def to_yaml_dict(self, base: str | None = None) -> dict:
        return {
            "base": base if base is not None else self.base,
            "set": dict(self.fixed),
            "objectives": [
                {"metric": o.metric, "direction": o.direction, "label": o.label}
                | ({"reference": o.reference} if o.reference is not None else {})
                for o in self.objectives
            ],
            "sampler": dict(self.sampler),
            "num_samples": self.num_samples,
            "max_concurrent": self.max_concurrent,
            "resources": dict(self.resources),
            "budget": dict(self.budget),
            "scheduler": dict(self.scheduler),
            "enqueue_defaults": self.enqueue_defaults,
            "stop": dict(self.stop),
            "space": {p.path: p.to_yaml() for p in self.params},
        }


# ---------------------------------------------------------------- loading


DEFAULT_SPACE = "digits_tiny"
# Where a space given by name is looked for, in order: ./search_spaces (the user's own), the
# source checkout's search_spaces/ (editable installs), the copy a wheel ships as mtard/search_spaces.
SPACE_FOLDERS = (
    Path("search_spaces"),
    Path(__file__).resolve().parents[2] / "search_spaces",
    Path(__file__).resolve().parents[1] / "search_spaces",
)


def find_space(name_or_path: str | Path | None) -> Path:
    """A YAML path, or the name of a space in one of SPACE_FOLDERS (default: digits_tiny)."""
    given = Path(name_or_path or DEFAULT_SPACE)
    if given.is_file():
        return given
    stem = given.name.removesuffix(".yaml")
    for folder in SPACE_FOLDERS:
        candidate = folder / f"{stem}.yaml"
        if candidate.is_file() and (given.parent == Path(".") or not given.suffix):
            return candidate
    known = sorted({p.stem for folder in SPACE_FOLDERS if folder.is_dir() for p in folder.glob("*.yaml")})
    raise MtardError(f"search space {str(given)!r} not found: give a YAML file or one of: {', '.join(known) or '(none found)'}")


def load_space(path: str | Path | None) -> SearchSpace:
    """Read and validate a search space file (see `find_space`)."""
    path = find_space(path)
    return parse_space(read_yaml(path), source=path)


def parse_space(data: dict, *, source: Path | None = None) -> SearchSpace:
    where = source.name if source else "space"
    _unknown_keys(data, TOP_KEYS, where)
    if "base" not in data:
        raise MtardError(f"{where}: `base:` is required (a bundled config such as digits_mtard, or a config file)")
    base = str(data["base"])
    base_ref: str | Path = base
    if source is not None and (source.parent / base).is_file():
        base_ref = source.parent / base
    resolve_config_path(base_ref)  # a clear error for a missing base
    base_cfg = config_from_dict(load_raw(base_ref))

    space = SearchSpace(
        source=source,
        base=base,
        base_config=base_cfg,
        fixed=_parse_set(_mapping(data.get("set"), "set"), base_cfg),
        objectives=[],
        sampler=_parse_sampler(data.get("sampler")),
        num_samples=_positive_int(data.get("num_samples", 12), "num_samples"),
        max_concurrent=None if data.get("max_concurrent") is None else _positive_int(data["max_concurrent"], "max_concurrent"),
        resources=_parse_resources(_mapping(data.get("resources"), "resources"), base_cfg),
        budget=(budget := _parse_budget(_mapping(data.get("budget"), "budget"), base_cfg)),
        scheduler=_parse_scheduler(_mapping(data.get("scheduler"), "scheduler"), budget["epochs"]),
        enqueue_defaults=coerce(data.get("enqueue_defaults", True), bool, "enqueue_defaults"),
    )
    fixed_cfg = space.fixed_config()
    try:
        validate_config(fixed_cfg)
    except MtardError as err:
        raise MtardError(f"{where}: the base config with `set`, budget and resources is invalid: {err}") from err
    space.objectives = _parse_objectives(data.get("objectives"), fixed_cfg)
    space.stop = _parse_stop(_mapping(data.get("stop"), "stop"), space.objectives)
    space.params = _parse_params(_mapping(data.get("space"), "space"), space)
    _check_probes(space)
    _check_teachers(space)
    if space.enqueue_defaults:
        _check_default_point(space)
    return space


def _positive_int(value: Any, where: str) -> int:
    n = _number(value, where, integer=True)
    if n < 1:
        raise MtardError(f"{where}: must be >= 1, got {value!r}")
    return n


def _check_writable_path(path: str, where: str) -> None:
    if path not in field_paths():
        raise MtardError(f"{where}: unknown config field {path!r}; see `mtard train --help-fields`")
    if path in OWNED:
        raise MtardError(f"{where}: {path} is set by the search ({OWNED[path]})")


def _as_config_holds(base_cfg: TrainConfig, path: str, value: Any, where: str = "") -> Any:
    """`value` as config field `path` holds it (parsed and typed as `set_path` does), through a copy
    of `base_cfg`; the error of a value the field refuses starts with `where` when given."""
    probe = copy.deepcopy(base_cfg)
    try:
        set_path(probe, path, value)
    except MtardError as err:
        if not where:
            raise
        raise MtardError(f"{where}: {err}") from err
    return get_path(probe, path)


def _parse_set(data: dict, base_cfg: TrainConfig) -> dict:
    out = {}
    for path, value in data.items():
        _check_writable_path(str(path), f"set.{path}")
        out[str(path)] = _as_config_holds(base_cfg, str(path), value)
    return out


def _parse_sampler(data: Any) -> dict:
    if data is None:
        data = {}
    if isinstance(data, str):
        data = {"name": data}
    data = dict(_mapping(data, "sampler"))
    name = str(data.pop("name", "tpe")).lower()
    if name not in SAMPLERS:
        raise MtardError(f"sampler.name: unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    seed = data.pop("seed", 0)
    seed = None if seed is None else _number(seed, "sampler.seed", integer=True)
    out = {"name": name, "seed": seed, **data}
    valid = [p for p in inspect.signature(_sampler_class(name)).parameters if p != "seed"]
    for key in data:
        if key not in valid:
            raise MtardError(f"sampler.{key}: not an option of the {name} sampler; valid options: {', '.join(valid)}")
    if name == "gp":
        try:
            import scipy  # noqa: F401
        except ImportError as err:
            raise MtardError("sampler.name: gp needs scipy (pip install scipy); or use tpe") from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-option warnings: shown again when the search starts
        build_sampler(out)
    return out


def _sampler_class(name: str):
    import optuna

    return {
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
        "gp": optuna.samplers.GPSampler,
    }[name]


def build_sampler(sampler: dict):
    """The Optuna sampler a space asks for, seeded."""
    opts = {k: v for k, v in sampler.items() if k not in ("name", "seed")}
    try:
        return _sampler_class(sampler["name"])(seed=sampler["seed"], **opts)
    except (TypeError, ValueError, ImportError) as err:
        raise MtardError(f"sampler: {sampler['name']} rejected its options {opts}: {err}") from err


def _parse_resources(data: dict, base_cfg: TrainConfig) -> dict:
    _unknown_keys(data, tuple(RESOURCE_KEYS), "resources")
    s = base_cfg.scaling
    out = {
        "workers": s.workers, "cpus_per_worker": s.cpus_per_worker,
        "gpus_per_worker": s.gpus_per_worker, "accelerator_type": s.accelerator_type,
        "custom": dict(s.resources), "ray_train": False,
    }
    for key, tp in RESOURCE_KEYS.items():
        if key in data:
            out[key] = coerce(data[key], tp, f"resources.{key}")
    for name, amount in out["custom"].items():
        if name in ("CPU", "GPU"):
            raise MtardError(f"resources.custom.{name}: use resources.{name.lower()}s_per_worker")
        out["custom"][name] = _number(amount, f"resources.custom.{name}")
    check_resources(out["workers"], out["cpus_per_worker"], out["gpus_per_worker"], out["custom"], where="resources", custom_where="resources.custom")
    return out


def _parse_budget(data: dict, base_cfg: TrainConfig) -> dict:
    _unknown_keys(data, BUDGET_KEYS, "budget")
    epochs = _positive_int(data.get("epochs", base_cfg.optim.epochs), "budget.epochs")
    t = data.get("time_budget_s")
    if t is not None:
        t = _number(t, "budget.time_budget_s")
        if t <= 0:
            raise MtardError(f"budget.time_budget_s: must be > 0 seconds (or null), got {t}")
    return {
        "epochs": epochs,
        "scale_milestones": coerce(data.get("scale_milestones", False), bool, "budget.scale_milestones"),
        "time_budget_s": t,
        "total": _parse_total(data.get("total"), epochs),
    }


def _parse_total(data: Any, epochs: int) -> dict | None:
    """`budget.total`: {device_hours: H} or {epochs: N}, enough for at least one whole trial."""
    if data is None:
        return None
    data = _mapping(data, "budget.total")
    if len(data) != 1 or next(iter(data)) not in UNITS:
        raise MtardError(f"budget.total: give one of {', '.join(UNITS)}, e.g. {{device_hours: 2.5}}; got {data!r}")
    unit, value = next(iter(data.items()))
    where = f"budget.total.{unit}"
    amount = _number(value, where, integer=unit == "epochs")
    if amount <= 0:
        raise MtardError(f"{where}: must be > 0, got {value!r}")
    if unit == "epochs" and amount < epochs:
        raise MtardError(f"{where}: {amount} is less than one trial's budget.epochs ({epochs}): no trial could start")
    return {unit: amount}


def _parse_stop(data: dict, objectives: list[Objective]) -> dict:
    """`stop:` — `hypervolume_plateau: {window, min_improvement, min_trials}` (mtard.search.budget)."""
    _unknown_keys(data, STOP_KEYS, "stop")
    if data.get("hypervolume_plateau") is None:
        return {}
    raw = _mapping(data["hypervolume_plateau"], "stop.hypervolume_plateau")
    _unknown_keys(raw, tuple(PLATEAU_DEFAULTS), "stop.hypervolume_plateau")
    where = "stop.hypervolume_plateau"
    out = {
        "window": _positive_int(raw.get("window", PLATEAU_DEFAULTS["window"]), f"{where}.window"),
        "min_improvement": _number(raw.get("min_improvement", PLATEAU_DEFAULTS["min_improvement"]), f"{where}.min_improvement"),
        "min_trials": _positive_int(raw.get("min_trials", PLATEAU_DEFAULTS["min_trials"]), f"{where}.min_trials"),
    }
    if not 0 <= out["min_improvement"] < 1:
        raise MtardError(f"{where}.min_improvement: a fraction of the hypervolume in [0, 1) (0.01 = 1 %), got {out['min_improvement']}")
    undefined = [o.metric for o in objectives if o.direction == "min" and o.reference is None]
    if undefined or len(objectives) > 2:
        why = f"objective {undefined[0]} (min) has no reference" if undefined else "more than two objectives"
        raise MtardError(f"{where}: the hypervolume is not defined ({why}); give it a reference or drop the rule")
    return {"hypervolume_plateau": out}


def _parse_scheduler(data: dict, epochs: int) -> dict:
    """`scheduler:` — `none` (every trial trains its budget) or `moasha` (mtard.search.rung_rule).

    moasha takes `eta` (keep 1/eta at each rung, default 3) and either `rungs` (epochs, each below
    the budget) or `min_epochs` (default 1), from which the rungs are min_epochs * eta^k below the budget.
    """
    _unknown_keys(data, SCHEDULER_KEYS, "scheduler")
    name = str(data.get("name", "none"))
    if name not in SCHEDULERS:
        raise MtardError(f"scheduler.name: {name!r} is not one of {', '.join(SCHEDULERS)}")
    if name == "none":
        extra = sorted(set(data) - {"name"})
        if extra:
            raise MtardError(f"scheduler.{extra[0]}: only scheduler.name: moasha takes settings")
        return {"name": "none"}
    eta = _number(data.get("eta", 3), "scheduler.eta", integer=True)
    if eta < 2:
        raise MtardError(f"scheduler.eta: must be >= 2 (each rung keeps 1/eta of the trials), got {eta}")
    if "rungs" in data and "min_epochs" in data:
        raise MtardError("scheduler: give either rungs or min_epochs, not both")
    if "rungs" in data:
        raw = data["rungs"]
        if not isinstance(raw, list) or not raw:
            raise MtardError(f"scheduler.rungs: a list of epochs such as [1, 3], got {raw!r}")
        rungs = [_positive_int(r, f"scheduler.rungs[{i}]") for i, r in enumerate(raw)]
        if rungs != sorted(set(rungs)):
            raise MtardError(f"scheduler.rungs: epochs must increase without repeats, got {rungs}")
    else:
        first = _positive_int(data.get("min_epochs", 1), "scheduler.min_epochs")
        rungs = []
        while first * eta ** len(rungs) < epochs:
            rungs.append(first * eta ** len(rungs))
    if not rungs or rungs[-1] >= epochs:
        raise MtardError(
            f"scheduler.rungs: every rung must be below budget.epochs ({epochs}), got {rungs or 'none'}; "
            f"lower the rungs (or min_epochs) or raise budget.epochs"
        )
    return {"name": "moasha", "eta": eta, "rungs": rungs}


def _parse_objectives(data: Any, cfg: TrainConfig) -> list[Objective]:
    items = list(DEFAULT_OBJECTIVES) if data is None else data
    if not isinstance(items, list) or not 1 <= len(items) <= 2:
        raise MtardError("objectives: expected a list of 1 or 2 {metric, direction} mappings")
    out = []
    for i, item in enumerate(items):
        item = _mapping(item, f"objectives[{i}]")
        _unknown_keys(item, ("metric", "direction", "label", "reference"), f"objectives[{i}]")
        metric = str(item.get("metric", ""))
        if metric not in KNOWN_METRICS:
            raise MtardError(f"objectives[{i}].metric: {metric!r} is not reported by every trial; choose one of {', '.join(KNOWN_METRICS)}")
        direction = str(item.get("direction", "max"))
        if direction not in ("max", "min"):
            raise MtardError(f"objectives[{i}].direction: {direction!r}; expected max or min")
        ref = item.get("reference")
        ref = None if ref is None else _number(ref, f"objectives[{i}].reference")
        out.append(Objective(metric, direction, str(item.get("label") or default_label(metric, cfg)), ref))
        if metric == "val_pgd_acc" and cfg.eval.pgd_steps < 1:
            raise MtardError(f"objectives[{i}]: val_pgd_acc needs eval.pgd_steps >= 1 (it is {cfg.eval.pgd_steps})")
    if len({o.metric for o in out}) != len(out):
        raise MtardError("objectives: the same metric is listed twice")
    return out


def _parse_params(data: dict, space: SearchSpace) -> list[Param]:
    if not data:
        raise MtardError("space: no parameters to search; add e.g. `optim.lr: {loguniform: [0.01, 0.2]}`")
    types = field_paths()
    raw: dict[str, Param] = {}
    for path, spec in data.items():
        path = str(path)
        where = f"space.{path}"
        _check_writable_path(path, where)
        if path.startswith(NOT_SEARCHABLE_PREFIXES) or path in NOT_SEARCHABLE:
            raise MtardError(f"{where}: cannot be searched: it changes what the objectives measure (fix it under `set:`)")
        if path in space.fixed:
            raise MtardError(f"{where}: also fixed under `set:`; keep one")
        raw[path] = _parse_param(path, _mapping(spec, where), types[path], space.base_config, where)
    # `when` refers to searched choice parameters with reachable values; order conditions first.
    for p in raw.values():
        checked = []
        for ref, allowed in p.when:
            where = f"space.{p.path}.when.{ref}"
            if ref == p.path:
                raise MtardError(f"{where}: a parameter cannot depend on itself")
            if ref not in raw:
                raise MtardError(f"{where}: {ref} is not a searched parameter; `when` can only refer to parameters under `space:`")
            target = raw[ref]
            if target.kind != "choice":
                raise MtardError(f"{where}: {ref} is a {target.kind} range; `when` can only refer to `choice` parameters")
            values = []
            for v in allowed:
                v = _as_config_holds(space.base_config, ref, v, where)
                if not target.contains(v):
                    raise MtardError(f"{where}: {v!r} is not one of {ref}'s choices {list(target.choices)}")
                values.append(v)
            checked.append((ref, tuple(values)))
        raw[p.path] = Param(**{**p.__dict__, "when": tuple(checked)})
    return _topological(raw)


def _parse_param(path: str, spec: dict, tp: Any, base_cfg: TrainConfig, where: str) -> Param:
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        raise MtardError(f"{where}: give exactly one distribution of {', '.join(KINDS)}, e.g. {{loguniform: [0.01, 0.2]}}")
    kind = kinds[0]
    allowed = {"loguniform": (kind, "when"), "uniform": (kind, "step", "when"), "int": (kind, "step", "log", "when"), "choice": (kind, "when")}[kind]
    _unknown_keys(spec, allowed, where)
    when_raw = _mapping(spec.get("when"), f"{where}.when")
    when = tuple((str(ref), tuple(v if isinstance(v, list) else [v])) for ref, v in when_raw.items())
    if kind == "choice":
        values = spec["choice"]
        if not isinstance(values, list) or not values:
            raise MtardError(f"{where}.choice: expected a non-empty list of values")
        coerced = []
        for i, v in enumerate(values):
            if isinstance(v, (list, dict)):
                raise MtardError(f"{where}.choice[{i}]: {v!r}: choices must be single values (true/false, numbers, strings)")
            value = _as_config_holds(base_cfg, path, v, f"{where}.choice[{i}]")
            if any(_same(value, c) for c in coerced):
                raise MtardError(f"{where}.choice: {value!r} is listed twice")
            coerced.append(value)
        return Param(path, "choice", choices=tuple(coerced), when=when)

    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise MtardError(f"{where}.{kind}: expected [low, high]")
    integer = kind == "int"
    if integer and tp is not int and tp is not float:
        raise MtardError(f"{where}: {path} is not numeric; use `choice`")
    if not integer and tp is not float:
        hint = "use `int: [low, high]` (log: true for a log scale)" if tp is int else "use `choice`"
        raise MtardError(f"{where}: {path} is not a float field; {hint}")
    low = _number(bounds[0], f"{where}.{kind}[0]", integer=integer)
    high = _number(bounds[1], f"{where}.{kind}[1]", integer=integer)
    if not low < high:
        raise MtardError(f"{where}.{kind}: low must be < high, got [{low}, {high}]")
    log = kind == "loguniform" or bool(coerce(spec.get("log", False), bool, f"{where}.log"))
    if log and low <= 0:
        raise MtardError(f"{where}.{kind}: a log scale needs low > 0, got {low}")
    step = None
    if "step" in spec:
        step = _number(spec["step"], f"{where}.step", integer=integer)
        if step <= 0 or step > high - low:
            raise MtardError(f"{where}.step: must be in (0, high - low], got {step}")
        if integer and log and step != 1:
            raise MtardError(f"{where}.step: a log-scale int range needs step 1")
    return Param(path, kind, low=low, high=high, step=step, log=log and integer, when=when)


def _topological(params: dict[str, Param]) -> list[Param]:
    order: list[Param] = []
    state: dict[str, int] = {}

    def visit(p: Param, chain: tuple) -> None:
        if state.get(p.path) == 2:
            return
        if state.get(p.path) == 1:
            raise MtardError(f"space: `when` conditions form a cycle: {' -> '.join(chain + (p.path,))}")
        state[p.path] = 1
        for ref, _ in p.when:
            visit(params[ref], chain + (p.path,))
        state[p.path] = 2
        order.append(p)

    for p in params.values():
        visit(p, ())
    return order


def _check_probes(space: SearchSpace) -> None:
    """Each range end and each choice, applied alone (with its conditions) to the base, is a valid config."""
    fixed = space.fixed_config()
    by_path = {p.path: p for p in space.params}
    for p in space.params:
        for value in p.probes():
            cfg = copy.deepcopy(fixed)
            for ref, allowed in p.when:
                set_path(cfg, ref, allowed[0])
            set_path(cfg, p.path, value)
            try:
                validate_config(cfg)
            except MtardError as err:
                # teacher roles needed by a method choice: a searched teacher parameter may fill them
                if p.path == "method.name" and str(err).startswith("teachers.") and str(err).split(":")[0] in by_path:
                    continue
                raise MtardError(f"space.{p.path}: the value {value!r} makes an invalid config: {err}") from err


def _check_teachers(space: SearchSpace) -> None:
    from mtard.teachers import load_catalog, resolve

    cfg = space.fixed_config()
    catalog = load_catalog(cfg.teachers.catalog)
    searched = set(space.param_paths)
    for field_path, name in space.teacher_names():
        where = f"space.{field_path}" if field_path in searched else field_path
        resolve(catalog, name, cfg.data.name, field_path=where, robustbench_dir=cfg.teachers.robustbench_dir)


def _check_default_point(space: SearchSpace) -> None:
    point = space.default_point()
    by_path = {p.path: p for p in space.params}
    for path, value in point.items():
        p = by_path[path]
        if not p.contains(value):
            domain = list(p.choices) if p.kind == "choice" else f"[{p.low}, {p.high}]"
            raise MtardError(
                f"space.{path}: the base config's value {value!r} is outside {domain}, so the defaults trial "
                f"(enqueue_defaults: true) cannot run; widen the range, add the value, or set enqueue_defaults: false"
            )
    space.trial_config(point)  # the defaults trial must be a valid config

"""Review a search: compute the Pareto front and its history, then render it.

Compute, then render:

* `compute_review(records, objectives)` is pure: from the trial records it derives
  which trials may enter the front (and why the others may not), the overall front,
  one front per method, their hypervolumes, and the hypervolume history. Tests check
  this data.
* Thin renderers turn a `ReviewData` into files (`write_review`: ``pareto.csv``,
  ``pareto.json``, ``trials.csv``, ``hypervolume.csv``), a terminal table
  (`render_table`), a matplotlib figure (`pareto_figure`) and TensorBoard events
  (`TensorBoardReview`, a run named ``review`` next to the trials, so
  ``tensorboard --logdir runs/<name>`` shows the trials' curves *and* the front).
* `evaluate_front(exp_dir)` re-evaluates the front's checkpoints on the test split with
  the full attack suite, beside the validation numbers the search selected on.

Eligibility: a trial enters the front only if its status is ``complete``, it trained
its whole budget (``epochs == budget``) and every objective is a finite number. A
trial stopped early by a scheduler reports numbers from a shorter schedule; mixing
them with full runs would let an unfinished trial look better than it is.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from mtard import pareto
from mtard.errors import MtardError

__all__ = [
    "VERIFY_ATTACKS",
    "Excluded",
    "HistoryPoint",
    "Objective",
    "ReviewData",
    "TensorBoardReview",
    "TrialRecord",
    "compute_review",
    "evaluate_front",
    "pareto_figure",
    "render_table",
    "render_verified",
    "write_review",
]

STATUSES = ("complete", "error", "diverged", "stopped", "running")

#: Attacks `evaluate_front` runs by default (the papers' test-set table).
VERIFY_ATTACKS = ["clean", "pgd20_sat", "pgd20_trades", "cw", "autoattack"]

REVIEW_RUN = "review"  # TensorBoard run (sub-directory of the experiment) holding the review
FIGURE_TAG = "pareto/front"
TABLE_TAG = "pareto/table"
HV_TRIALS_TAG = "hypervolume/vs_completed_trials"
HV_EPOCHS_TAG = "hypervolume/vs_training_epochs"
HV_METHOD_TAG = "hypervolume_by_method/{method}"  # step = completed trials


# ---------------------------------------------------------------- records


@dataclass
class TrialRecord:
    """One trial of a search, as the driver last saw it (one JSON line per trial)."""

    trial_id: str
    status: str = "running"  # "complete" | "error" | "diverged" | "stopped" | "running"
    reason: str = ""  # why it is not complete ("" when complete)
    params: dict = field(default_factory=dict)  # searched dotted config path -> value
    metrics: dict = field(default_factory=dict)  # the trial's last reported metrics
    epochs: int = 0  # epochs trained
    budget: int = 0  # epochs asked for
    checkpoint: str = ""  # path/URI of the last checkpoint file, "" if none
    is_default: bool = False  # the enqueued official-defaults trial
    method: str = ""
    teachers: dict = field(default_factory=dict)  # {"clean": name, "robust": name} or {}
    train_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        """Inverse of `to_dict`; unknown keys (written by a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        if "trial_id" not in data:
            raise MtardError(f"a trial record needs a 'trial_id', got keys {sorted(data)}")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Objective:
    """One search objective: a reported metric, its direction and an axis label naming the attack.

    `reference` is the hypervolume reference value; ``None`` means 0 for a ``"max"``
    objective (accuracies). A ``"min"`` objective has no natural bound: without a
    reference its hypervolume is reported as not available (NaN).
    """

    metric: str
    direction: str  # "max" | "min"
    label: str = ""  # e.g. "val PGD-20 accuracy (L∞ ε=0.2, step 0.05)"
    reference: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise MtardError(f"objective {self.metric!r}: direction must be 'max' or 'min', got {self.direction!r}")

    @property
    def axis_label(self) -> str:
        better = "higher" if self.direction == "max" else "lower"
        return f"{self.label or self.metric} ({better} is better)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Objective:
        return cls(data["metric"], data["direction"], data.get("label", ""), data.get("reference"))


class Excluded(NamedTuple):
    """A trial that may not enter the front, and why (one line, for tables and CSV)."""

    record: TrialRecord
    reason: str


@dataclass
class HistoryPoint:
    """The state of the search right after one more trial completed."""

    n_completed: int  # trials with status "complete" so far (this one included)
    total_epochs: int  # epochs trained so far by all trials up to this one in record order, failed ones included
    hypervolume: float  # of the front of the eligible trials so far
    trial_id: str  # the trial that just completed
    hypervolume_by_method: dict[str, float] = field(default_factory=dict)


@dataclass
class ReviewData:
    """Everything the renderers need; plain data (no figures, no files)."""

    records: list[TrialRecord]
    objectives: list[Objective]
    front: list[TrialRecord]  # eligible trials on the overall front, ordered along objective 0
    fronts_by_method: dict[str, list[TrialRecord]]  # method -> its own front (same order)
    hypervolume: float  # of the overall front (NaN when not defined, see Objective.reference)
    hypervolume_by_method: dict[str, float]
    history: list[HistoryPoint]  # one point per completed trial, in record (= completion) order
    excluded: list[Excluded]  # records not eligible for the front, with the reason
    reference: list[float | None]  # hypervolume reference per objective
    eligible: list[TrialRecord]  # complete, full budget, finite objectives
    methods: list[str]  # in order of first appearance
    param_names: list[str]  # every searched dotted path, in order of first appearance
    n_completed: int  # trials with status "complete"
    total_epochs: int  # epochs trained by all trials

    def values(self, record: TrialRecord) -> tuple[float, ...]:
        """The record's objective values (NaN where missing or not a number)."""
        return tuple(_number(record.metrics.get(o.metric)) for o in self.objectives)


# ---------------------------------------------------------------- compute


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _exclusion(record: TrialRecord, objectives: Sequence[Objective]) -> str:
    """Why `record` may not enter the front ("" when it may)."""
    why = f": {record.reason}" if record.reason else ""
    progress = f"{record.epochs}/{record.budget} epochs"
    if record.status == "running":
        return f"still running ({progress})"
    if record.status == "error":
        return f"error after {progress}{why}"
    if record.status == "diverged":
        return f"diverged after {progress}{why}"
    if record.status == "stopped":
        return f"stopped early after {progress}{why}"
    if record.status != "complete":
        return f"unknown status {record.status!r}{why}"
    if record.epochs != record.budget:
        return f"complete but trained {progress}, not its budget"
    for o in objectives:
        value = record.metrics.get(o.metric)
        if value is None:
            return f"objective {o.metric} was not reported"
        number = _number(value)
        if math.isnan(number):
            return f"objective {o.metric} is NaN" if isinstance(value, float) else f"objective {o.metric} is not a number ({value!r})"
        if math.isinf(number):
            return f"objective {o.metric} is infinite"
    return ""


def _reference(objectives: Sequence[Objective]) -> list[float | None]:
    return [o.reference if o.reference is not None else (0.0 if o.direction == "max" else None) for o in objectives]


def _hypervolume(points: list[tuple[float, ...]], objectives: Sequence[Objective], reference: list[float | None]) -> float:
    """Hypervolume of `points`; NaN when undefined (a 'min' objective without reference, > 2 objectives)."""
    if any(r is None for r in reference) or len(objectives) > 2:
        return math.nan
    return pareto.hypervolume(points, [o.direction for o in objectives], [float(r) for r in reference])  # type: ignore[arg-type]


def _front(records: list[TrialRecord], points: list[tuple[float, ...]], directions: list[str]) -> list[TrialRecord]:
    idx = pareto.front(points, directions)  # type: ignore[arg-type]
    return [records[i] for i in pareto.sort_front(points, idx, directions)]  # type: ignore[arg-type]


def compute_review(records: list[TrialRecord], objectives: list[Objective]) -> ReviewData:
    """The front, per-method fronts, hypervolumes, history and exclusions of a search (pure)."""
    if not objectives:
        raise MtardError("a review needs at least one objective")
    records = list(records)
    objectives = list(objectives)
    directions = [o.direction for o in objectives]
    reference = _reference(objectives)

    def values(r: TrialRecord) -> tuple[float, ...]:
        return tuple(_number(r.metrics.get(o.metric)) for o in objectives)

    eligible: list[TrialRecord] = []
    excluded: list[Excluded] = []
    methods: list[str] = []
    param_names: list[str] = []
    history: list[HistoryPoint] = []
    by_method: dict[str, list[TrialRecord]] = {}
    n_completed = total_epochs = 0
    for r in records:
        if r.method not in methods:
            methods.append(r.method)
        param_names.extend(p for p in r.params if p not in param_names)
        total_epochs += int(r.epochs)
        why = _exclusion(r, objectives)
        if why:
            excluded.append(Excluded(r, why))
        else:
            eligible.append(r)
            by_method.setdefault(r.method, []).append(r)
        if r.status != "complete":
            continue
        n_completed += 1
        hv = _hypervolume([values(e) for e in eligible], objectives, reference)
        hv_m = {m: _hypervolume([values(e) for e in rs], objectives, reference) for m, rs in by_method.items()}
        history.append(HistoryPoint(n_completed, total_epochs, hv, r.trial_id, hv_m))

    points = [values(r) for r in eligible]
    front = _front(eligible, points, directions)
    fronts_by_method = {}
    for m in methods:
        rs = by_method.get(m, [])
        if rs:
            fronts_by_method[m] = _front(rs, [values(r) for r in rs], directions)
    return ReviewData(
        records=records,
        objectives=objectives,
        front=front,
        fronts_by_method=fronts_by_method,
        hypervolume=_hypervolume(points, objectives, reference),
        hypervolume_by_method={
            m: _hypervolume([values(r) for r in rs], objectives, reference) for m, rs in fronts_by_method.items()
        },
        history=history,
        excluded=excluded,
        reference=reference,
        eligible=eligible,
        methods=methods,
        param_names=param_names,
        n_completed=n_completed,
        total_epochs=total_epochs,
    )


# ---------------------------------------------------------------- files


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None (strict JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _cell(value: Any) -> str:
    """CSV cell: numbers exact (repr), strings as is, everything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(_clean(value))


def _write_atomic(path: Path, text: str) -> None:
    """A reader (TensorBoard, a user, a restarted driver) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _teacher_roles(records: Iterable[TrialRecord]) -> list[str]:
    roles: list[str] = []
    for r in records:
        roles.extend(k for k in r.teachers if k not in roles)
    return roles


def _trial_columns(data: ReviewData) -> tuple[list[str], Any]:
    """Columns shared by pareto.csv and trials.csv, and a row function."""
    roles = _teacher_roles(data.records)
    header = (
        ["trial_id"]
        + [o.metric for o in data.objectives]
        + list(data.param_names)
        + ["method"]
        + [f"teacher_{role}" for role in roles]
        + ["checkpoint", "is_default", "epochs", "budget", "train_time_s"]
    )

    def row(r: TrialRecord) -> list[Any]:
        return (
            [r.trial_id]
            + [r.metrics.get(o.metric) for o in data.objectives]
            + [r.params.get(p) for p in data.param_names]
            + [r.method]
            + [r.teachers.get(role, "") for role in roles]
            + [r.checkpoint, bool(r.is_default), int(r.epochs), int(r.budget), float(r.train_time_s)]
        )

    return header, row


def _member(data: ReviewData, r: TrialRecord) -> dict[str, Any]:
    return {
        "trial_id": r.trial_id,
        "objectives": {o.metric: r.metrics.get(o.metric) for o in data.objectives},
        "params": dict(r.params),
        "method": r.method,
        "teachers": dict(r.teachers),
        "checkpoint": r.checkpoint,
        "is_default": bool(r.is_default),
        "epochs": r.epochs,
        "budget": r.budget,
        "train_time_s": r.train_time_s,
        "metrics": dict(r.metrics),
    }


def review_json(data: ReviewData) -> dict[str, Any]:
    """The content of pareto.json (strict JSON: NaN written as null)."""
    return _clean(
        {
            "objectives": [o.to_dict() for o in data.objectives],
            "reference": data.reference,
            "hypervolume": data.hypervolume,
            "hypervolume_by_method": data.hypervolume_by_method,
            "n_trials": len(data.records),
            "n_completed": data.n_completed,
            "n_eligible": len(data.eligible),
            "total_epochs": data.total_epochs,
            "front": [_member(data, r) for r in data.front],
            "fronts_by_method": {m: [r.trial_id for r in rs] for m, rs in data.fronts_by_method.items()},
            "excluded": [{"trial_id": e.record.trial_id, "status": e.record.status, "reason": e.reason} for e in data.excluded],
        }
    )


def write_review(exp_dir: Path, records: list[TrialRecord], objectives: list[Objective]) -> ReviewData:
    """Compute the review and write pareto.csv, pareto.json, trials.csv and hypervolume.csv into `exp_dir`."""
    data = compute_review(records, objectives)
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    header, row = _trial_columns(data)

    _write_atomic(exp_dir / "pareto.csv", _csv_text(header, (row(r) for r in data.front)))
    _write_atomic(exp_dir / "pareto.json", json.dumps(review_json(data), indent=2, ensure_ascii=False) + "\n")

    front_ids = {id(r) for r in data.front}
    reasons = {id(e.record): e.reason for e in data.excluded}
    trials_header = header[:1] + ["status", "on_front", "reason"] + header[1:]
    _write_atomic(
        exp_dir / "trials.csv",
        _csv_text(
            trials_header,
            ([*row(r)[:1], r.status, id(r) in front_ids, reasons.get(id(r), ""), *row(r)[1:]] for r in data.records),
        ),
    )

    methods = data.methods
    _write_atomic(
        exp_dir / "hypervolume.csv",
        _csv_text(
            ["n_completed", "total_epochs", "hypervolume", "trial_id"] + [f"hypervolume_{m}" for m in methods],
            (
                [h.n_completed, h.total_epochs, h.hypervolume, h.trial_id] + [h.hypervolume_by_method.get(m) for m in methods]
                for h in data.history
            ),
        ),
    )
    return data


# ---------------------------------------------------------------- terminal table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _fmt_hv(hv: float) -> str:
    return "n/a" if math.isnan(hv) else f"{hv:.4f}"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return out


def render_table(data: ReviewData) -> str:
    """The front as a terminal table, then one line per excluded trial with its reason."""
    ref = ", ".join(_fmt(r) for r in data.reference)
    lines = [
        f"Pareto front: {len(data.front)} of {len(data.eligible)} eligible trials "
        f"({data.n_completed} completed, {len(data.records)} in all, {data.total_epochs} epochs trained); "
        f"hypervolume {_fmt_hv(data.hypervolume)} (reference {ref})"
    ]
    for o in data.objectives:
        lines.append(f"  {o.metric}: {o.label or o.metric} ({o.direction})")
    roles = _teacher_roles(data.front)
    header = ["#", "trial"] + [o.metric for o in data.objectives] + ["method"] + [f"{r} teacher" for r in roles]
    # Searched teacher names and the method already have their own columns.
    params = [p for p in data.param_names if p != "method.name" and not p.startswith("teachers.")]
    header += params + ["epochs", "checkpoint"]
    rows = []
    for k, r in enumerate(data.front, 1):
        rows.append(
            [str(k), r.trial_id + (" *" if r.is_default else "")]
            + [f"{v:.4f}" for v in data.values(r)]
            + [r.method or "-"]
            + [r.teachers.get(role, "-") for role in roles]
            + [_fmt(r.params.get(p)) for p in params]
            + [str(r.epochs), r.checkpoint or "-"]
        )
    if rows:
        lines += _grid(header, rows)
        if any(r.is_default for r in data.front):
            lines.append("* the official-defaults trial")
    else:
        lines.append("(no trial is eligible for the front yet)")
    if len(data.fronts_by_method) > 1:
        lines.append(
            "per method: "
            + ", ".join(
                f"{m or '-'} hypervolume {_fmt_hv(data.hypervolume_by_method[m])} ({len(rs)} on its front)"
                for m, rs in data.fronts_by_method.items()
            )
        )
    defaults_off = [e for e in data.excluded if e.record.is_default]
    front_ids = {id(r) for r in data.front}
    defaults_dominated = [r for r in data.eligible if r.is_default and id(r) not in front_ids]
    for r in defaults_dominated:
        lines.append(f"the official-defaults trial {r.trial_id} is dominated: " + ", ".join(
            f"{o.metric} {v:.4f}" for o, v in zip(data.objectives, data.values(r))))
    for e in defaults_off:
        lines.append(f"the official-defaults trial {e.record.trial_id} is not eligible: {e.reason}")
    if data.excluded:
        lines.append(f"excluded from the front ({len(data.excluded)}):")
        width = max(len(e.record.trial_id) for e in data.excluded)
        lines += [f"  {e.record.trial_id:<{width}}  {e.reason}" for e in data.excluded]
    return "\n".join(lines)


def _markdown(data: ReviewData) -> str:
    """The front as a Markdown table (TensorBoard's text dashboard renders it)."""
    header = ["trial"] + [o.metric for o in data.objectives] + ["method"] + list(data.param_names)
    rows = [
        [r.trial_id + (" (defaults)" if r.is_default else "")]
        + [f"{v:.4f}" for v in data.values(r)]
        + [r.method or "-"]
        + [_fmt(r.params.get(p)) for p in data.param_names]
        for r in data.front
    ]
    text = [f"**hypervolume {_fmt_hv(data.hypervolume)}**, {len(data.front)} on the front of {len(data.eligible)} eligible trials", ""]
    text.append("| " + " | ".join(header) + " |")
    text.append("|" + "---|" * len(header))
    text += ["| " + " | ".join(r) + " |" for r in rows]
    if data.excluded:
        text += ["", f"excluded ({len(data.excluded)}):", ""]
        text += [f"- `{e.record.trial_id}`: {e.reason}" for e in data.excluded]
    return "\n".join(text)


# ---------------------------------------------------------------- figure


def _worse(a: float, b: float, direction: str) -> float:
    return min(a, b) if direction == "max" else max(a, b)


def _staircase(points: list[tuple[float, float]], directions: Sequence[str]) -> tuple[list[float], list[float]]:
    """Polyline through front points (sorted along objective 0) bounding the dominated region."""
    xs: list[float] = []
    ys: list[float] = []
    for k, (x, y) in enumerate(points):
        if k:
            px, py = points[k - 1]
            xs.append(_worse(px, x, directions[0]))
            ys.append(_worse(py, y, directions[1]))
        xs.append(x)
        ys.append(y)
    return xs, ys


def pareto_figure(data: ReviewData):  # -> matplotlib.figure.Figure
    """All trials, the front as a staircase, the defaults trial marked; one colour per method.

    Built on a bare `Figure` with the Agg canvas: no pyplot state, no display needed.
    With one objective the x axis is the completion order; with more than two, the first
    two objectives are drawn.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    objs = data.objectives
    one = len(objs) == 1
    dirs = ["max", objs[0].direction] if one else [objs[0].direction, objs[1].direction]
    order = {id(r): k for k, r in enumerate(data.records, 1)}

    def xy(r: TrialRecord) -> tuple[float, float]:
        v = data.values(r)
        return (float(order[id(r)]), v[0]) if one else (v[0], v[1])

    def finite(r: TrialRecord) -> bool:
        return all(math.isfinite(c) for c in xy(r))

    palette = colormaps["tab10"]
    colour = {m: palette(k % 10) for k, m in enumerate(data.methods)}
    multi = len(data.fronts_by_method) > 1
    front_ids = {id(r) for r in data.front}

    # Eligible trials off the front: filled, faint.
    for m in data.methods:
        pts = [xy(r) for r in data.eligible if r.method == m and id(r) not in front_ids]
        if pts:
            ax.scatter(*zip(*pts), s=28, color=colour[m], alpha=0.45, edgecolors="none",
                       label=f"{m or 'trial'} (complete)" if multi else "complete trials")
    # Excluded trials with numbers (stopped early, running, ...): hollow.
    pts = [xy(r) for r, _ in data.excluded if finite(r)]
    if pts:
        ax.scatter(*zip(*pts), s=28, facecolors="none", edgecolors="0.55", linewidths=0.9,
                   label="not eligible (stopped / failed / running)")
    # Per-method fronts when several methods compete.
    if multi:
        for m, rs in data.fronts_by_method.items():
            sx, sy = _staircase([xy(r) for r in rs], dirs)
            ax.plot(sx, sy, color=colour[m], lw=1.4, alpha=0.9,
                    label=f"{m or '-'} front (HV {_fmt_hv(data.hypervolume_by_method[m])})")
            own = [xy(r) for r in rs if id(r) not in front_ids]
            if own:
                ax.scatter(*zip(*own), s=36, color=colour[m], edgecolors="black", linewidths=0.4, zorder=3)
    # The overall front.
    if data.front:
        fpts = [xy(r) for r in data.front]
        sx, sy = _staircase(fpts, dirs)
        line_colour = "black" if multi else colour[data.front[0].method]
        ax.plot(sx, sy, color=line_colour, lw=2.2, zorder=4,
                label=f"Pareto front (HV {_fmt_hv(data.hypervolume)})")
        ax.scatter(*zip(*fpts), s=70, color=[colour[r.method] for r in data.front],
                   edgecolors="black", linewidths=1.0, zorder=5)
        for r, (x, y) in zip(data.front, fpts):
            ax.annotate(r.trial_id, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7, zorder=6)
    # The official-defaults trial(s).
    eligible_ids = {id(r) for r in data.eligible}
    for r in data.records:
        if r.is_default and finite(r):
            eligible = id(r) in eligible_ids
            ax.scatter(*xy(r), marker="*", s=260, zorder=7, linewidths=1.0, edgecolors="black",
                       facecolors=colour[r.method] if eligible else "none",
                       label=f"official defaults{f' ({r.method})' if r.method else ''}"
                       + ("" if eligible else " - not eligible"))

    # Extend the front's staircase to the plot's edges, so the dominated region reads as a region.
    if data.front and not one:
        ax.autoscale_view()
        ax.set_autoscale_on(False)
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        worse_x = x0 if dirs[0] == "max" else x1
        worse_y = y0 if dirs[1] == "max" else y1
        sign = [1 if d == "max" else -1 for d in dirs]
        best_y = max(fpts, key=lambda p: sign[1] * p[1])
        best_x = max(fpts, key=lambda p: sign[0] * p[0])
        ax.plot([worse_x, best_y[0]], [best_y[1], best_y[1]], color=line_colour, lw=1.0, ls=":", zorder=4)
        ax.plot([best_x[0], best_x[0]], [best_x[1], worse_y], color=line_colour, lw=1.0, ls=":", zorder=4)

    ax.set_xlabel("trial (completion order)" if one else objs[0].axis_label)
    ax.set_ylabel(objs[0].axis_label if one else objs[1].axis_label)
    extra = f" (first two of {len(objs)} objectives)" if len(objs) > 2 else ""
    ax.set_title(
        f"Pareto front{extra}: hypervolume {_fmt_hv(data.hypervolume)}\n"
        f"{len(data.front)} on the front, {len(data.eligible)} eligible of {len(data.records)} trials, "
        f"{data.total_epochs} epochs trained",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return fig


# ---------------------------------------------------------------- TensorBoard


class TensorBoardReview:
    """Writes the review as TensorBoard run ``<exp_dir>/review``: the Pareto figure, the front
    as a text table, and hypervolume curves (vs completed trials and vs training epochs).

    Call `write` whenever trials complete. Scalars are appended only for history points
    not written before, and the figure only when the number of completed trials grew, so
    repeated calls and a re-created writer after a driver restart (the progress is kept in
    ``review/review_state.json``) extend the same curves instead of duplicating them.
    """

    STATE = "review_state.json"

    def __init__(self, exp_dir: Path, objectives: list[Objective]):
        from torch.utils.tensorboard import SummaryWriter

        self.exp_dir = Path(exp_dir)
        self.objectives = list(objectives)
        self.log_dir = self.exp_dir / REVIEW_RUN
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._state_path = self.log_dir / self.STATE
        self._state = {"scalars_through": 0, "figure_step": -1}
        if self._state_path.is_file():
            try:
                self._state.update(json.loads(self._state_path.read_text()))
            except (ValueError, OSError):
                pass  # a damaged state file only risks writing a point twice
        self._writer = SummaryWriter(str(self.log_dir))

    def write(self, data: ReviewData) -> None:
        w = self._writer
        done = int(self._state["scalars_through"])
        for h in data.history:
            if h.n_completed <= done:
                continue
            if math.isfinite(h.hypervolume):
                w.add_scalar(HV_TRIALS_TAG, h.hypervolume, h.n_completed)
                w.add_scalar(HV_EPOCHS_TAG, h.hypervolume, h.total_epochs)
            for m, hv in h.hypervolume_by_method.items():
                if math.isfinite(hv):
                    w.add_scalar(HV_METHOD_TAG.format(method=m or "none"), hv, h.n_completed)
            done = h.n_completed
        if data.n_completed > int(self._state["figure_step"]):
            w.add_figure(FIGURE_TAG, pareto_figure(data), data.n_completed, close=True)
            w.add_text(TABLE_TAG, _markdown(data), data.n_completed)
            self._state["figure_step"] = data.n_completed
        self._state["scalars_through"] = done
        w.flush()
        _write_atomic(self._state_path, json.dumps(self._state) + "\n")

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardReview:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- test-set verification


def _local_checkpoint(location: str, exp_dir: Path, cache: Path) -> Path:
    """A local path for a checkpoint recorded as a path or a storage URI (s3://, gs://, ...)."""
    if location.startswith("file://"):
        location = location[len("file://"):]
    if "://" not in location:
        path = Path(location)
        if not path.is_absolute() and not path.exists() and (exp_dir / path).exists():
            path = exp_dir / path
        return path
    import pyarrow.fs

    try:
        fs, remote = pyarrow.fs.FileSystem.from_uri(location)
        cache.mkdir(parents=True, exist_ok=True)
        local = cache / Path(remote).name
        with fs.open_input_stream(remote) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except Exception as err:  # pyarrow raises OSError/ArrowInvalid/... for a bad URI or missing object
        raise MtardError(f"cannot fetch checkpoint {location}: {err}") from err
    return local


def evaluate_front(
    exp_dir: Path,
    *,
    attacks: list[str] | None = None,
    max_samples: int = 0,
    device: str = "auto",
    data_root: str | None = None,
    batch_size: int = 256,
) -> Path:
    """Evaluate every front member's checkpoint on the TEST split; write pareto_verified.{json,csv}.

    Reads ``<exp_dir>/pareto.json`` (written by `write_review`). Each member's report from
    `mtard.evaluate.evaluate_checkpoint` also lands in ``<exp_dir>/verified/<trial>.eval-test.json``.
    A member whose checkpoint is missing or unreadable is recorded with its error and the
    others still run; if none can be evaluated, `MtardError`. Returns the JSON path.
    """
    from mtard.evaluate import check_attacks, evaluate_checkpoint

    exp_dir = Path(exp_dir)
    source = exp_dir / "pareto.json"
    if not source.is_file():
        raise MtardError(
            f"{source} does not exist: point at an experiment directory written by `mtard search` (e.g. runs/<name>)"
        )
    doc = json.loads(source.read_text())
    names = check_attacks(list(attacks) if attacks is not None else list(VERIFY_ATTACKS))
    if not doc.get("front"):
        raise MtardError(f"{source} has an empty front: no trial completed its budget yet")
    objectives = [Objective.from_dict(o) for o in doc["objectives"]]
    verified_dir = exp_dir / "verified"
    members = []
    descriptions: dict[str, str] = {}
    for m in doc["front"]:
        entry = {k: m.get(k) for k in ("trial_id", "method", "teachers", "params", "is_default", "checkpoint")}
        entry["val"] = dict(m.get("objectives", {}))
        try:
            if not m.get("checkpoint"):
                raise MtardError("the trial recorded no checkpoint")
            path = _local_checkpoint(m["checkpoint"], exp_dir, verified_dir / "checkpoints" / m["trial_id"])
            report = evaluate_checkpoint(
                path, split="test", attacks=names, max_samples=max_samples, device=device,
                data_root=data_root, batch_size=batch_size, out=verified_dir / f"{m['trial_id']}.eval-test.json",
            )
        except MtardError as err:
            entry["error"] = str(err)
            members.append(entry)
            continue
        entry.update(
            split=report["split"], dataset=report["dataset"], eps=report["eps"], samples=report["samples"],
            test={r["attack"]: r["accuracy"] for r in report["results"]},
            descriptions={r["attack"]: r["description"] for r in report["results"]},
        )
        for r in report["results"]:
            descriptions.setdefault(r["attack"], r["description"])
        members.append(entry)
    if not any("test" in e for e in members):
        raise MtardError(f"no front member could be evaluated: {members[0].get('error')}")

    out = {
        "experiment": str(exp_dir),
        "split": "test",
        "objectives": [o.to_dict() for o in objectives],
        "attacks": [{"attack": a, "description": descriptions.get(a, "")} for a in names],
        "members": members,
    }
    json_path = exp_dir / "pareto_verified.json"
    _write_atomic(json_path, json.dumps(_clean(out), indent=2, ensure_ascii=False) + "\n")
    header = ["trial_id", "method", "is_default"] + [f"val:{o.metric}" for o in objectives]
    header += ["attack", "description", "test_accuracy", "samples", "eps", "checkpoint", "error"]
    rows = []
    for e in members:
        head = [e["trial_id"], e["method"], e["is_default"]] + [e["val"].get(o.metric) for o in objectives]
        if "test" not in e:
            rows.append(head + ["", "", None, None, None, e["checkpoint"], e["error"]])
            continue
        for a in names:
            rows.append(head + [a, e["descriptions"][a], e["test"][a], e["samples"], e["eps"], e["checkpoint"], ""])
    _write_atomic(exp_dir / "pareto_verified.csv", _csv_text(header, rows))
    return json_path


def render_verified(report: dict[str, Any]) -> str:
    """Terminal table of pareto_verified.json: validation numbers beside test accuracies."""
    objectives = [Objective.from_dict(o) for o in report["objectives"]]
    attacks = [a["attack"] for a in report["attacks"]]
    header = ["trial", "method"] + [f"val {o.metric}" for o in objectives] + [f"test {a}" for a in attacks]
    rows = []
    for e in report["members"]:
        cells = [e["trial_id"] + (" *" if e.get("is_default") else ""), e.get("method") or "-"]
        cells += [_fmt(e["val"].get(o.metric)) for o in objectives]
        if "test" in e:
            cells += [f"{100 * e['test'][a]:.2f}%" for a in attacks]
        else:
            cells += ["error"] + [""] * (len(attacks) - 1)
        rows.append(cells)
    lines = _grid(header, rows)
    samples = {e.get("samples") for e in report["members"] if "test" in e}
    lines.append(f"test split, {', '.join(str(s) for s in sorted(samples))} samples; attacks:")
    lines += [f"  {a['attack']}: {a['description']}" for a in report["attacks"]]
    lines += [f"  {o.metric}: {o.label or o.metric}" for o in objectives]
    if any(e.get("is_default") for e in report["members"]):
        lines.append("* the official-defaults trial")
    lines += [f"{e['trial_id']}: {e['error']}" for e in report["members"] if "error" in e]
    return "\n".join(lines)

"""Render a search's review (`mtard.search.review.ReviewData`): files, a terminal table, the
Pareto figure and TensorBoard events.

* `write_review` computes the review and writes ``pareto.csv``, ``pareto.json``, ``trials.csv``
  and ``hypervolume.csv`` (strict JSON: NaN written as null; every file replaced atomically).
* `render_front_table` / `render_verified`: terminal tables; `pareto_figure`: a matplotlib figure;
  `TensorBoardReview`: a run named ``review`` next to the trials, so ``tensorboard --logdir
  runs/<name>`` shows the trials' curves *and* the front.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtard.search.files import REVIEW_RUN
from mtard.search.records import STOP_KEY, Objective, TrialRecord
from mtard.search.review import SAMPLES_KEY, ReviewData, compute_review, samples
from mtard.stats import accuracy_interval
from mtard.storage import atomic_write, json_safe
from mtard.text import text_table

__all__ = [
    "FIGURE_TAG",
    "REVIEW_RUN",
    "TensorBoardReview",
    "pareto_figure",
    "render_front_table",
    "render_verified",
    "review_json",
    "review_search",
    "write_review",
]

FIGURE_TAG = "pareto/front"
TABLE_TAG = "pareto/table"
HV_TRIALS_TAG = "hypervolume/vs_completed_trials"
HV_EPOCHS_TAG = "hypervolume/vs_training_epochs"
HV_DEVICE_TAG = "hypervolume/vs_device_seconds"  # TensorBoard steps are integers: seconds, not hours
HV_METHOD_TAG = "hypervolume_by_method/{method}"  # step = completed trials


# ---------------------------------------------------------------- files


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
    return json.dumps(json_safe(value))


def csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
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
        + [f"{o.metric}_{end}" for o in data.objectives for end in ("ci_low", "ci_high")]
        + [SAMPLES_KEY]
        + list(data.param_names)
        + ["method"]
        + [f"teacher_{role}" for role in roles]
        + ["checkpoint", "is_default", "epochs", "budget", "train_time_s", "device_seconds", "device_kind", "startup_s"]
    )

    def row(r: TrialRecord) -> list[Any]:
        return (
            [r.trial_id]
            + [r.metrics.get(o.metric) for o in data.objectives]
            + [_bound(v) for ci in data.intervals(r) for v in (ci.low, ci.high)]
            + [samples(r)]
            + [r.params.get(p) for p in data.param_names]
            + [r.method]
            + [r.teachers.get(role, "") for role in roles]
            + [r.checkpoint, bool(r.is_default), int(r.epochs), int(r.budget), float(r.train_time_s),
               float(r.device_seconds), r.device_kind, r.startup_s]
        )

    return header, row


def _bound(value: float) -> float | None:
    return None if math.isnan(value) else value


def _member(data: ReviewData, r: TrialRecord) -> dict[str, Any]:
    return {
        "trial_id": r.trial_id,
        "objectives": {o.metric: r.metrics.get(o.metric) for o in data.objectives},
        "intervals": {o.metric: [_bound(ci.low), _bound(ci.high)] for o, ci in zip(data.objectives, data.intervals(r))},
        "samples": samples(r),
        "params": dict(r.params),
        "method": r.method,
        "teachers": dict(r.teachers),
        "checkpoint": r.checkpoint,
        "is_default": bool(r.is_default),
        "epochs": r.epochs,
        "budget": r.budget,
        "train_time_s": r.train_time_s,
        "device_seconds": r.device_seconds,
        "device_kind": r.device_kind,
        "startup_s": r.startup_s,
        "metrics": dict(r.metrics),
    }


def review_json(data: ReviewData) -> dict[str, Any]:
    """The content of pareto.json (strict JSON: NaN written as null)."""
    return json_safe(
        {
            "objectives": [o.to_dict() for o in data.objectives],
            "reference": data.reference,
            "hypervolume": data.hypervolume,
            "hypervolume_by_method": data.hypervolume_by_method,
            "n_trials": len(data.records),
            "n_completed": data.n_completed,
            "n_eligible": len(data.eligible),
            "total_epochs": data.total_epochs,
            "interval": "95 % Wilson interval of each accuracy on its `samples` validation images (scipy.stats.binomtest)",
            "device_kind": data.device_kind,
            "device_hours": data.device_hours,
            "device_hours_per_front_member": data.device_hours_per_front_member,
            "stop_reason": data.stop_reason,
            "front": [_member(data, r) for r in data.front],
            "indistinguishable": data.ties(),
            "fronts_by_method": {m: [r.trial_id for r in rs] for m, rs in data.fronts_by_method.items()},
            "excluded": [{"trial_id": e.record.trial_id, "status": e.record.status, "reason": e.reason} for e in data.excluded],
        }
    )


def write_review(exp_dir: Path, records: list[TrialRecord], objectives: list[Objective], *, stop_reason: str = "") -> ReviewData:
    """Compute the review and write pareto.csv, pareto.json, trials.csv and hypervolume.csv into `exp_dir`."""
    data = compute_review(records, objectives, stop_reason=stop_reason)
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    header, row = _trial_columns(data)

    atomic_write(exp_dir / "pareto.csv", csv_text(header, (row(r) for r in data.front)))
    atomic_write(exp_dir / "pareto.json", json.dumps(review_json(data), indent=2, ensure_ascii=False) + "\n")

    front_ids = {id(r) for r in data.front}
    reasons = {id(e.record): e.reason for e in data.excluded}
    trials_header = header[:1] + ["status", "on_front", "reason"] + header[1:]
    atomic_write(
        exp_dir / "trials.csv",
        csv_text(
            trials_header,
            ([*row(r)[:1], r.status, id(r) in front_ids, reasons.get(id(r), ""), *row(r)[1:]] for r in data.records),
        ),
    )

    methods = data.methods
    atomic_write(
        exp_dir / "hypervolume.csv",
        csv_text(
            ["n_completed", "total_epochs", "device_hours", "hypervolume", "trial_id"] + [f"hypervolume_{m}" for m in methods],
            (
                [h.n_completed, h.total_epochs, h.device_seconds / 3600.0, h.hypervolume, h.trial_id]
                + [h.hypervolume_by_method.get(m) for m in methods]
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


def render_front_table(data: ReviewData) -> str:
    """The front as a terminal table, then one line per excluded trial with its reason."""
    ref = ", ".join(_fmt(r) for r in data.reference)
    lines = [
        f"Pareto front: {len(data.front)} of {len(data.eligible)} eligible trials "
        f"({data.n_completed} completed, {len(data.records)} in all, {data.total_epochs} epochs trained); "
        f"hypervolume {_fmt_hv(data.hypervolume)} (reference {ref})"
    ]
    if data.device_kind:
        lines.append(f"cost: {_cost(data)}")
    if data.stop_reason:
        lines.append(f"the search started no more trials: {data.stop_reason}")
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
            + [_with_interval(v, ci) for v, ci in zip(data.values(r), data.intervals(r))]
            + [r.method or "-"]
            + [r.teachers.get(role, "-") for role in roles]
            + [_fmt(r.params.get(p)) for p in params]
            + [str(r.epochs), r.checkpoint or "-"]
        )
    if rows:
        lines += text_table(header, rows)
        if any(r.is_default for r in data.front):
            lines.append("* the official-defaults trial")
        lines += _noise_lines(data)
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


def _with_interval(value: float, ci) -> str:
    return f"{value:.4f}" if math.isnan(ci.low) else f"{value:.4f} [{ci.low:.3f}, {ci.high:.3f}]"


def _noise_lines(data: ReviewData) -> list[str]:
    """How many images the front's accuracies rest on, and which neighbours they cannot tell apart."""
    ns = sorted({n for r in data.front if (n := samples(r)) is not None})
    if not ns:
        return []
    lines = [f"[low, high]: 95 % Wilson interval on {', '.join(map(str, ns))} validation images"]
    lines += [f"  {t['members'][0]} and {t['members'][1]} are indistinguishable on {t['objective']} (intervals overlap)"
              for t in data.ties()]
    return lines


def _cost(data: ReviewData) -> str:
    unit = f"{data.device_kind}-hours"
    per = data.device_hours_per_front_member
    each = f", {per:.4g} per front member" if math.isfinite(per) else ""
    return f"{data.device_hours:.4g} {unit} in the trials' epochs ({data.total_epochs} epochs){each}"


def _markdown(data: ReviewData) -> str:
    """The front as a Markdown table (TensorBoard's text dashboard renders it)."""
    header = ["trial"] + [o.metric for o in data.objectives] + ["method"] + list(data.param_names)
    rows = [
        [r.trial_id + (" (defaults)" if r.is_default else "")]
        + [_with_interval(v, ci) for v, ci in zip(data.values(r), data.intervals(r))]
        + [r.method or "-"]
        + [_fmt(r.params.get(p)) for p in data.param_names]
        for r in data.front
    ]
    text = [f"**hypervolume {_fmt_hv(data.hypervolume)}**, {len(data.front)} on the front of {len(data.eligible)} eligible trials"]
    if data.device_kind:
        text.append(f"cost: {_cost(data)}")
    if data.stop_reason:
        text.append(f"the search started no more trials: {data.stop_reason}")
    text.append("")
    text.append("| " + " | ".join(header) + " |")
    text.append("|" + "---|" * len(header))
    text += ["| " + " | ".join(r) + " |" for r in rows]
    text += ["", *_noise_lines(data)]
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


@dataclass
class _Canvas:
    """What each layer of the Pareto figure needs: the axes, where a trial is drawn, its colour."""

    ax: Any
    data: ReviewData
    dirs: list[str]
    colour: dict[str, Any]  # method -> colour
    one: bool  # one objective: x is the completion order
    order: dict[int, int]  # id(record) -> completion order (1-based)

    @property
    def multi(self) -> bool:
        return len(self.data.fronts_by_method) > 1

    @property
    def front_ids(self) -> set[int]:
        return {id(r) for r in self.data.front}

    @property
    def front_colour(self):
        return "black" if self.multi else self.colour[self.data.front[0].method]

    def xy(self, r: TrialRecord) -> tuple[float, float]:
        v = self.data.values(r)
        return (float(self.order[id(r)]), v[0]) if self.one else (v[0], v[1])

    def finite(self, r: TrialRecord) -> bool:
        return all(math.isfinite(c) for c in self.xy(r))


def pareto_figure(data: ReviewData):  # -> matplotlib.figure.Figure
    """All trials, the front as a staircase, the defaults trial marked; one colour per method.

    Built on a bare `Figure` with the Agg canvas: no pyplot state, no display needed.
    With one objective the x axis is the completion order; with more than two, the first
    two objectives are drawn. With the front's intervals known, a second panel zooms on it.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    objs = data.objectives
    one = len(objs) == 1
    zoom = not one and any(not math.isnan(ci.low) for r in data.front for ci in data.intervals(r)[:2])
    fig = Figure(figsize=(15, 6) if zoom else (8, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(1, 2, width_ratios=[1, 1])[0] if zoom else fig.add_subplot()
    palette = colormaps["tab10"]
    canvas = _Canvas(
        ax, data, ["max", objs[0].direction] if one else [objs[0].direction, objs[1].direction],
        {m: palette(k % 10) for k, m in enumerate(data.methods)}, one, {id(r): k for k, r in enumerate(data.records, 1)},
    )
    for layer in (_draw_eligible, _draw_excluded, _draw_method_fronts, _draw_front, _draw_defaults, _extend_front, _label):
        layer(canvas)
    if zoom:
        _front_zoom(fig.axes[1], data, canvas.dirs, [canvas.colour[r.method] for r in data.front])
    return fig


def _draw_eligible(c: _Canvas) -> None:
    """Eligible trials off the front: filled, faint."""
    for m in c.data.methods:
        pts = [c.xy(r) for r in c.data.eligible if r.method == m and id(r) not in c.front_ids]
        if pts:
            c.ax.scatter(*zip(*pts), s=28, color=c.colour[m], alpha=0.45, edgecolors="none",
                         label=f"{m or 'trial'} (complete)" if c.multi else "complete trials")


def _draw_excluded(c: _Canvas) -> None:
    """Excluded trials with numbers: hollow. Those MO-ASHA stopped at a rung (their values there),
    faint and marked by that epoch; the others (a time budget, failed, running) grey."""
    by_rung = [r for r, _ in c.data.excluded if c.finite(r) and r.metrics.get(STOP_KEY)]
    pts = [c.xy(r) for r in by_rung]
    if pts:
        c.ax.scatter(*zip(*pts), s=24, facecolors="none", edgecolors="tab:red", alpha=0.5, linewidths=0.8,
                     label="stopped by MO-ASHA (values at its rung)")
        for r, (x, y) in zip(by_rung, pts):
            c.ax.annotate(f"e{r.epochs}", (x, y), xytext=(3, -8), textcoords="offset points", fontsize=6, color="tab:red", alpha=0.7)
    pts = [c.xy(r) for r, _ in c.data.excluded if c.finite(r) and not r.metrics.get(STOP_KEY)]
    if pts:
        c.ax.scatter(*zip(*pts), s=28, facecolors="none", edgecolors="0.55", linewidths=0.9,
                     label="not eligible (stopped / failed / running)")


def _draw_method_fronts(c: _Canvas) -> None:
    """One front per method, when several methods compete."""
    if not c.multi:
        return
    for m, rs in c.data.fronts_by_method.items():
        sx, sy = _staircase([c.xy(r) for r in rs], c.dirs)
        c.ax.plot(sx, sy, color=c.colour[m], lw=1.4, alpha=0.9, label=f"{m or '-'} front (HV {_fmt_hv(c.data.hypervolume_by_method[m])})")
        own = [c.xy(r) for r in rs if id(r) not in c.front_ids]
        if own:
            c.ax.scatter(*zip(*own), s=36, color=c.colour[m], edgecolors="black", linewidths=0.4, zorder=3)


def _draw_front(c: _Canvas) -> None:
    """The overall front: a staircase through its members, each named."""
    if not c.data.front:
        return
    fpts = [c.xy(r) for r in c.data.front]
    sx, sy = _staircase(fpts, c.dirs)
    c.ax.plot(sx, sy, color=c.front_colour, lw=2.2, zorder=4, label=f"Pareto front (HV {_fmt_hv(c.data.hypervolume)})")
    c.ax.scatter(*zip(*fpts), s=70, color=[c.colour[r.method] for r in c.data.front], edgecolors="black", linewidths=1.0, zorder=5)
    for r, (x, y) in zip(c.data.front, fpts):
        c.ax.annotate(r.trial_id, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7, zorder=6)


def _draw_defaults(c: _Canvas) -> None:
    """The official-defaults trial(s): a star, hollow when not eligible."""
    eligible_ids = {id(r) for r in c.data.eligible}
    for r in c.data.records:
        if r.is_default and c.finite(r):
            eligible = id(r) in eligible_ids
            c.ax.scatter(*c.xy(r), marker="*", s=260, zorder=7, linewidths=1.0, edgecolors="black",
                         facecolors=c.colour[r.method] if eligible else "none",
                         label=f"official defaults{f' ({r.method})' if r.method else ''}" + ("" if eligible else " - not eligible"))


def _extend_front(c: _Canvas) -> None:
    """The front's staircase extended to the plot's edges, so the dominated region reads as a region."""
    if not c.data.front or c.one:
        return
    fpts = [c.xy(r) for r in c.data.front]
    c.ax.autoscale_view()
    c.ax.set_autoscale_on(False)
    (x0, x1), (y0, y1) = c.ax.get_xlim(), c.ax.get_ylim()
    worse_x = x0 if c.dirs[0] == "max" else x1
    worse_y = y0 if c.dirs[1] == "max" else y1
    sign = [1 if d == "max" else -1 for d in c.dirs]
    best_y = max(fpts, key=lambda p: sign[1] * p[1])
    best_x = max(fpts, key=lambda p: sign[0] * p[0])
    c.ax.plot([worse_x, best_y[0]], [best_y[1], best_y[1]], color=c.front_colour, lw=1.0, ls=":", zorder=4)
    c.ax.plot([best_x[0], best_x[0]], [best_x[1], worse_y], color=c.front_colour, lw=1.0, ls=":", zorder=4)


def _label(c: _Canvas) -> None:
    """Axis labels, the title (hypervolume, counts), grid and legend."""
    objs, data = c.data.objectives, c.data
    c.ax.set_xlabel("trial (completion order)" if c.one else objs[0].axis_label)
    c.ax.set_ylabel(objs[0].axis_label if c.one else objs[1].axis_label)
    extra = f" (first two of {len(objs)} objectives)" if len(objs) > 2 else ""
    c.ax.set_title(
        f"Pareto front{extra}: hypervolume {_fmt_hv(data.hypervolume)}\n"
        f"{len(data.front)} on the front, {len(data.eligible)} eligible of {len(data.records)} trials, "
        f"{data.total_epochs} epochs trained",
        fontsize=10,
    )
    c.ax.grid(True, alpha=0.3)
    if c.ax.get_legend_handles_labels()[0]:
        c.ax.legend(fontsize=8, loc="best", framealpha=0.85)


def _front_zoom(ax, data: ReviewData, dirs: list[str], colours: list) -> None:
    """The front's region: its members with 95 % Wilson error bars, and the trials that fall in that window."""
    objs = data.objectives
    pts = [data.values(r)[:2] for r in data.front]
    cis = [data.intervals(r)[:2] for r in data.front]
    lows = [[ci[k].low if not math.isnan(ci[k].low) else p[k] for p, ci in zip(pts, cis)] for k in (0, 1)]
    highs = [[ci[k].high if not math.isnan(ci[k].high) else p[k] for p, ci in zip(pts, cis)] for k in (0, 1)]
    limits = []
    for k in (0, 1):
        lo, hi = min(lows[k]), max(highs[k])
        pad = max(0.1 * (hi - lo), 0.002)
        limits.append((lo - pad, hi + pad))
    front_ids = {id(r) for r in data.front}
    near = [data.values(r)[:2] for r in data.eligible if id(r) not in front_ids]
    near = [p for p in near if limits[0][0] <= p[0] <= limits[0][1] and limits[1][0] <= p[1] <= limits[1][1]]
    if near:
        ax.scatter(*zip(*near), s=24, color="0.5", alpha=0.5, edgecolors="none", label="other complete trials")
    sx, sy = _staircase(pts, dirs)
    ax.plot(sx, sy, color="black", lw=1.0, alpha=0.5, zorder=2)
    for r, p, ci, colour in zip(data.front, pts, cis, colours):
        err = [[[p[k] - (p[k] if math.isnan(ci[k].low) else ci[k].low)], [(p[k] if math.isnan(ci[k].high) else ci[k].high) - p[k]]]
               for k in (0, 1)]
        ax.errorbar([p[0]], [p[1]], xerr=err[0], yerr=err[1], fmt="*" if r.is_default else "o", color=colour, ms=8,
                    capsize=3, mec="black", zorder=4)
        ax.annotate(r.trial_id, p, xytext=(5, 4), textcoords="offset points", fontsize=7, zorder=5)
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ns = sorted({n for r in data.front if (n := samples(r)) is not None})
    ties = data.ties()
    ax.set_title(
        f"zoom on the front: 95 % Wilson intervals on {', '.join(map(str, ns))} validation images\n"
        f"{len(ties)} neighbour pair(s) indistinguishable on an objective (bars overlap)",
        fontsize=10,
    )
    ax.set_xlabel(objs[0].axis_label)
    ax.set_ylabel(objs[1].axis_label)
    ax.grid(True, alpha=0.3)
    if near:
        ax.legend(fontsize=8, loc="best")


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
                w.add_scalar(HV_DEVICE_TAG, h.hypervolume, round(h.device_seconds))
            for m, hv in h.hypervolume_by_method.items():
                if math.isfinite(hv):
                    w.add_scalar(HV_METHOD_TAG.format(method=m or "none"), hv, h.n_completed)
            done = h.n_completed
        # The hypervolume at every finished trial's epochs, not only at completed ones: trials that
        # stop or fail after the last completed one trained epochs too, and the last point must say so.
        if math.isfinite(data.hypervolume) and data.total_epochs > int(self._state.get("epochs_through", 0)):
            if not data.history or data.total_epochs > data.history[-1].total_epochs:
                w.add_scalar(HV_EPOCHS_TAG, data.hypervolume, data.total_epochs)
            self._state["epochs_through"] = data.total_epochs
        # A figure whenever a trial finished (whatever its status), so the last one shows the final state.
        if len(data.records) > int(self._state["figure_step"]):
            w.add_figure(FIGURE_TAG, pareto_figure(data), len(data.records), close=True)
            w.add_text(TABLE_TAG, _markdown(data), len(data.records))
            self._state["figure_step"] = len(data.records)
        self._state["scalars_through"] = done
        w.flush()
        atomic_write(self._state_path, json.dumps(self._state) + "\n")

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardReview:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def review_search(
    exp_dir: Path, records: list[TrialRecord], objectives: list[Objective], *,
    board: TensorBoardReview | None = None, push: Callable[[], None] | None = None, stop_reason: str = "",
) -> ReviewData:
    """One review of a search, in its one order: compute it, write its files into `exp_dir`, draw it
    in TensorBoard (`board`: a caller that reviews again keeps one open), then `push` the files to
    the storage. The search's callback after each trial, the end of `mtard search` and
    `mtard compare` all review through here. `stop_reason`: why the search started no more trials."""
    data = write_review(exp_dir, records, objectives, stop_reason=stop_reason)
    if board is not None:
        board.write(data)
    if push is not None:
        push()
    return data


# ---------------------------------------------------------------- test-set verification


def _half_width(accuracy: float, n: int) -> str:
    ci = accuracy_interval(accuracy, n)
    return f"{50 * (ci.high - ci.low):.1f}"


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
            cells += [f"{100 * e['test'][a]:.2f}% ±{_half_width(e['test'][a], e['samples'])}" for a in attacks]
        else:
            cells += ["error"] + [""] * (len(attacks) - 1)
        rows.append(cells)
    lines = text_table(header, rows)
    samples = {e.get("samples") for e in report["members"] if "test" in e}
    lines.append(f"test split, {', '.join(str(s) for s in sorted(samples))} samples (±: half the 95 % Wilson interval, in points); attacks:")
    lines += [f"  {a['attack']}: {a['description']}" for a in report["attacks"]]
    lines += [f"  {o.metric}: {o.label or o.metric}" for o in objectives]
    if any(e.get("is_default") for e in report["members"]):
        lines.append("* the official-defaults trial")
    lines += [f"{e['trial_id']}: {e['error']}" for e in report["members"] if "error" in e]
    return "\n".join(lines)


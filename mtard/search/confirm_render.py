"""Render a confirmation (`mtard.search.confirm_review.ConfirmData`): confirmed.json / .csv / .md,
a terminal table, and the proxy -> confirmed figure (a PNG and the TensorBoard run `review/`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mtard.search.confirm_review import BASELINE, ConfirmData, MemberSummary
from mtard.search.files import REVIEW_RUN
from mtard.search.render import _staircase, csv_text
from mtard.stats import accuracy_interval
from mtard.storage import atomic_write, json_safe
from mtard.text import text_table

FIGURE_TAG = "confirm/proxy_to_confirmed"
TABLE_TAG = "confirm/table"
FIGURE_FILE = "confirmed.png"
#: Column titles of the papers' table.
TITLES = {"clean": "Clean", "fgsm": "FGSM", "fgsm_rs": "FGSM (RS)", "pgd20_trades": "PGD-20 (TRADES)",
          "pgd20_sat": "PGD-20 (SAT)", "cw": "CW∞", "autoattack": "AutoAttack"}


def _label(s: MemberSummary) -> str:
    m = s.member
    if m.kind == BASELINE:
        return f"{m.method} (baseline)"
    return f"{m.member_id} ({m.method}{', official defaults' if m.is_default else ''})"


def confirmed_json(data: ConfirmData, epochs: int) -> dict[str, Any]:
    """The content of confirmed.json (strict JSON: NaN written as null)."""
    members = []
    for s in data.summaries:
        members.append({
            **s.member.to_dict(),
            "confirmed_front": s.member.member_id in data.front,
            "excluded": data.excluded.get(s.member.member_id, ""),
            "runs": [{**r.to_dict(), "test_interval": {a: _interval(v, r.samples) for a, v in r.test.items()}} for r in s.runs],
            "test": {a: {"n_seeds": x.n, "mean": x.mean, "sd": x.sd, "ci_low": x.interval.low, "ci_high": x.interval.high}
                     for a, x in s.attacks.items()},
        })
    return json_safe({
        "split": "test",
        "epochs": epochs,
        "seeds": data.seeds,
        "attacks": data.attacks,
        "objectives": [o.to_dict() for o in data.objectives],
        "objective_attacks": data.objective_attacks,
        "interval": "per run: Wilson 95 % binomial interval on its test images; per member: 95 % Student-t interval of the mean over seeds",
        "members": members,
        "confirmed_front": data.front,
        "indistinguishable": data.indistinguishable,
        "kendall_tau": data.tau,
        "kendall_tau_members": data.tau_members,
        "proxy_front": data.proxy_front,
        "proxy_front_surviving": data.survivors,
        "proxy_front_survival": data.survival,
    })


def _interval(accuracy: float, n: int) -> list[float]:
    ci = accuracy_interval(accuracy, n)
    return [ci.low, ci.high]


def confirmed_csv(data: ConfirmData) -> str:
    """One row per member x seed (accuracy, Wilson interval), then one `mean` row per member (mean, sd, t interval)."""
    header = ["member", "kind", "method", "seed", "status", "reason", "epochs", "samples"]
    for a in data.attacks:
        header += [a, f"{a}_sd", f"{a}_ci_low", f"{a}_ci_high"]
    rows = []
    for s in data.summaries:
        m = s.member
        for r in s.runs:
            row: list[Any] = [m.member_id, m.kind, m.method, r.seed, r.status, r.reason, r.epochs, r.samples]
            for a in data.attacks:
                v = r.test.get(a)
                lo, hi = _interval(v, r.samples) if v is not None else (None, None)
                row += [v, None, lo, hi]
            rows.append(row)
        ok = sum(r.ok for r in s.runs)
        row = [m.member_id, m.kind, m.method, "mean", f"{ok}/{len(s.runs)} seeds complete", data.excluded.get(m.member_id, ""), None, None]
        for a in data.attacks:
            x = s.attacks[a]
            row += [x.mean, x.sd, x.interval.low, x.interval.high]
        rows.append(row)
    return csv_text(header, rows)


def _pm(mean: float, sd: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.2f}" + ("" if math.isnan(sd) else f" ± {100 * sd:.2f}")


def _fmt_tau(t: float) -> str:
    return "n/a" if math.isnan(t) else f"{t:+.2f}"


def summary_lines(data: ConfirmData) -> list[str]:
    """The confirmed front, ties, τ, survival and failures, one line each."""
    lines = [f"confirmed front (means over seeds, test split): {', '.join(data.front) or 'empty'}"]
    for t in data.indistinguishable:
        attack = data.objective_attacks[t["objective"]]
        lines.append(f"  {t['members'][0]} and {t['members'][1]} are indistinguishable on test {attack} "
                     f"(objective {t['objective']}): their 95 % intervals over seeds overlap")
    survived = f"{len(data.survivors)} of {len(data.proxy_front)}"
    lines.append(f"proxy front surviving: {survived} ({', '.join(data.survivors) or 'none'})")
    lines.append("Kendall's tau, proxy validation order vs confirmed test order (over "
                 f"{len(data.tau_members)} members): " + ", ".join(f"{m} {_fmt_tau(t)}" for m, t in data.tau.items()))
    for s in data.summaries:
        for r in s.failures:
            if r.status != "running":
                lines.append(f"{s.member.member_id} seed {r.seed}: {r.status}{f' ({r.reason})' if r.reason else ''}")
    return lines


def confirmed_markdown(data: ConfirmData, epochs: int) -> str:
    """The papers' table: test accuracy (%) as mean ± sd over seeds, one row per member, baselines included."""
    header = ["member", "seeds"] + [TITLES.get(a, a) for a in data.attacks]
    lines = [f"Test accuracy (%), mean ± sd over seeds {', '.join(map(str, data.seeds))} ({epochs} epochs each); "
             f"**bold**: on the confirmed front.", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in data.summaries:
        name = _label(s)
        if s.member.member_id in data.front:
            name = f"**{name}**"
        ok = sum(r.ok for r in s.runs)
        lines.append("| " + " | ".join([name, f"{ok}/{len(s.runs)}"] + [_pm(s.attacks[a].mean, s.attacks[a].sd) for a in data.attacks]) + " |")
    samples = sorted({r.samples for s in data.summaries for r in s.runs if r.samples})
    lines += ["", f"Test images per run: {', '.join(map(str, samples)) or '-'}."]
    lines += [""] + [f"- {line.strip()}" for line in summary_lines(data)]
    return "\n".join(lines) + "\n"


def render_confirmed(data: ConfirmData) -> str:
    """The terminal table: mean ± sd (%) per attack, seeds complete, front membership; then the summary lines."""
    header = ["member", "kind", "seeds"] + [TITLES.get(a, a) for a in data.attacks] + ["front"]
    rows = []
    for s in data.summaries:
        ok = sum(r.ok for r in s.runs)
        rows.append([s.member.member_id + (" *" if s.member.is_default else ""), s.member.kind, f"{ok}/{len(s.runs)}"]
                    + [_pm(s.attacks[a].mean, s.attacks[a].sd) for a in data.attacks]
                    + ["yes" if s.member.member_id in data.front else "-"])
    lines = text_table(header, rows)
    lines.append("test accuracy (%), mean ± sd over seeds; * the official-defaults trial")
    return "\n".join(lines + summary_lines(data))


def confirm_figure(data: ConfirmData):  # -> matplotlib.figure.Figure
    """Each member's proxy point (validation, hollow), its confirmed point (test mean, 95 % t-interval
    error bars) and an arrow between them; baselines confirmed only; the confirmed front as a staircase."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    objs = data.objectives[:2]
    if len(objs) < 2:
        ax.text(0.5, 0.5, "the figure needs two objectives", ha="center", transform=ax.transAxes)
        return fig
    palette = colormaps["tab10"]
    attacks = [data.objective_attacks[o.metric] for o in objs]

    def point(s: MemberSummary) -> tuple[float, float]:
        return s.mean(attacks[0]), s.mean(attacks[1])

    for k, s in enumerate(data.summaries):
        colour = palette(k % 10)
        cx, cy = point(s)
        proxy = [s.member.proxy.get(o.metric) for o in objs]
        has_proxy = all(isinstance(v, (int, float)) and math.isfinite(v) for v in proxy)
        if has_proxy:
            ax.scatter(*proxy, s=60, facecolors="none", edgecolors=[colour], linewidths=1.4, zorder=3)
        if not (math.isfinite(cx) and math.isfinite(cy)):
            continue
        # An accuracy lies in [0, 1]: the t interval of a mean over few seeds may not; draw it clipped.
        ix, iy = s.attacks[attacks[0]].interval, s.attacks[attacks[1]].interval
        xerr = [[cx - max(ix.low, 0.0)], [min(ix.high, 1.0) - cx]] if math.isfinite(ix.low) else None
        yerr = [[cy - max(iy.low, 0.0)], [min(iy.high, 1.0) - cy]] if math.isfinite(iy.low) else None
        marker = "s" if s.member.kind == BASELINE else ("*" if s.member.is_default else "o")
        ax.errorbar([cx], [cy], xerr=xerr, yerr=yerr, fmt=marker, color=colour, ms=11 if marker == "*" else 7,
                    capsize=3, zorder=4, label=_label(s) + (" ◆ front" if s.member.member_id in data.front else ""))
        if has_proxy:
            ax.annotate("", xy=(cx, cy), xytext=tuple(proxy),
                        arrowprops={"arrowstyle": "->", "color": colour, "alpha": 0.7, "lw": 1.2}, zorder=2)
    front = [point(data.summary(m)) for m in data.front]
    if len(front) > 0:
        sx, sy = _staircase(front, [o.direction for o in objs])
        ax.plot(sx, sy, color="black", lw=1.2, alpha=0.6, zorder=1, label="confirmed front (means)")
    missing = [f"{s.member.member_id}: {len(s.failures)} of {len(s.runs)} seeds failed" for s in data.summaries if s.failures]
    if missing:
        ax.text(0.01, 0.01, "not confirmed on every seed — " + "; ".join(missing), transform=ax.transAxes, fontsize=7,
                color="tab:red", va="bottom")
    ax.set_xlabel(f"{objs[0].label or objs[0].metric} → test {attacks[0]}")
    ax.set_ylabel(f"{objs[1].label or objs[1].metric} → test {attacks[1]}")
    ax.set_title(f"proxy (hollow: validation, 1 seed) → confirmed (test, mean ± 95 % CI over {len(data.seeds)} seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def write_confirmed(folder: Path, data: ConfirmData, epochs: int, *, tensorboard: bool = True) -> None:
    """confirmed.json, confirmed.csv, confirmed.md and confirmed.png in `folder`; the figure and the
    table also into the TensorBoard run `folder/review` (step = runs recorded)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "confirmed.json", json.dumps(confirmed_json(data, epochs), indent=2, ensure_ascii=False) + "\n")
    atomic_write(folder / "confirmed.csv", confirmed_csv(data))
    markdown = confirmed_markdown(data, epochs)
    atomic_write(folder / "confirmed.md", markdown)
    fig = confirm_figure(data)
    atomic_write(folder / FIGURE_FILE, lambda path: fig.savefig(path, format="png"))
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        step = sum(r.status != "running" for s in data.summaries for r in s.runs)
        with SummaryWriter(str(folder / REVIEW_RUN)) as w:
            w.add_figure(FIGURE_TAG, fig, step, close=True)
            w.add_text(TABLE_TAG, markdown, step)

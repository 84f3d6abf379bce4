"""The MTARD paper's comparison in miniature, on the embedded 8×8 digits default.

Trains natural / SAT / TRADES / ARD / RSLAD / MTARD students with the same student
architecture, epochs and schedule (the bundled `digits` config unless `--set` changes
it) through the public API only:

    cfg = mtard.config.load_config("digits", overrides)
    mtard.train.train_local(cfg)

The distillation methods use the project's own teachers from the catalog
(`teachers.clean` / `teachers.robust` of the config), trained on first use by
`mtard.train.ensure_teachers` into `--teachers-dir` (default: a fresh temporary
directory, so a stale cache never enters the comparison).

It prints a Markdown table of the last epoch's validation clean accuracy, validation
PGD accuracy (the config's `eval` attack, named in the header), their mean and the
training time (sum of the per-epoch training loops, validation excluded); with several
seeds every cell is mean ± sample std over seeds. It also evaluates the teachers
themselves with the same attack, prints MTARD's final balance state (τ, w), and
states plainly whether MTARD beats or dominates the baselines in this run.

Every run writes its directory (config.yaml, metrics.jsonl/.csv, checkpoint.pt) under
`--out`; `results.json` and `results.md` there hold the per-seed numbers and the table.

Usage::

    python benchmarks/paper_miniature.py --out runs/miniature --seeds 0 1 2 --threads 1
    python benchmarks/paper_miniature.py --methods sat mtard --set teachers.robust=digits_cnn_sat
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from mtard.config import load_config, to_dict
from mtard.data import load_splits
from mtard.logs import read_metrics
from mtard.loop import Context, resolve_device, validation_metrics
from mtard.methods import NEEDS_TEACHERS
from mtard.teachers import build_teacher, checkpoint_path, get_entry, load_catalog, sidecar
from mtard.train import ensure_teachers, train_local

ALL_METHODS = ["natural", "sat", "trades", "ard", "rslad", "mtard"]
BASELINES_FOR_VERDICT = ["sat", "trades", "rslad", "ard"]


def build_overrides(args: argparse.Namespace, method: str, seed: int, base_epochs: int, base_milestones: list[int]) -> list[str]:
    over = [f"method.name={method}", f"runtime.seed={seed}", "runtime.progress=false", f"name={method}_s{seed}", f"out_dir={args.out}"]
    if args.threads:
        over.append(f"runtime.threads={args.threads}")
    if args.device:
        over.append(f"runtime.device={args.device}")
    if args.epochs and args.epochs != base_epochs:
        # Keep the schedule's shape: milestones scale with the epoch budget (a --set wins).
        ms = sorted({max(1, round(m * args.epochs / base_epochs)) for m in base_milestones if round(m * args.epochs / base_epochs) < args.epochs})
        over += [f"optim.epochs={args.epochs}", f"optim.milestones={json.dumps(ms)}"]
    return over + list(args.set)


def finished(cfg, run_dir: Path) -> list[dict] | None:
    """The metrics of an identical, completed earlier run (for --reuse), else None."""
    rows = read_metrics(run_dir)
    cfg_file = run_dir / "config.yaml"
    if not rows or rows[-1].get("epoch") != cfg.optim.epochs or not cfg_file.is_file():
        return None
    import yaml

    saved = yaml.safe_load(cfg_file.read_text())
    want = to_dict(cfg)
    for d in (saved, want):
        d["runtime"].pop("progress", None)
    return rows if saved == want else None


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return "n/a"
    return f"{scale * m:.{digits}f}" if math.isnan(s) else f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def eval_teachers(cfg, roles: list[str], device: torch.device) -> list[dict]:
    """The teachers of `cfg` in `roles`, evaluated with the students' validation attack on the same split."""
    catalog = load_catalog(cfg.teachers.catalog)
    splits = load_splits(cfg.data)
    info = splits.info
    out = []
    for role in roles:
        name = getattr(cfg.teachers, role)
        entry = get_entry(catalog, name)
        frozen = build_teacher(entry, checkpoint_path(entry), num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)
        model = frozen.model.to(device)  # the bare net: FrozenTeacher.forward is no-grad, PGD needs input gradients
        acc = validation_metrics(model, cfg, splits, Context(device), nullcontext())
        record = sidecar(entry)
        out.append({"role": role, "name": name, "arch": entry.arch, "recipe": entry.recipe, "method": record.get("method", "?"),
                    "epochs": record.get("epochs", "?"), **acc})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="digits", help="bundled config or YAML file (default: digits)")
    ap.add_argument("--out", default="runs/paper_miniature", help="results directory")
    ap.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    ap.add_argument("--seeds", "--seed", nargs="+", type=int, default=[0], help="runtime.seed values; several give mean ± std")
    ap.add_argument("--epochs", type=int, default=0, help="epochs for every student (milestones scaled; default: the config's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override, repeatable")
    ap.add_argument("--teachers-dir", default="", help="teacher directory (default: a temporary one, teachers retrained)")
    ap.add_argument("--threads", type=int, default=0, help="runtime.threads for every run (0 = the config's)")
    ap.add_argument("--device", default="", help="runtime.device (default: the config's)")
    ap.add_argument("--reuse", action="store_true", help="skip runs whose directory holds an identical finished run")
    args = ap.parse_args(argv)
    args.out = str(Path(args.out).resolve())

    tmp = None
    if args.teachers_dir:
        os.environ["MTARD_TEACHERS"] = str(Path(args.teachers_dir).resolve())
    else:
        tmp = tempfile.TemporaryDirectory(prefix="mtard_teachers_")
        os.environ["MTARD_TEACHERS"] = tmp.name

    base = load_config(args.config)
    probe = load_config(args.config, build_overrides(args, args.methods[0], args.seeds[0], base.optim.epochs, base.optim.milestones))
    roles = [r for r in ("clean", "robust") if any(r in NEEDS_TEACHERS[m] for m in args.methods)]
    e, o = probe.eval, probe.optim
    attack_name = f"PGD-{e.pgd_steps} (L∞ ε={e.eps:g}, step {e.pgd_step_size:g}, uniform start)"
    n_val = len(load_splits(probe.data).val)
    args.n_val = min(n_val, e.max_samples) if e.max_samples else n_val
    print(f"# MTARD paper in miniature — config {args.config}: student {probe.student.arch}, {o.epochs} epochs "
          f"(milestones {o.milestones}), lr {o.lr:g}, batch {probe.data.batch_size}, train attack ε={probe.attack.eps:g} "
          f"{probe.attack.steps}×{probe.attack.step_size:g}; seeds {args.seeds}; torch {torch.__version__}, "
          f"{probe.runtime.threads or torch.get_num_threads()} threads; teachers in {os.environ['MTARD_TEACHERS']}")
    if args.set:
        print(f"# extra overrides: {' '.join(args.set)}")

    if probe.runtime.threads:
        torch.set_num_threads(probe.runtime.threads)  # also for the teachers' training below
    # Teachers first (trained here if missing), so their time is not charged to the first student.
    catalog = load_catalog(probe.teachers.catalog)
    names = [(f"teachers.{r}", getattr(probe.teachers, r)) for r in roles]
    for field, name in names:
        if not name:
            ap.error(f"{field} is empty but {', '.join(args.methods)} needs it; pass --set {field}=NAME")
    t0 = time.perf_counter()
    missing = [n for _, n in names if not checkpoint_path(get_entry(catalog, n)).is_file()]
    ensure_teachers(catalog, names, probe.data.name, progress=False)
    if missing:
        print(f"# trained teachers {missing} in {time.perf_counter() - t0:.0f} s (wall)")
    device = resolve_device(probe.runtime.device)
    teachers = eval_teachers(probe, roles, device)

    results: dict[str, list[dict]] = {}
    for method in args.methods:
        for seed in args.seeds:
            cfg = load_config(args.config, build_overrides(args, method, seed, base.optim.epochs, base.optim.milestones))
            rows = finished(cfg, cfg.run_dir) if args.reuse else None
            if rows is None:
                if cfg.run_dir.exists():
                    for f in ("metrics.jsonl", "metrics.csv"):  # MetricsLog appends: start clean
                        (cfg.run_dir / f).unlink(missing_ok=True)
                w0 = time.perf_counter()
                train_local(cfg)
                wall = time.perf_counter() - w0
                rows = read_metrics(cfg.run_dir)
                how = f"{wall:.0f} s wall"
            else:
                wall, how = float("nan"), "reused"
            last = rows[-1]
            rec = {"method": method, "seed": seed, "clean": last["val_clean_acc"], "pgd": last["val_pgd_acc"],
                   "train_time_s": sum(r["train_time_s"] for r in rows), "wall_s": wall,
                   "final": {k: v for k, v in last.items() if k in ("w_adv", "w_nat", "tau_adv", "tau_nat", "kl_adv", "kl_nat", "loss")},
                   "run_dir": str(cfg.run_dir)}
            results.setdefault(method, []).append(rec)
            print(f"  {method:<8} seed {seed}: clean {100 * rec['clean']:.1f}  PGD {100 * rec['pgd']:.1f}  "
                  f"train {rec['train_time_s']:.0f} s ({how})", flush=True)

    lines = table(results, teachers, probe, attack_name, args)
    text = "\n".join(lines)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"argv": sys.argv[1:], "attack": attack_name, "teachers": teachers, "runs": results}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


def table(results: dict[str, list[dict]], teachers: list[dict], cfg, attack_name: str, args) -> list[str]:
    n = len(args.seeds)
    cell = f"mean ± sample std over {n} seeds {args.seeds}" if n > 1 else f"one seed ({args.seeds[0]}), no spread"
    val_n = f"{args.n_val} validation images"
    lines = [f"Students ({cfg.student.arch}, {cfg.optim.epochs} epochs; {val_n}, last epoch; {cell}); attack: {attack_name}", ""]
    lines.append("| method | teachers | val clean acc (%) | val PGD acc (%) | mean (%) | training time (s, train loops only) |")
    lines.append("|---|---|---|---|---|---|")
    for method, recs in results.items():
        roles = NEEDS_TEACHERS[method]
        used = ", ".join(f"{r}={getattr(cfg.teachers, r)}" for r in roles) or "—"
        lines.append(f"| {method} | {used} | {fmt([r['clean'] for r in recs])} | {fmt([r['pgd'] for r in recs])} | "
                     f"{fmt([(r['clean'] + r['pgd']) / 2 for r in recs])} | {fmt([r['train_time_s'] for r in recs], 1.0, 0)} |")
    if not teachers:
        return lines + _checks(results)
    lines += ["", "Teachers (evaluated here with the same attack on the same validation split):", ""]
    lines.append("| role | name | arch | recipe | val clean acc (%) | val PGD acc (%) |")
    lines.append("|---|---|---|---|---|---|")
    for t in teachers:
        recipe = f"{t['method']}, {t['epochs']} epochs"
        lines.append(f"| {t['role']} | {t['name']} | {t['arch']} | {recipe} | {100 * t['val_clean_acc']:.1f} | {100 * t['val_pgd_acc']:.1f} |")

    if "mtard" in results:
        fin = [r["final"] for r in results["mtard"]]
        keys = [k for k in ("tau_nat", "tau_adv", "w_nat", "w_adv", "kl_nat", "kl_adv") if all(k in f for f in fin)]
        state = ", ".join(f"{k} {fmt([f[k] for f in fin], 1.0, 3)}" for k in keys)
        lines += ["", f"MTARD balance state, last-epoch means: {state}"]

    return lines + _checks(results)


def _checks(results: dict[str, list[dict]]) -> list[str]:
    lines = ["", "Checks:"]
    get = lambda m, k: mean_std([r[k] for r in results[m]])[0] if m in results else float("nan")  # noqa: E731
    if "natural" in results:
        lines.append(f"- natural student's PGD accuracy: {100 * get('natural', 'pgd'):.1f}%")
    if "natural" in results and "sat" in results:
        d = get("sat", "clean") - get("natural", "clean")
        lines.append(f"- SAT clean − natural clean: {100 * d:+.1f} points (the robustness trade-off)")
    if "mtard" in results:
        mc, mp = get("mtard", "clean"), get("mtard", "pgd")
        for b in [b for b in BASELINES_FOR_VERDICT if b in results]:
            bc, bp = get(b, "clean"), get(b, "pgd")
            dc, dp = mc - bc, mp - bp
            if dc >= 0 and dp >= 0:
                verdict = "MTARD dominates"
            elif dc <= 0 and dp <= 0:
                verdict = f"{b} dominates"
            else:
                verdict = "trade: " + ("MTARD cleaner, less robust" if dc > 0 else "MTARD more robust, less clean")
            spread = max(mean_std([r["clean"] for r in results[b]])[1], mean_std([r["pgd"] for r in results[b]])[1],
                         mean_std([r["clean"] for r in results["mtard"]])[1], mean_std([r["pgd"] for r in results["mtard"]])[1])
            note = "" if math.isnan(spread) else f" (largest seed std of the four numbers: {100 * spread:.1f})"
            lines.append(f"- MTARD − {b}: clean {100 * dc:+.1f}, PGD {100 * dp:+.1f}, mean {50 * (dc + dp):+.1f} → {verdict}{note}")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

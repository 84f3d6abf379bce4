"""Where should MO-ASHA's rungs sit? Rank correlation of each epoch's values with the final ones.

A rung at epoch e only stops the right trials if the order of configurations at e predicts their order at
the end. This trains `--configs` configurations drawn at random from a search space (Optuna's RandomSampler
over the space's own define-by-run, seeded), each for the full `--epochs`, in plain processes (`--jobs` at a
time), and prints, per epoch and per objective, Kendall's tau between that epoch's values and the final
epoch's values, plus how many of the final front's members a rung at that epoch would have judged to be on
front 0 or in the kept third (the MO-ASHA rule with eta = 3, all results known).

    python benchmarks/rung_correlation.py --space digits_tiny --epochs 8 --configs 16 --jobs 2

The learning-rate milestones scale with the budget (`budget.scale_milestones`), so the table also marks
where they fall: robust accuracy often reorders after the decay (robust overfitting, Rice et al. 2020).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import optuna
from scipy.stats import kendalltau

from mtard.pareto import crowding_distance, front, nondominated_ranks
from mtard.search.space import load_space


def train_one(cfg) -> list[dict]:
    from mtard.train import train_local

    train_local(cfg)
    return [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]


def sample_configs(space, n: int, seed: int, out_dir: Path) -> list:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize"] * len(space.objectives), sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for i in range(n):
        trial = study.ask()
        space.define_by_run(trial)
        cfg = space.trial_config(dict(trial.params), name=f"config{i:02d}")
        cfg.out_dir = str(out_dir)
        cfg.runtime.threads = 1
        configs.append(cfg)
    return configs


def kept_by_rule(points: list[tuple[float, ...]], directions: list[str], eta: int) -> set[int]:
    """Indices a rung would keep if every result were already known: front 0, or the first ceil(n/eta)."""
    ranks = nondominated_ranks(points, directions)
    crowd = crowding_distance(points, directions)
    order = sorted(range(len(points)), key=lambda i: (ranks[i], -crowd[i], i))
    top = set(order[: math.ceil(len(points) / eta)])
    return top | {i for i, r in enumerate(ranks) if r == 0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="digits_tiny")
    ap.add_argument("--epochs", type=int, default=8, help="full budget per configuration")
    ap.add_argument("--configs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--out", default="", help="keep the runs here (default: a temporary directory)")
    args = ap.parse_args(argv)

    space = load_space(args.space)
    space.budget["epochs"] = args.epochs
    metrics = space.metrics
    directions = space.modes
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        configs = sample_configs(space, args.configs, args.seed, out)
        from mtard.teachers import load_catalog
        from mtard.train import ensure_teachers

        # Train missing teachers once, before parallel runs race for them.
        ensure_teachers(load_catalog(configs[0].teachers.catalog), space.teacher_names(), configs[0].data.name)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            histories = list(pool.map(train_one, configs))
        wall = time.perf_counter() - t0

    milestones = configs[0].optim.milestones
    final = [tuple(h[-1][m] for m in metrics) for h in histories]
    final_front = set(front(final, directions))
    print(f"{args.configs} configurations of {args.space}, {args.epochs} epochs each (lr milestones after epochs "
          f"{milestones}), random sampler seed {args.seed}; trained in {wall:.0f} s with {args.jobs} jobs")
    print(f"final front: {len(final_front)} configurations")
    header = ["epoch", *[f"tau {m}" for m in metrics], f"final front kept (eta {args.eta})", "note"]
    rows = []
    for e in range(1, args.epochs):
        at_e = [tuple(h[e - 1][m] for m in metrics) for h in histories]
        taus = [kendalltau([p[k] for p in at_e], [p[k] for p in final]).statistic for k in range(len(metrics))]
        kept = kept_by_rule(at_e, directions, args.eta)
        note = "after lr decay" if any(e > m for m in milestones) else ""
        rows.append([str(e), *[f"{t:+.2f}" for t in taus], f"{len(kept & final_front)}/{len(final_front)}", note])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

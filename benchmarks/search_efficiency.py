"""Does MO-ASHA buy the same front for less training? Four arms of the same space.

Arms: full-budget random search, full-budget TPE, MO-ASHA + random, MO-ASHA + TPE (the space's own
`scheduler:` settings; "full budget" = `scheduler: none`), each run once per seed, all on one local Ray.
The full-budget arms run --trials trials; the MO-ASHA arms --moasha-trials (default twice as many): a
stopped trial costs a fraction of the budget, so at no more compute early stopping tries more
configurations, which is what it is for.
Compute is counted in training epochs actually run (a stopped trial counts the epochs it trained). For each
search the hypervolume of its validation front (fully trained trials only) is followed trial by trial against
the cumulative epochs spent. Printed per arm (mean over seeds): final hypervolume, epochs spent, and the epochs
it needed to first reach the final hypervolume of full-budget random search of the same seed (the target),
and in how many seeds it did, and its hypervolume at equal compute (after the epochs the full-budget random
search of the same seed spent in all). Then the ratio the issue asks for:

    MO-ASHA+TPE reaches full-budget random search's hypervolume with R of its training epochs

Last, the plateau rule (`stop: {hypervolume_plateau: ...}`, mtard.search.budget.plateau_reason, the very
function a search asks) replayed on each search's finished trials in finishing order: where it would have
started no new trial, the trials then running (max_concurrent - 1, counted as finishing: the rule lets them)
end the search. Compute saved = the epochs the rest of the search spent; hypervolume lost = how far the
front at that point falls short of the search's final one. The trials before the stop are the same
whether the rule is on or off (it only withholds new trials), so this is the same search run to the end.

    python benchmarks/search_efficiency.py --space digits_tiny --trials 16 --moasha-trials 32 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import yaml

ARMS = {  # name -> (sampler, early stopping)
    "random": ("random", False),
    "tpe": ("tpe", False),
    "moasha+random": ("random", True),
    "moasha+tpe": ("tpe", True),
}


OBJECTIVES = None  # the space's objectives (mtard.search.records.Objective), set in main


def history(records) -> list[tuple[int, float]]:
    """(cumulative epochs, hypervolume of the front so far) after each finished trial, in finishing order."""
    from itertools import accumulate

    from mtard.search.budget import hypervolume_by_record

    return list(zip(accumulate(r.epochs for r in records), hypervolume_by_record(records, OBJECTIVES)))


def at_compute(h: list[tuple[int, float]], epochs: float) -> float:
    """The hypervolume a search had when it had spent at most `epochs` (0 before its first trial ended)."""
    return max((hv for e, hv in h if e <= epochs), default=0.0)


def plateau_stop(records, rule, running: int) -> int:
    """How many finished trials a search with the plateau `rule` would have: where the rule first fires, plus
    the `running` trials it lets finish (all of them if it never fires)."""
    from mtard.search.budget import plateau_reason

    for n in range(1, len(records) + 1):
        if plateau_reason(records[:n], OBJECTIVES, rule):
            return min(len(records), n + running)
    return len(records)


def run_arm(source: dict, arm: str, seed: int, trials: int, root: Path, scheduler: dict | None) -> list:
    """One search of `arm`; its records in finishing order. A search finished earlier under `root` (--keep)
    is read back instead of run again, so an attempt reruns only the arms it changes."""
    from mtard.search.records import read_records
    from mtard.search.run import run_search

    sampler, early = ARMS[arm]
    data = dict(source)
    # The arm's sampler with the space's own options (TPE's n_startup_trials, ...); random search takes a seed only.
    data["sampler"] = {**(source["sampler"] if sampler == source["sampler"]["name"] else {}), "name": sampler, "seed": seed}
    data["scheduler"] = (scheduler or source["scheduler"]) if early else {"name": "none"}
    data["num_samples"] = trials
    tag = "" if not early or scheduler is None else "-" + "-".join(f"{k}{v}" for k, v in sorted(scheduler.items()) if k != "name")
    name = f"{arm}{tag}-{trials}trials-{seed}".replace(" ", "").replace("[", "").replace("]", "").replace(",", "_")
    exp = root / "runs" / name
    if (exp / "pareto.json").is_file():  # finished: the review is written last
        print(f"reusing {exp}")
        return read_records(exp / "records.jsonl")
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return run_search(path, storage=str(root / "runs"), name=name).records  # in finishing order


def _scheduler_arg(text: str) -> dict:
    """--scheduler: a YAML mapping (the space validates its keys); argparse names the option on bad input."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"not YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("a mapping, e.g. '{name: moasha, eta: 3, rungs: [4]}'")
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="digits_tiny")
    ap.add_argument("--trials", type=int, default=16, help="trials per full-budget search")
    ap.add_argument("--moasha-trials", type=int, help="trials per MO-ASHA search (default: 2 x --trials)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--plateau", type=float, nargs=3, action="append", metavar=("WINDOW", "MIN_IMPROVEMENT", "MIN_TRIALS"),
                    help="a plateau rule to replay (repeatable; default: 8 0.01 8 and 6 0.005 6)")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                    help="the arms to run (full-budget random always runs: it sets the target; default: all four)")
    ap.add_argument("--keep", type=Path, help="keep the searches in this folder, and reuse those already finished there")
    ap.add_argument("--scheduler", type=_scheduler_arg, metavar="YAML",
                    help="the MO-ASHA arms' scheduler instead of the space's, e.g. '{name: moasha, eta: 3, rungs: [4]}' (an attempt)")
    args = ap.parse_args()
    moasha_trials = 2 * args.trials if args.moasha_trials is None else args.moasha_trials

    import ray

    from mtard.search.budget import Plateau
    from mtard.search.space import find_space, load_space

    global OBJECTIVES
    space = load_space(args.space)
    OBJECTIVES = space.objectives
    rules = [Plateau(int(w), x, int(m)) for w, x, m in (args.plateau or [(8, 0.01, 8), (6, 0.005, 6)])]
    source = yaml.safe_load(find_space(args.space).read_text())
    if source.get("scheduler", {}).get("name", "none") != "moasha":
        raise SystemExit(f"{args.space} has no `scheduler: {{name: moasha, ...}}` to compare against")
    ray.init(address="local", resources={"mtard_driver": 1000}, include_dashboard=False, configure_logging=False, log_to_driver=False)
    arms = ["random", *(a for a in ARMS if a in args.arms and a != "random")]
    searches: dict[str, list[list]] = {arm: [] for arm in arms}  # each search's records
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mtard-efficiency-") as tmp:
        root = args.keep or Path(tmp)
        for seed in args.seeds:
            for arm in arms:
                trials = moasha_trials if ARMS[arm][1] else args.trials
                searches[arm].append(run_arm(source, arm, seed, trials, root, args.scheduler))
    ray.shutdown()
    runs = {arm: [history(records) for records in rs] for arm, rs in searches.items()}

    # Paired by seed: each arm's search of seed s is held to full-budget random search's final
    # hypervolume of the same seed (a mean target would be out of reach of half the seeds by design).
    targets = [h[-1][1] for h in runs["random"]]
    print(f"\n{args.space}: {args.trials} trials per full-budget search, {moasha_trials} per MO-ASHA search "
          f"(scheduler {args.scheduler or source['scheduler']}), seeds {args.seeds}, {time.perf_counter() - t0:.0f} s in all; "
          f"target = full-budget random search's final hypervolume of the same seed (mean {statistics.mean(targets):.4f})")
    print(f"{'arm':<15}{'final HV (mean ± sd)':>24}{'epochs spent':>14}{'epochs to target':>18}{'reached':>9}{'HV at equal compute':>21}")
    to_target: dict[str, list[float]] = {}
    for arm, hs in runs.items():
        finals = [h[-1][1] for h in hs]
        spent = statistics.mean(h[-1][0] for h in hs)
        to_target[arm] = [next((e for e, hv in h if hv >= t), math.inf) for h, t in zip(hs, targets)]
        reached = [e for e in to_target[arm] if math.isfinite(e)]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        shown = f"{statistics.mean(reached):.0f}" if reached else "never"
        equal = statistics.mean(at_compute(h, base[-1][0]) for h, base in zip(hs, runs["random"]))
        print(f"{arm:<15}{statistics.mean(finals):>15.4f} ± {sd:.4f}{spent:>14.0f}{shown:>18}{len(reached):>6}/{len(hs)}{equal:>21.4f}")
    # R per seed: MO-ASHA+TPE's epochs to its seed's target over full-budget random search's epochs (inf if never).
    if "moasha+tpe" in to_target:
        ratios = [e / h[-1][0] for e, h in zip(to_target["moasha+tpe"], runs["random"])]
        r = statistics.mean(ratios)
        print(f"MO-ASHA+TPE reaches full-budget random search's hypervolume with {'never (inf)' if math.isinf(r) else f'{r:.2f}'} "
              f"of its training epochs (mean over seeds; per seed: {', '.join(f'{x:.2f}' for x in ratios)})")

    running = max(1, space.max_concurrent or 2) - 1  # digits_tiny: 2 at a time on 2 cores
    print(f"\nthe plateau rule replayed on each search ({running} running trial(s) finish after it fires); "
          f"mean over seeds, per seed in brackets")
    for rule in rules:
        print(f"stop: {{hypervolume_plateau: {{window: {rule.window}, min_improvement: {rule.min_improvement}, min_trials: {rule.min_trials}}}}}")
        for arm, rs in searches.items():
            saved, lost = [], []
            for records, h in zip(rs, runs[arm]):
                n = plateau_stop(records, rule, running)
                saved.append(1 - h[n - 1][0] / h[-1][0])
                lost.append(1 - h[n - 1][1] / h[-1][1] if h[-1][1] > 0 else 0.0)
            print(f"  {arm:<15} compute saved {statistics.mean(saved):6.1%} [{', '.join(f'{x:.0%}' for x in saved)}]   "
                  f"hypervolume lost {statistics.mean(lost):6.2%} [{', '.join(f'{x:.1%}' for x in lost)}]")


if __name__ == "__main__":
    main()

"""What a search costs beyond the training it runs (digits, local Ray, CPU).

Runs a real `mtard search` (default: search_spaces/digits_tiny.yaml with fewer trials) and prints,
from the same run:
  - the search's wall time against the sum of its trials' time in epochs (training + validation),
    and against that sum divided by the concurrency (the ideal wall time);
  - the per-trial start-up cost: a trial's lifetime as Tune measures it (`time_total_s`, from the
    trial driver's start to its last report) minus its time in epochs — i.e. building the Ray Train
    worker group, the process group, loading data and teachers.
Teachers are trained before the clock starts (they are cached across searches).

    python benchmarks/search_overhead.py [--num-samples 4] [--space search_spaces/digits_tiny.yaml]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def last_results(exp_dir: Path) -> list[dict]:
    """The last report of every trial, from Tune's per-trial result.json files."""
    rows = []
    for result in sorted(exp_dir.glob("*/result.json")):
        lines = [line for line in result.read_text().splitlines() if line.strip()]
        if lines:
            rows.append(json.loads(lines[-1]))
    return rows


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """How many trials ran at the same time at most (measured, not configured)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/digits_tiny.yaml")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--out", help="storage directory (default: a temporary one)")
    args = parser.parse_args()

    from mtard.search.run import run_search
    from mtard.search.space import load_space
    from mtard.teachers import load_catalog
    from mtard.train import ensure_teachers

    space = load_space(args.space)
    fixed = space.fixed_config()
    if space.teacher_names():
        ensure_teachers(load_catalog(fixed.teachers.catalog), space.teacher_names(), fixed.data.name)

    storage = args.out or tempfile.mkdtemp(prefix="mtard-search-overhead-")
    request = SimpleNamespace(space=args.space, storage=storage, name="overhead", address=None,
                              resume=None, final_eval=False, num_samples=args.num_samples)
    start = time.perf_counter()
    run_search(request)
    wall = time.perf_counter() - start

    rows = last_results(Path(storage) / "overhead")
    in_epochs = [r["time_in_epochs_s"] for r in rows if "time_in_epochs_s" in r]
    startup = [r["time_total_s"] - r["time_in_epochs_s"] for r in rows if "time_in_epochs_s" in r]
    if not in_epochs:
        raise SystemExit(f"no trial results under {storage}/overhead")
    concurrency = max_overlap([(r["timestamp"] - r["time_total_s"], r["timestamp"]) for r in rows])
    total = sum(in_epochs)
    print(f"search: {len(rows)} trials of {space.budget['epochs']} epochs, at most {concurrency} at a time (results in {storage}/overhead)")
    print(f"search wall time                      {wall:8.1f} s")
    print(f"sum of trials' time in epochs         {total:8.1f} s   (wall / sum = {wall / total:.2f})")
    print(f"ideal wall time (sum / concurrency)   {total / concurrency:8.1f} s   (wall / ideal = {wall * concurrency / total:.2f})")
    print(f"per-trial start-up (Tune lifetime - time in epochs): median {statistics.median(startup):.1f} s, "
          f"min {min(startup):.1f} s, max {max(startup):.1f} s")
    print("The gap between wall and ideal is Ray start-up, per-trial start-up (worker group, process group,"
          " data and teachers), and trials that cannot overlap at the end of the search.")


if __name__ == "__main__":
    main()

"""What a search costs beyond the training it runs (digits, local Ray, CPU): direct trials vs Ray Train.

Runs, in ONE process and on one local Ray (started once, its start-up timed separately):
  1. the `digits_tiny` search as shipped (direct trials: the epoch loop runs in each Tune trial's
     own process, reused from trial to trial), and
  2. the same space with `resources.ray_train: true` (each trial a Ray Train run of one worker),
     with fewer trials (--ray-train-samples), for the start-up comparison.
For each it prints, from the search's own records (records.jsonl):
  - the median per-trial start-up: from Tune starting the trial to its first training step
    (the first result's arrival minus that epoch's own time; `startup_s` in the records). A
    trial process's own start (import of torch, ...) happens before Tune starts the trial on
    it, so the first trial of each slot pays it outside this figure; the wall-time ratio below
    includes it;
  - the search's wall time against the sum of its trials' time in epochs (training +
    validation, `train_time_s` in the records) divided by the number of trials the search runs
    at once: 1.0 would be a search that does nothing but train and validate.
Teachers are trained before the clock starts (they are cached across searches).

    python benchmarks/search_overhead.py [--num-samples N] [--ray-train-samples 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml


def run(space_path: Path, storage: Path, name: str, num_samples: int) -> dict:
    from mtard.search.records import read_records
    from mtard.search.resources import plan_concurrency
    from mtard.search.run import run_search
    from mtard.search.space import load_space
    from mtard.search.tune_adapter import cluster_capacity, node_shapes

    space = load_space(space_path)
    space.num_samples = num_samples
    concurrency = plan_concurrency(space, cluster_capacity(), node_shapes())  # what the search runs at once
    start = time.perf_counter()
    run_search(space_path, storage=str(storage), name=name, num_samples=num_samples)
    wall = time.perf_counter() - start
    records = read_records(storage / name / "records.jsonl")
    startup = [r.startup_s for r in records if r.startup_s is not None]
    in_epochs = sum(r.train_time_s for r in records)
    return {"wall": wall, "trials": len(records), "startup": startup, "in_epochs": in_epochs, "concurrency": concurrency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/digits_tiny.yaml")
    parser.add_argument("--num-samples", type=int, help="trials of the direct search (default: the space's own, 40 for digits_tiny)")
    parser.add_argument("--ray-train-samples", type=int, default=4, help="trials of the Ray Train search")
    parser.add_argument("--out", help="storage directory (default: a temporary one)")
    args = parser.parse_args()

    import ray

    from mtard.search.resources import DRIVER_RESOURCE, LOCAL_DRIVER_UNITS
    from mtard.search.space import load_space
    from mtard.teachers import load_catalog
    from mtard.train import ensure_teachers

    space = load_space(args.space)
    fixed = space.fixed_config()
    if space.teacher_names():
        ensure_teachers(load_catalog(fixed.teachers.catalog), space.teacher_names(), fixed.data.name)
    storage = Path(args.out or tempfile.mkdtemp(prefix="mtard-search-overhead-"))
    ray_train_space = storage / "ray_train_space.yaml"
    data = space.to_yaml_dict()
    data["resources"] = {**data["resources"], "ray_train": True}
    storage.mkdir(parents=True, exist_ok=True)
    ray_train_space.write_text(yaml.safe_dump(data, sort_keys=False))

    from mtard.distributed import use_fast_polling

    use_fast_polling()  # what `mtard search` does when it starts a local Ray
    t0 = time.perf_counter()
    ray.init(address="local", resources={DRIVER_RESOURCE: LOCAL_DRIVER_UNITS}, include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    try:
        direct = run(Path(args.space), storage, "direct", args.num_samples or space.num_samples)
        train = run(ray_train_space, storage, "ray_train", args.ray_train_samples)
    finally:
        ray.shutdown()

    print(f"\nlocal Ray start-up (once, not in the figures below): {ray_start:.1f} s; results in {storage}")
    print(f"{'':34s}{'direct trials':>16s}{'Ray Train trials':>18s}")
    print(f"{'trials (epochs each)':34s}{direct['trials']:>16d}{train['trials']:>18d}   ({space.budget['epochs']})")
    for label, key in (("per-trial start-up, median", "startup"),):
        print(f"{label + ' (s)':34s}{statistics.median(direct[key]):>16.2f}{statistics.median(train[key]):>18.2f}")
    print(f"{'  min / max (s)':34s}{min(direct['startup']):>7.2f} /{max(direct['startup']):>7.2f}"
          f"{min(train['startup']):>9.2f} /{max(train['startup']):>7.2f}")
    for r in (direct, train):
        r["ideal"] = r["in_epochs"] / r["concurrency"]
    print(f"{'search wall time (s)':34s}{direct['wall']:>16.1f}{train['wall']:>18.1f}")
    print(f"{'Σ trials time in epochs (s)':34s}{direct['in_epochs']:>16.1f}{train['in_epochs']:>18.1f}")
    print(f"{'trials at once':34s}{direct['concurrency']:>16d}{train['concurrency']:>18d}")
    print(f"{'wall / (Σ in epochs / concurrency)':34s}{direct['wall'] / direct['ideal']:>16.2f}{train['wall'] / train['ideal']:>18.2f}")
    print("The gap between wall and ideal: per-trial start-up, reports and checkpoints, trial processes starting,"
          " and trials that cannot overlap at the end of the search.")


if __name__ == "__main__":
    main()

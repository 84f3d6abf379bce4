"""One training run on 1 vs 2 Ray Train workers, and what Ray costs over the plain loop.

For each setting and each of `--repeats` rounds it runs, interleaved, with one local Ray
cluster (2 CPUs) up throughout:

* the plain single-process loop (`mtard.loop.train_local`), 1 torch thread, in this process;
* `mtard.distributed.train_distributed` with 1 worker, then with 2 workers (DDP over
  gloo, 1 CPU and 1 torch thread per worker, `data.batch_size` is the global batch).

and prints

* throughput: the `samples_per_s` the loop reports (global samples / rank 0's training
  time of the epoch; validation, checkpointing and reporting are not in it), median over
  epochs 2..E (epoch 1 is warm-up), and the ratio 2 workers / 1 worker;
* Ray's overhead against the plain loop on the same config: the whole wall time of a
  1-worker Ray Train run *including* starting the local Ray cluster (what one
  `mtard train --workers 1` costs), and the per-epoch wall time (time between two
  consecutive epoch reports: training + validation + checkpoint + report), epochs 2..E.

Settings:

* ``digits``: the bundled `digits_mtard` config (small_cnn student and small_cnn teachers,
  batch 64, eps 0.2, 10-step attack). The teachers come from a temporary catalog with the
  catalog's architectures trained for 1 epoch: their weights do not change the cost.
* ``cifar``: a ResNet-18 student on CIFAR-10-shaped data, global batch 16, natural
  training by default (`--cifar-method sat` for PGD-AT). No download offline, so a
  tiny CIFAR-10 folder (random images) is written in torchvision's on-disk format to a
  temp dir and `data.root` points at it.

Usage::

    python benchmarks/train_scaling.py                          # both settings, 3 epochs
    python benchmarks/train_scaling.py --settings digits --epochs 4 --digits-batch 128
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from mtard.config import TrainConfig, load_config
from mtard.logs import read_metrics

CATALOG = textwrap.dedent(
    """\
    bench_cnn_clean:
      dataset: digits
      arch: small_cnn
      role: clean
      checkpoint: bench/cnn_clean.pt
      auto_train: true
      source: "benchmark stand-in: natural training, 1 epoch"
      recipe: {config: digits, set: {method.name: natural, optim.epochs: 1, optim.milestones: [], eval.max_samples: 64, eval.pgd_steps: 2, runtime.progress: false}}
    bench_cnn_trades:
      dataset: digits
      arch: small_cnn
      role: robust
      checkpoint: bench/cnn_trades.pt
      auto_train: true
      source: "benchmark stand-in: TRADES, 1 epoch, 2-step attack"
      recipe: {config: digits, set: {method.name: trades, optim.epochs: 1, optim.milestones: [], attack.steps: 2, eval.max_samples: 64, eval.pgd_steps: 2, runtime.progress: false}}
    """
)


# ---------------------------------------------------------------- data and configs


def write_cifar10(root: Path, n_train: int, n_test: int = 10, seed: int = 0) -> None:
    """A cifar-10-batches-py/ folder in torchvision's format (pickled dicts), random images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, obj: dict) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    per_batch = -(-n_train // 5)
    start = 0
    for b in range(1, 6):
        n = max(0, min(per_batch, n_train - start))
        dump(f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5", "labels": [(start + i) % 10 for i in range(n)],
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "filenames": [f"img_{start + i}.png" for i in range(n)],
        })
        start += n
    dump("test_batch", {
        "batch_label": "testing batch 1 of 1", "labels": [i % 10 for i in range(n_test)],
        "data": rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8),
        "filenames": [f"test_{i}.png" for i in range(n_test)],
    })
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump("batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})


def make_config(setting: str, args, work: Path, name: str, workers: int) -> TrainConfig:
    common = [
        f"out_dir={work / 'runs'}", f"name={name}", f"optim.epochs={args.epochs}", "optim.milestones=[]",
        "runtime.progress=false", "runtime.device=cpu", f"runtime.threads={args.threads}",
        f"scaling.workers={workers}", "scaling.cpus_per_worker=1", "scaling.max_failures=0",
        f"eval.max_samples={args.eval_samples}",
    ]
    if setting == "digits":
        return load_config("digits_mtard", common + [
            f"data.batch_size={args.digits_batch}", f"teachers.catalog={work / 'catalog.yaml'}",
            "teachers.clean=bench_cnn_clean", "teachers.robust=bench_cnn_trades", "eval.pgd_steps=2",
        ])
    return load_config("cifar10_mtard", common + [
        f"method.name={args.cifar_method}", f"attack.steps={args.cifar_attack_steps}",
        f"data.root={work / 'cifar'}", "data.download=false", f"data.batch_size={args.cifar_batch}",
        "data.num_workers=0", "runtime.bf16=false", "runtime.channels_last=false", "eval.pgd_steps=0",
    ])


# ---------------------------------------------------------------- timed runs


def stamped_train_fn(config: dict) -> None:
    """`train_fn_per_worker` with a wall-clock stamp added to every epoch's metrics."""
    import time as time_

    from mtard.config import config_from_dict
    from mtard.distributed import RayContext
    from mtard.loop import fit

    class Stamped(RayContext):
        def report(self, metrics, payload):
            super().report({**metrics, "wall_time": time_.time()}, payload)

    fit(config_from_dict(config["cfg"]), Stamped(config.get("log_dir")))


def stamp_local_reports() -> None:
    """Make `train_local`'s context stamp every epoch's metrics with the wall clock too."""
    import mtard.loop

    class Stamped(mtard.loop.LocalContext):
        def report(self, metrics, payload):
            super().report({**metrics, "wall_time": time.time()}, payload)

    mtard.loop.LocalContext = Stamped


def measure(rows: list[dict], wall_s: float) -> dict:
    """Per-epoch figures of one run, epochs 2..E (epoch 1 is warm-up), and the run's wall time."""
    if len(rows) < 2:
        raise SystemExit("--epochs must be >= 2: epoch 1 is excluded as warm-up")
    return {
        "wall_s": [wall_s],
        "samples_per_s": [r["samples_per_s"] for r in rows[1:]],
        "train_s": [r["train_time_s"] for r in rows[1:]],
        "epoch_s": [b["wall_time"] - a["wall_time"] for a, b in zip(rows, rows[1:])],
    }


def pooled(runs: list[dict]) -> dict:
    """Medians over every measured epoch (and every run's wall time) of the repeats."""
    return {key: statistics.median(v for run in runs for v in run[key]) for key in runs[0]}


def run_local(cfg: TrainConfig) -> dict:
    from mtard.loop import train_local

    t0 = time.perf_counter()
    train_local(cfg)
    return measure(read_metrics(cfg.run_dir), time.perf_counter() - t0)


def run_ray(cfg: TrainConfig) -> dict:
    from mtard.distributed import train_distributed

    t0 = time.perf_counter()
    train_distributed(cfg)
    return measure(read_metrics(Path(cfg.out_dir) / cfg.name), time.perf_counter() - t0)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", choices=["digits", "cifar"], default=["digits", "cifar"])
    parser.add_argument("--epochs", type=int, default=3, help="per run; epoch 1 is warm-up (default 3)")
    parser.add_argument("--digits-batch", type=int, default=64, help="global batch, digits (default 64)")
    parser.add_argument("--cifar-batch", type=int, default=16, help="global batch, ResNet-18 (default 16)")
    parser.add_argument("--cifar-images", type=int, default=128, help="generated CIFAR-10 training images (default 128; 10%% go to val)")
    parser.add_argument("--cifar-method", choices=["natural", "sat"], default="natural")
    parser.add_argument("--cifar-attack-steps", type=int, default=2, help="attack steps with --cifar-method sat (default 2)")
    parser.add_argument("--eval-samples", type=int, default=64, help="validation samples per epoch (default 64)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of (plain, 1 worker, 2 workers) (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process/worker (default 1)")
    args = parser.parse_args()

    import ray

    import mtard.distributed

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="mtard_scaling_"))
    os.environ["MTARD_TEACHERS"] = str(work / "teachers")  # set before Ray starts: workers inherit it
    (work / "catalog.yaml").write_text(CATALOG)
    if "cifar" in args.settings:
        write_cifar10(work / "cifar", args.cifar_images)
    # Workers run `stamped_train_fn`; `__main__` functions travel to them by value.
    mtard.distributed.train_fn_per_worker = stamped_train_fn
    stamp_local_reports()

    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
          f"torch {torch.__version__}, ray {ray.__version__}, {args.threads} torch thread(s) per process")
    results = {setting: {"local": [], 1: [], 2: []} for setting in args.settings}
    try:
        for setting in args.settings:  # teachers are trained here, untimed
            mtard.distributed.ensure_teachers_for(make_config(setting, args, work, "teachers", 1))
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - t0
        # Interleaved (plain, 1 worker, 2 workers) per repeat, so load from other processes
        # drifting over the minutes of the benchmark hits every variant alike.
        for repeat in range(args.repeats):
            for setting in args.settings:
                for key in ("local", 1, 2):
                    workers = 1 if key == "local" else key
                    cfg = make_config(setting, args, work, f"{setting}_{key}_{repeat}", workers)
                    results[setting][key].append(run_local(cfg) if key == "local" else run_ray(cfg))
                    label = "plain loop" if key == "local" else f"Ray Train, {key} worker(s)"
                    print(f"[repeat {repeat + 1}/{args.repeats}] {setting}: {label} done "
                          f"({results[setting][key][-1]['wall_s'][0]:.1f} s)", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nload average at end: {os.getloadavg()[0]:.1f}; local Ray cluster start-up: {ray_start_s:.1f} s")
    for setting in args.settings:
        r = {key: pooled(runs) for key, runs in results[setting].items()}
        cfg = make_config(setting, args, work, "x", 1)
        print(f"\n== {setting}: student {cfg.student.arch}, method {cfg.method.name}, global batch {cfg.data.batch_size}, "
              f"{args.epochs} epochs x {args.repeats} repeat(s); medians over epochs 2..{args.epochs} of every repeat")
        print(f"  {'':<22}{'samples/s':>11}{'train s/ep':>12}{'wall s/ep':>11}{'run wall s':>12}")
        for label, key in (("plain loop", "local"), ("Ray Train, 1 worker", 1), ("Ray Train, 2 workers", 2)):
            x = r[key]
            print(f"  {label:<22}{x['samples_per_s']:>11.1f}{x['train_s']:>12.2f}{x['epoch_s']:>11.2f}{x['wall_s']:>12.1f}")
        one, two, local = r[1], r[2], r["local"]
        print(f"  scaling, samples/s 2 workers / 1 worker:        {two['samples_per_s'] / one['samples_per_s']:.2f}x (ideal 2.00x)")
        print(f"  Ray overhead, run wall incl. cluster start-up:  {(one['wall_s'] + ray_start_s) / local['wall_s']:.2f}x "
              f"({one['wall_s'] + ray_start_s:.1f} s vs {local['wall_s']:.1f} s)")
        print(f"  Ray overhead, run wall without start-up:        {one['wall_s'] / local['wall_s']:.2f}x")
        print(f"  Ray overhead, per-epoch wall time:              {one['epoch_s'] / local['epoch_s']:.2f}x")
        print(f"  Ray overhead, per-epoch training time:          {one['train_s'] / local['train_s']:.2f}x")
    print(textwrap.dedent(
        """
        What the numbers mean:
        * samples/s counts training samples of all workers per second of rank 0's training time
          (validation and checkpoints excluded). On 2 cores, 2 workers at best double it; the
          gradient all-reduce each step (gloo over loopback) and waiting for the slower worker
          take away from that, the more so the smaller the per-step compute (digits) and the
          larger the model (ResNet-18: ~45 MB of gradients per step). On a shared, loaded
          machine the second worker also competes with other processes for the second core.
        * run wall incl. start-up is what a 1-worker `mtard train --workers 1` costs over the plain
          loop: starting the local Ray cluster, the Train controller and worker processes (each
          imports torch and mtard), storage checks, and the final teardown. It is a fixed cost of
          tens of seconds, large against these tiny runs and negligible against real ones.
        * per-epoch wall time adds validation, checkpoint upload to storage and `ray.train.report`.
          Ray Train polls workers every 2 s (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S) and a worker's
          report queue holds one result, so an epoch shorter than that waits for the poll:
          epochs of well under 2 s look up to ~2 s long under Ray. Per-epoch training time
          should be ~1.0x: with 1 worker the model is not wrapped in DDP.
        Numbers were measured on a shared machine: compare them with each other, not across runs.
        """
    ))


if __name__ == "__main__":
    sys.exit(main())

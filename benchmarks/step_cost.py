"""What one MTARD training step costs, against the primitives it is made of.

For each setting and precision variant it times, interleaved in every repeat (so load
from other processes hits both sides alike):

* the step as `mtard.loop.fit` runs it: `mtard.loop.train_step` (the MTARD method:
  attack, teacher forwards, two student forwards, both balance controllers and their
  `.tolist()` syncs; the loss parts summed on the device; `zero_grad`, `backward`,
  `optimizer.step()`), plus the loop's host read of the divergence flag every
  `runtime.divergence_check_every` steps;
* with ``--compare-host-syncs``, the step as the loop ran it before the parts stayed on
  the device: a loss `.item()` and a `float()` of every logged part per step;
* each primitive alone: the K-step attack (`mtard.attacks.pgd`, K forward+backward
  passes w.r.t. the input), the two teacher forwards (no grad), the two student
  forwards in train mode + one backward through both (as the step does), and the
  SGD update (`zero_grad` + `step`).

It prints the median of each over the repeats (after warm-up), Σ primitives, and
step / Σ primitives: the share of the step that is not the network passes
(controllers, host syncs, Python overhead). The ratio is also given as the median of
the per-repeat ratios, which is the paired and more noise-robust figure. The warm-up
repeats (where ``compile`` compiles) are timed apart and reported separately; samples/s
is batch / median step; on CUDA the peak GPU memory of the timed repeats is printed.

Settings (teachers are random-weight models wrapped in `FrozenTeacher`: the cost does
not depend on their weights):

* ``digits``: the bundled digits config (small_cnn student and teachers, 1×8×8,
  batch 64, ε 0.2, 10 attack steps);
* ``cifar``: a ResNet-18 student on 3×32×32 with 10 classes, the CIFAR-10 config's
  attack (8/255, 10 steps of 2/255), stand-in teachers ResNet-56 (clean) and
  WRN-16-2 (robust) to stay fast on a CPU; batch 8 by default;
* ``cifar_paper``: the paper's CIFAR-10 setting: ResNet-18 student, ResNet-56 clean and
  WRN-34-10 robust teachers, batch 128 (a GPU setting).

Variants (``--variants``): ``fp32``, ``bf16`` (autocast), ``bf16_cl`` (+ channels_last),
``bf16_cl_compile`` (+ `torch.compile` of the student and the teachers, as
`runtime.compile` does).

Usage::

    python benchmarks/step_cost.py                      # both CPU settings, fp32, 2 threads
    python benchmarks/step_cost.py --settings cifar --repeats 10 --batch 16 --threads 1
    python benchmarks/step_cost.py --threads 1 --clock cpu --compare-host-syncs
    python benchmarks/step_cost.py --device cuda --settings cifar_paper --variants fp32 bf16 bf16_cl bf16_cl_compile --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mtard.attacks import pgd
from mtard.config import TrainConfig, load_config
from mtard.loop import EpochLog, compile_models, train_step
from mtard.losses import reference_kl
from mtard.methods import MTARD
from mtard.models import build_model
from mtard.teachers import FrozenTeacher


@dataclass
class Setting:
    name: str
    config: str  # bundled config giving the attack and optimiser
    student: str
    clean: str
    robust: str
    channels: int
    size: int
    classes: int
    batch: int  # default batch


SETTINGS = {
    "digits": Setting("digits", "digits_mtard", "small_cnn", "small_cnn", "small_cnn", 1, 8, 10, 64),
    "cifar": Setting("cifar", "cifar10_mtard", "resnet18", "resnet56", "wrn16_2", 3, 32, 10, 8),
    "cifar_paper": Setting("cifar_paper", "cifar10_mtard", "resnet18", "resnet56", "wrn34_10", 3, 32, 10, 128),
}


@dataclass(frozen=True)
class Variant:
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False


VARIANTS = {
    "fp32": Variant(),
    "bf16": Variant(bf16=True),
    "bf16_cl": Variant(bf16=True, channels_last=True),
    "bf16_cl_compile": Variant(bf16=True, channels_last=True, compile=True),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = _clock()
    fn()
    _sync(device)
    return _clock() - t0


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def bench(setting: Setting, variant: Variant, *, batch: int, repeats: int, warmup: int, device: torch.device, compare_host_syncs: bool) -> dict:
    cfg: TrainConfig = load_config(setting.config, ["runtime.progress=false", "runtime.bf16=false", "runtime.channels_last=false"])
    torch.manual_seed(0)
    shape = {"num_classes": setting.classes, "in_channels": setting.channels, "image_size": setting.size}
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    student = build_model(setting.student, **shape).to(device, memory_format=memory_format)
    teachers = {
        "clean": FrozenTeacher(build_model(setting.clean, **shape)).to(device, memory_format=memory_format),
        "robust": FrozenTeacher(build_model(setting.robust, **shape)).to(device, memory_format=memory_format),
    }
    if variant.compile:
        compile_models(student, *teachers.values())
    method = MTARD(cfg, student, teachers)
    o = cfg.optim
    optimizer = torch.optim.SGD(student.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    x = torch.rand(batch, setting.channels, setting.size, setting.size, device=device).to(memory_format=memory_format)
    y = torch.randint(0, setting.classes, (batch,), device=device)
    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if variant.bf16 else nullcontext()

    student.train()

    # --- the real step, as mtard.loop.fit runs it (its host read every check_every steps included)
    log = EpochLog(device)
    check_every = cfg.runtime.divergence_check_every
    calls = {"step": 0}

    def step() -> None:
        i = calls["step"]
        train_step(method, optimizer, x, y, step=i, log=log, autocast=autocast(), reduce_mean=_identity)
        if (i + 1) % check_every == 0:
            assert log.first_bad() is None
        calls["step"] = i + 1

    # --- the same step with the loop's former per-step host reads
    def step_synced() -> None:
        with autocast():
            parts = method(x, y)
        loss = parts["loss"]
        assert math.isfinite(loss.detach().float().item())  # the finiteness check
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for value in parts.values():  # the per-epoch sums: float() of each part
            float(value.detach()) if isinstance(value, torch.Tensor) else float(value)

    # --- the primitives; their inputs are produced once per repeat outside the timers
    state: dict[str, torch.Tensor] = {}

    def attack() -> None:
        with autocast():
            state["x_adv"] = pgd(student, x, y, **method.attack_kwargs)

    def teacher_forwards() -> None:
        with torch.no_grad(), autocast():
            state["t_adv"] = teachers["robust"](state["x_adv"]).float()
            state["t_nat"] = teachers["clean"](x).float()

    p_adv = p_nat = None

    def student_fwd_bwd() -> None:
        with autocast():
            s_adv = student(state["x_adv"]).float()
            s_nat = student(x).float()
        loss = 0.5 * reference_kl(p_adv, F.log_softmax(s_adv, 1)) + 0.5 * reference_kl(p_nat, F.log_softmax(s_nat, 1))
        loss.backward()

    def optimizer_update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    steps = ["step", "step_synced"] if compare_host_syncs else ["step"]
    names = steps + ["attack", "teacher_fwd", "student_fwd_bwd", "sgd_update"]
    times: dict[str, list[float]] = {n: [] for n in names}
    warmup_times: list[float] = []
    for r in range(warmup + repeats):
        if r == warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        order = steps if r % 2 == 0 else steps[::-1]  # A B, B A, ...: neither variant always runs first
        row = {n: _timed(step if n == "step" else step_synced, device) for n in order}
        row["attack"] = _timed(attack, device)
        row["teacher_fwd"] = _timed(teacher_forwards, device)
        p_adv, p_nat = F.softmax(state["t_adv"], 1), F.softmax(state["t_nat"], 1)
        optimizer.zero_grad(set_to_none=True)
        row["student_fwd_bwd"] = _timed(student_fwd_bwd, device)
        row["sgd_update"] = _timed(optimizer_update, device)
        if r < warmup:
            warmup_times.append(sum(row.values()))
        else:
            for n in names:
                times[n].append(row[n])
    prims = ["attack", "teacher_fwd", "student_fwd_bwd", "sgd_update"]
    sums = [sum(times[n][i] for n in prims) for i in range(repeats)]
    ratios = [times["step"][i] / sums[i] for i in range(repeats)]
    median = {n: statistics.median(times[n]) for n in names}
    res = {
        "setting": setting,
        "variant": variant,
        "cfg": cfg,
        "batch": batch,
        "median": median,
        "sum_median": statistics.median(sums),
        "ratio_of_medians": median["step"] / sum(median[n] for n in prims),
        "median_ratio": statistics.median(ratios),
        "ratio_range": (min(ratios), max(ratios)),
        "samples_per_s": batch / median["step"],
        "warmup_s": warmup_times,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "params": sum(p.numel() for p in student.parameters()),
    }
    if compare_host_syncs:
        synced_ratios = [times["step"][i] / times["step_synced"][i] for i in range(repeats)]
        res["step_over_synced"] = statistics.median(synced_ratios)
        res["step_over_synced_range"] = (min(synced_ratios), max(synced_ratios))
    return res


def variant_name(variant: Variant) -> str:
    return next(name for name, v in VARIANTS.items() if v == variant)


def report(res: dict, repeats: int) -> None:
    s: Setting = res["setting"]
    a = res["cfg"].attack
    k = a.steps
    med = res["median"]
    def ms(v: float) -> str:
        return f"{1000 * v:9.2f}"

    print(f"\n## {s.name} [{variant_name(res['variant'])}]: student {s.student} ({res['params'] / 1e6:.3f}M params), teachers clean={s.clean} "
          f"robust={s.robust}, input {s.channels}x{s.size}x{s.size}, batch {res['batch']}, attack K={k} steps (eps {a.eps:.4g}, step {a.step_size:.4g})")
    print(f"median over {repeats} repeats")
    unit = "ms" if _clock is time.perf_counter else "CPU ms"
    print(f"| {'part':<48} | {unit:>9} | {'share of Σ':>10} |")
    print(f"|{'-' * 50}|{'-' * 11}|{'-' * 12}|")
    total = sum(med[n] for n in ("attack", "teacher_fwd", "student_fwd_bwd", "sgd_update"))
    labels = {
        "attack": f"attack: pgd, {k} fwd+bwd (input grad), eval mode",
        "teacher_fwd": "2 teacher forwards (no grad)",
        "student_fwd_bwd": "2 student forwards (train) + 1 backward",
        "sgd_update": "SGD update (step + zero_grad)",
    }
    for n, label in labels.items():
        print(f"| {label:<48} | {ms(med[n])} | {100 * med[n] / total:9.1f}% |")
    print(f"| {'(one attack fwd+bwd pass = attack / K)':<48} | {ms(med['attack'] / k)} | {'':>10} |")
    print(f"| {'Σ primitives (sum of medians)':<48} | {ms(total)} | {'':>10} |")
    print(f"| {'MTARD step (mtard.loop.train_step)':<48} | {ms(med['step'])} | {'':>10} |")
    if "step_synced" in med:
        print(f"| {'step with per-step host reads (former loop)':<48} | {ms(med['step_synced'])} | {'':>10} |")
    lo, hi = res["ratio_range"]
    print(f"step / Σ primitives: {res['median_ratio']:.3f} (median of per-repeat ratios; range {lo:.3f}–{hi:.3f}), "
          f"{res['ratio_of_medians']:.3f} (ratio of medians); overhead ≈ {1000 * (med['step'] - total):+.2f} ms per step")
    per = "s" if _clock is time.perf_counter else "CPU s"
    print(f"samples/{per}: {res['samples_per_s']:.1f}; warm-up ({len(res['warmup_s'])} repeats, step + primitives, "
          f"compilation included): {', '.join(f'{t:.2f}' for t in res['warmup_s'])} s")
    if res["peak_memory_gib"] is not None:
        print(f"peak GPU memory (timed repeats): {res['peak_memory_gib']:.2f} GiB")
    if "step_over_synced" in res:
        lo, hi = res["step_over_synced_range"]
        print(f"step / step with per-step host reads: {res['step_over_synced']:.3f} (median of per-repeat ratios; range {lo:.3f}–{hi:.3f})")


def as_json(res: dict) -> dict:
    keep = ("batch", "median_ratio", "ratio_of_medians", "samples_per_s", "warmup_s", "peak_memory_gib", "params", "step_over_synced")
    out = {"setting": res["setting"].name, "variant": variant_name(res["variant"])}
    out.update({k: res[k] for k in keep if k in res})
    out["median_ms"] = {n: 1000 * v for n, v in res["median"].items()}
    out["sum_primitives_ms"] = 1000 * sum(res["median"][n] for n in ("attack", "teacher_fwd", "student_fwd_bwd", "sgd_update"))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["digits", "cifar"])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["fp32"],
                    help="precision/layout/compile variants, each timed on its own freshly built models")
    ap.add_argument("--repeats", type=int, default=20, help="timed repeats per setting (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="repeats first, timed apart (compilation happens here)")
    ap.add_argument("--batch", type=int, default=0, help="batch size for every setting (default: digits 64, cifar 8, cifar_paper 128)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu (the default) or cuda")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: elapsed time (default); cpu: CPU time of this process, all its threads — "
                         "steadier on a shared machine, use it with --threads 1 (idle-spinning threads count too)")
    ap.add_argument("--compare-host-syncs", action="store_true",
                    help="also time, interleaved, the step with the former loop's per-step host reads")
    ap.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    if args.clock == "cpu" and args.device != "cpu":
        ap.error("--clock cpu only makes sense with --device cpu")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"# MTARD step cost — torch {torch.__version__}, device {device} ({where}), {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs visible, clock {args.clock}, warm-up {args.warmup}, repeats {args.repeats}")
    results = []
    for name in args.settings:
        setting = SETTINGS[name]
        for variant in args.variants:
            res = bench(setting, VARIANTS[variant], batch=args.batch or setting.batch, repeats=args.repeats, warmup=args.warmup,
                        device=device, compare_host_syncs=args.compare_host_syncs)
            report(res, args.repeats)
            results.append(as_json(res))
            if args.json:  # after every result: a run stopped by a time limit keeps what it measured
                header = {"torch": torch.__version__, "device": str(device), "device_name": where, "clock": args.clock, "repeats": args.repeats}
                with open(args.json, "w") as f:
                    json.dump({**header, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()

"""What one MTARD training step costs, against the primitives it is made of.

For each setting it times, interleaved in every repeat (so load from other processes
hits both sides alike):

* the step as `mtard.loop.fit` runs it: `mtard.methods.MTARD(x, y)` (attack, teacher
  forwards, two student forwards, both balance controllers and their `.tolist()`
  syncs), the loop's loss `.item()`, `zero_grad`, `backward`, `optimizer.step()`
  and the `float()` of every logged part;
* each primitive alone: the K-step attack (`mtard.attacks.pgd`, K forward+backward
  passes w.r.t. the input), the two teacher forwards (no grad), the two student
  forwards in train mode + one backward through both (as the step does), and the
  SGD update (`zero_grad` + `step`).

It prints the median of each over the repeats (after warm-up), Σ primitives, and
step / Σ primitives: the share of the step that is not the network passes
(controllers, host syncs, Python overhead). The ratio is also given as the median of
the per-repeat ratios, which is the paired and more noise-robust figure.

Settings (teachers are random-weight models wrapped in `FrozenTeacher`: the cost does
not depend on their weights):

* ``digits``: the bundled digits config (small_cnn student and teachers, 1×8×8,
  batch 64, ε 0.2, 10 attack steps);
* ``cifar``: a ResNet-18 student on 3×32×32 with 10 classes, the CIFAR-10 config's
  attack (8/255, 10 steps of 2/255), stand-in teachers ResNet-56 (clean) and
  WRN-16-2 (robust) to stay fast on a CPU; batch 8 by default.

Usage::

    python benchmarks/step_cost.py                      # both settings, 2 threads
    python benchmarks/step_cost.py --settings cifar --repeats 10 --batch 16 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mtard.attacks import pgd
from mtard.config import TrainConfig, load_config
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


def bench(setting: Setting, *, batch: int, repeats: int, warmup: int, device: torch.device) -> dict:
    cfg: TrainConfig = load_config(setting.config, ["runtime.progress=false", "runtime.bf16=false", "runtime.channels_last=false"])
    torch.manual_seed(0)
    shape = dict(num_classes=setting.classes, in_channels=setting.channels, image_size=setting.size)
    student = build_model(setting.student, **shape).to(device)
    teachers = {
        "clean": FrozenTeacher(build_model(setting.clean, **shape)).to(device),
        "robust": FrozenTeacher(build_model(setting.robust, **shape)).to(device),
    }
    method = MTARD(cfg, student, teachers)
    o = cfg.optim
    optimizer = torch.optim.SGD(student.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    x = torch.rand(batch, setting.channels, setting.size, setting.size, device=device)
    y = torch.randint(0, setting.classes, (batch,), device=device)
    student.train()

    # --- the real step, as mtard.loop.fit runs it
    def step() -> None:
        parts = method(x, y)
        loss = parts["loss"]
        loss_value = loss.detach().float().item()  # the loop's finiteness check
        assert loss_value == loss_value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for value in parts.values():  # the loop's per-epoch sums (it calls float() on each part)
            float(value.detach()) if isinstance(value, torch.Tensor) else float(value)

    # --- the primitives; their inputs are produced once per repeat outside the timers
    state: dict[str, torch.Tensor] = {}

    def attack() -> None:
        state["x_adv"] = pgd(student, x, y, **method.attack_kwargs)

    def teacher_forwards() -> None:
        with torch.no_grad():
            state["t_adv"] = teachers["robust"](state["x_adv"]).float()
            state["t_nat"] = teachers["clean"](x).float()

    p_adv = p_nat = None

    def student_fwd_bwd() -> None:
        s_adv = student(state["x_adv"]).float()
        s_nat = student(x).float()
        loss = 0.5 * reference_kl(p_adv, F.log_softmax(s_adv, 1)) + 0.5 * reference_kl(p_nat, F.log_softmax(s_nat, 1))
        loss.backward()

    def optimizer_update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    names = ["step", "attack", "teacher_fwd", "student_fwd_bwd", "sgd_update"]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        row = {"step": _timed(step, device), "attack": _timed(attack, device), "teacher_fwd": _timed(teacher_forwards, device)}
        p_adv, p_nat = F.softmax(state["t_adv"], 1), F.softmax(state["t_nat"], 1)
        optimizer.zero_grad(set_to_none=True)
        row["student_fwd_bwd"] = _timed(student_fwd_bwd, device)
        row["sgd_update"] = _timed(optimizer_update, device)
        if r >= warmup:
            for n in names:
                times[n].append(row[n])
    prims = names[1:]
    sums = [sum(times[n][i] for n in prims) for i in range(repeats)]
    ratios = [times["step"][i] / sums[i] for i in range(repeats)]
    return {
        "setting": setting,
        "cfg": cfg,
        "batch": batch,
        "median": {n: statistics.median(times[n]) for n in names},
        "sum_median": statistics.median(sums),
        "ratio_of_medians": statistics.median(times["step"]) / sum(statistics.median(times[n]) for n in prims),
        "median_ratio": statistics.median(ratios),
        "ratio_range": (min(ratios), max(ratios)),
        "params": sum(p.numel() for p in student.parameters()),
    }


def report(res: dict, repeats: int) -> None:
    s: Setting = res["setting"]
    a = res["cfg"].attack
    k = a.steps
    med = res["median"]
    ms = lambda v: f"{1000 * v:9.2f}"  # noqa: E731
    print(f"\n## {s.name}: student {s.student} ({res['params'] / 1e6:.3f}M params), teachers clean={s.clean} robust={s.robust}, "
          f"input {s.channels}x{s.size}x{s.size}, batch {res['batch']}, attack K={k} steps (eps {a.eps:.4g}, step {a.step_size:.4g})")
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
    print(f"| {'MTARD step (method + loop bookkeeping)':<48} | {ms(med['step'])} | {'':>10} |")
    lo, hi = res["ratio_range"]
    print(f"step / Σ primitives: {res['median_ratio']:.3f} (median of per-repeat ratios; range {lo:.3f}–{hi:.3f}), "
          f"{res['ratio_of_medians']:.3f} (ratio of medians); overhead ≈ {1000 * (med['step'] - total):+.2f} ms per step")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["digits", "cifar"])
    ap.add_argument("--repeats", type=int, default=20, help="timed repeats per setting (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed repeats first")
    ap.add_argument("--batch", type=int, default=0, help="batch size for every setting (default: digits 64, cifar 8)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu (the point of this benchmark) or cuda")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: elapsed time (default); cpu: CPU time of this process, all its threads — "
                         "steadier on a shared machine, use it with --threads 1 (idle-spinning threads count too)")
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
    print(f"# MTARD step cost — torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, clock {args.clock}, "
          f"warm-up {args.warmup}, repeats {args.repeats}")
    for name in args.settings:
        setting = SETTINGS[name]
        res = bench(setting, batch=args.batch or setting.batch, repeats=args.repeats, warmup=args.warmup, device=device)
        report(res, args.repeats)


if __name__ == "__main__":
    main()

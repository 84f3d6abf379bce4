"""The epoch loop, written once.

`fit(cfg, ctx)` runs unchanged in a plain process (`LocalContext`), in every
Ray Train worker (`mtard.distributed.RayContext`) and in a search's one-worker
trial (`mtard.search.tune_adapter.TuneContext`): the context is the only thing that knows
about ranks, all-reduces, where checkpoints go and how metrics leave.

Reproducibility: at the start of every epoch the RNGs are re-seeded from
(seed, epoch, rank), and the data order is a function of (seed, epoch). So the
whole random state at an epoch boundary is determined by those numbers, and a
run resumed from its epoch-E checkpoint continues exactly as if never stopped,
on any number of workers.
"""

from __future__ import annotations

import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from mtard import checkpoint as ckpt
from mtard.attacks import pgd
from mtard.config import TrainConfig, to_dict
from mtard.data import Splits, epoch_loader, load_splits
from mtard.errors import MtardError
from mtard.methods import Method, build_method, teacher_fields, unwrap
from mtard.models import build_model
from mtard.runs import BEST_FILE, SELECTION_METRICS
from mtard.teachers import (
    build_teacher,
    load_catalog,
    node_copy,
    resolve,
    staged_path,
    verified_file,
)


class EpochLog:
    """One epoch's sums of the loss parts and its first non-finite loss, kept on the device.

    Reading a CUDA value on the host (`.item()`, `float()`) waits for every queued kernel, so doing it
    for every step leaves the GPU idle between steps. Here a step only queues device arithmetic; the
    host reads `first_bad()` every `runtime.divergence_check_every` steps and `means()` once per epoch.
    Tensor parts are summed in float64, as the Python floats they used to be converted to were.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, Tensor | float] = {}
        self.steps = 0
        self._bad_step = torch.tensor(-1, device=device)  # -1: every loss so far was finite
        self._bad_value = torch.tensor(0.0, device=device)

    def add(self, step: int, parts: dict, checked_loss: Tensor) -> None:
        newly_bad = ~torch.isfinite(checked_loss) & (self._bad_step < 0)
        self._bad_step = torch.where(newly_bad, step, self._bad_step)
        self._bad_value = torch.where(newly_bad, checked_loss.float(), self._bad_value)
        for key, value in parts.items():
            value = value.detach().double() if isinstance(value, Tensor) else float(value)
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1

    def first_bad(self) -> tuple[int, float] | None:
        """(step index, loss) of the first non-finite loss this epoch, or None; one host read."""
        step, value = torch.stack([self._bad_step.double(), self._bad_value.double()]).tolist()
        return None if step < 0 else (int(step), value)

    def means(self) -> dict[str, Tensor]:
        """Per-step means of each part, as one float64 tensor per key on the device (no host read)."""
        steps = max(self.steps, 1)
        return {k: torch.as_tensor(v, dtype=torch.float64, device=self.device) / steps for k, v in sorted(self.sums.items())}


def compile_models(*models: nn.Module) -> None:
    """`runtime.compile`: torch.compile each model in place (`nn.Module.compile`), so its state_dict keys,
    a DDP wrapper around it and the attack's bare student stay as they are. Compilation happens on the
    first call in each mode (train, attack, eval): the first steps of a run are slower."""
    for model in models:
        model.compile()


def train_step(method: Method, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *, step: int, log: EpochLog, autocast, reduce_mean) -> None:
    """One optimizer step as `fit` runs it; nothing in it reads a device value on the host."""
    with autocast:
        parts = method(x, y)
    loss = parts["loss"]
    # Flagged on the all-reduced value so every rank sees the same first bad step (the collective is
    # queued on the device like the rest). The bad step's update still runs: its weights are never
    # saved, since the loop raises at the next check, before the epoch's checkpoint.
    log.add(step, parts, reduce_mean(loss.detach().float()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class TrainingDiverged(MtardError):
    """The loss became NaN/inf: the run stops, the last good checkpoint stays."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' = CUDA when available, else CPU; anything else as torch reads it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise MtardError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MtardError(f"device {device!r} requested but no GPU is visible: set runtime.device (or --device) to auto or cpu")
    return resolved


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Epochs count from 1; the lr drops by `gamma` *after* each milestone epoch (official: after 215, 260, 285)."""
    drops = sum(1 for m in cfg.optim.milestones if epoch > m)
    if cfg.optim.milestone_decay == "once":  # the official ARD code's bug: see OptimConfig
        drops = min(drops, 1)
    return cfg.optim.lr * cfg.optim.gamma**drops


def parameter_groups(cfg: TrainConfig, model: nn.Module) -> list[dict]:
    """SGD parameter groups: weight decay on every parameter, or (`optim.weight_decay_on: weights`)
    on conv and linear weights only — the tensors with more than one dimension."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optim.weight_decay_on == "all":
        return [{"params": params, "weight_decay": cfg.optim.weight_decay}]
    return [
        {"params": [p for p in params if p.dim() > 1], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0},
    ]


def seed_everything(seed: int, epoch: int, rank: int) -> None:
    # Distinct streams per (epoch, rank); attack noise differs between ranks like their data does.
    value = (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)
    torch.manual_seed(value)
    random.seed(value)


class StopRule(Protocol):
    """A search's early-stopping rule as the loop sees it (MO-ASHA's rung judge): the stop hook a
    context is given. The loop knows nothing of the search; the search hands its rule in."""

    def asks_at(self, epoch: int) -> bool:
        """Whether the rule may stop the run after `epoch` (a rung); elsewhere it is not asked."""
        ...

    def stops(self, epoch: int, metrics: dict) -> bool:
        """Whether the run ends after this epoch; if so the reason goes into `metrics`."""
        ...


class Context:
    """What differs between a plain process and a Ray Train worker. This one is the plain process."""

    rank = 0
    world_size = 1
    max_steps_per_epoch = 0  # 0: whole epochs; `mtard search --plan` times a few steps per epoch

    def __init__(self, device: torch.device, stop_rule: StopRule | None = None):
        self.device = device
        self.stop_rule = stop_rule

    def all_reduce_mean(self, t: Tensor) -> Tensor:
        return t

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        return t

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def once_per_node(self, fn) -> None:
        """Run `fn` on one worker per machine while the others wait (e.g. fetching the staged teachers)."""
        fn()

    def latest_checkpoint(self) -> dict | None:
        return None

    def report(self, metrics: dict, payload: dict | None) -> None:
        """Called by every rank once per epoch; `payload` is the checkpoint (rank 0 only)."""

    def save_best(self, payload: dict) -> None:
        """Keep `payload` as the run's selected (best) checkpoint, `BEST_FILE` beside the last one.

        Called on rank 0 only, before `report` of the same epoch, when `eval.select` is "best" and
        this epoch became the selected one. It must survive whatever prunes the per-epoch
        checkpoints, overwrite the previous best, and never leave a half-written file.
        The base class (no storage) keeps nothing.
        """

    def rung_stop(self, epoch: int, metrics: dict) -> bool:
        """Whether the context's stop rule (a search's MO-ASHA judge) ends the run after this epoch.

        Called by every rank after the epoch's metrics are all-reduced; every rank gets the same
        answer. A stopped run still reports this epoch with its checkpoint, then returns normally;
        the rule adds its reason to `metrics`. Without a rule (outside a search): never.
        """
        return self.stop_rule is not None and self.stop_rule.asks_at(epoch) and self.stop_rule.stops(epoch, metrics)


class LocalContext(Context):
    """A plain process: checkpoint and metrics files under the run directory."""

    def __init__(self, device: torch.device, run_dir: Path, *, resume: bool):
        from mtard.logs import MetricsLog

        super().__init__(device)
        self.run_dir = run_dir
        self.checkpoint = run_dir / ckpt.CHECKPOINT_FILE
        self.best = run_dir / BEST_FILE
        self.resume = resume
        self.log = MetricsLog(run_dir)

    def latest_checkpoint(self):
        if not self.resume:
            return None
        if not self.checkpoint.is_file():
            raise MtardError(f"--resume: no checkpoint at {self.checkpoint}; start without --resume")
        state = ckpt.read(self.checkpoint, self.device)
        repaired = self.log.repair(dict(state.get("metrics") or {}))
        if repaired:
            print(f"[train] repaired {repaired}", file=sys.stderr, flush=True)
        return state

    def report(self, metrics, payload):
        if payload is not None:
            ckpt.save(self.checkpoint, payload)
        self.log.write(metrics)

    def save_best(self, payload):
        ckpt.save(self.best, payload)


def build_teachers(cfg: TrainConfig, splits: Splits, ctx: Context) -> dict[str, nn.Module]:
    """The frozen teachers of this run, by role. Loaded, never trained: a missing one is an error here.

    When the driver staged the teachers (`teachers.staged_store`), one process per node fetches
    the staged copies (sha256-checked) and every rank loads those; otherwise the catalog files.
    """
    names = teacher_fields(cfg)
    if not names:
        return {}
    t = cfg.teachers
    catalog = load_catalog(t.catalog)
    entries = {
        field_path.rsplit(".", 1)[-1]: resolve(catalog, name, cfg.data.name, field_path=field_path, robustbench_dir=t.robustbench_dir)
        for field_path, name in names
    }
    if t.staged_store:
        unstaged = [e.name for e in entries.values() if e.name not in t.staged]
        if unstaged:
            raise MtardError(f"teacher(s) {', '.join(unstaged)} were not staged by the driver in {t.staged_store}; start the run again with mtard search / mtard train")
        ctx.once_per_node(lambda: [node_copy(t.staged_store, t.staged[e.name]) for e in entries.values()])
        paths = {role: staged_path(t.staged[e.name]) for role, e in entries.items()}
    else:
        paths = {role: verified_file(e)[0] for role, e in entries.items()}
    return {role: _teacher(e, paths[role], splits.info, ctx.device) for role, e in entries.items()}


# Teachers loaded in this process, by what determines them: the catalog entry, the checkpoint
# file's identity (a retrained file is loaded again), the data shape and the device. A search's
# trial process runs trial after trial: each loads its teachers once. Teachers are frozen, so
# trials can share them; only the latest set is kept.
_TEACHERS: dict[tuple, nn.Module] = {}


def _teacher(entry, path: Path, info, device: torch.device) -> nn.Module:
    stat = path.stat()
    key = (repr(entry), str(path), (stat.st_mtime_ns, stat.st_size), info, str(device))
    if key not in _TEACHERS:
        model = build_teacher(entry, path, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)
        if len(_TEACHERS) >= 2:  # a clean and a robust teacher
            _TEACHERS.clear()
        _TEACHERS[key] = model.to(device)
    return _TEACHERS[key]


@torch.no_grad()
def _count_correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return (model(x).argmax(1) == y).sum()


def validation_autocast(cfg: TrainConfig, device: torch.device):
    """fp32 unless `eval.bf16` asks for bf16 autocast (CUDA only): these numbers rank trials."""
    if cfg.eval.bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def validation_metrics(model: nn.Module, cfg: TrainConfig, splits: Splits, ctx: Context, autocast) -> dict[str, float]:
    """Clean and PGD accuracy on (this rank's shard of) the validation split, summed over ranks.

    `autocast` is the validation precision context (`validation_autocast(cfg, device)` in `fit`).
    """
    model.eval()
    e = cfg.eval
    val = splits.val
    indices = range(min(len(val), e.max_samples) if e.max_samples else len(val))
    shard = torch.utils.data.Subset(val, list(indices)[ctx.rank :: ctx.world_size])
    loader = epoch_loader(shard, batch_size=e.batch_size, seed=0, epoch=0, shuffle=False)
    totals = torch.zeros(3, device=ctx.device)  # clean correct, pgd correct, samples
    torch.manual_seed(cfg.runtime.seed)  # the same PGD start every epoch: curves compare like with like
    for x, y in loader:
        x, y = x.to(ctx.device), y.to(ctx.device)
        with autocast:
            totals[0] += _count_correct(model, x, y)
            if e.pgd_steps > 0:
                x_adv = pgd(model, x, y, eps=e.eps, step_size=e.pgd_step_size, steps=e.pgd_steps, start="uniform")
                totals[1] += _count_correct(model, x_adv, y)
        totals[2] += len(y)
    totals = ctx.all_reduce_sum(totals)
    n = max(totals[2].item(), 1.0)
    # val_samples: the images behind both accuracies (their binomial noise: mtard.stats).
    return {"val_clean_acc": totals[0].item() / n, "val_pgd_acc": totals[1].item() / n if e.pgd_steps else float("nan"),
            "val_samples": int(totals[2].item())}


def selection_score(criterion: str, clean: float, pgd: float) -> float:
    """The `eval.select_criterion` value of one epoch ("mean" = (clean + PGD)/2, the official one)."""
    return {"mean": (clean + pgd) / 2, "clean": clean, "pgd": pgd}[criterion]


def is_selection_epoch(cfg: TrainConfig, epoch: int) -> bool:
    """Whether `epoch` is a candidate for "best": every `eval.select_every` epochs before the first lr
    milestone, every epoch from that milestone on, and always the final epoch (official B-MTARD: 20, 215)."""
    if epoch == cfg.optim.epochs or epoch % cfg.eval.select_every == 0:
        return True
    return bool(cfg.optim.milestones) and epoch >= cfg.optim.milestones[0]


def update_selection(cfg: TrainConfig, selected: dict, metrics: dict) -> tuple[dict, bool]:
    """The `SELECTION_METRICS` after the epoch in `metrics`, and whether that epoch is now the selected one.

    `selected` holds the previous epoch's values (empty at the start). "last" selects every epoch;
    "best" keeps the first candidate epoch with the highest score (ties keep the earlier epoch).
    Before the first candidate epoch the selected values are NaN and the epoch is 0.
    """
    e = cfg.eval
    score = selection_score(e.select_criterion, metrics["val_clean_acc"], metrics["val_pgd_acc"])
    if e.select == "last":
        chosen = True
    else:
        best = selected.get("selected_score", math.nan)
        chosen = is_selection_epoch(cfg, metrics["epoch"]) and math.isfinite(score) and not score <= best
    if not chosen:
        return {"selected_epoch": 0, **{k: math.nan for k in SELECTION_METRICS[1:]}, **selected}, False
    return {
        "selected_epoch": metrics["epoch"],
        "selected_score": score,
        "selected_val_clean_acc": metrics["val_clean_acc"],
        "selected_val_pgd_acc": metrics["val_pgd_acc"],
    }, True


def fit(cfg: TrainConfig, ctx: Context) -> dict:
    """Train per `cfg`; report metrics (and a checkpoint) every epoch; return the last epoch's metrics."""
    device = ctx.device
    seed_everything(cfg.runtime.seed, 0, 0)  # identical initial weights on every rank
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    splits = load_splits(cfg.data)
    info = splits.info
    on_cuda = device.type == "cuda"
    memory_format = torch.channels_last if (cfg.runtime.channels_last and on_cuda) else torch.contiguous_format

    student = build_model(cfg.student.arch, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)
    student = ctx.prepare_model(student.to(memory_format=memory_format))
    teachers = {k: t.to(memory_format=memory_format) for k, t in build_teachers(cfg, splits, ctx).items()}
    if cfg.runtime.compile:
        compile_models(unwrap(student), *teachers.values())
    method: Method = build_method(cfg, student, teachers, ctx.all_reduce_mean)
    optimizer = torch.optim.SGD(
        parameter_groups(cfg, student), lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov,
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (cfg.runtime.bf16 and on_cuda) else nullcontext()

    start_epoch, metrics = _resume(cfg, ctx, student, optimizer, method)
    previous_time = metrics.get("time_in_epochs_s", 0.0)
    selected = {k: metrics[k] for k in SELECTION_METRICS if k in metrics}  # carried across resumes

    per_rank_batch = cfg.data.batch_size // ctx.world_size  # data.batch_size is global
    spec = ckpt.model_spec(cfg.student.arch, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size, dataset=info.name)
    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        lr = _start_epoch(cfg, ctx, optimizer, method, epoch)
        loader = epoch_loader(
            splits.train, batch_size=per_rank_batch, seed=cfg.runtime.seed, epoch=epoch, rank=ctx.rank,
            world_size=ctx.world_size, num_workers=cfg.data.num_workers, pin_memory=on_cuda,
        )
        student.train()
        t0 = time.perf_counter()
        log, samples = _train_epoch(cfg, ctx, method, optimizer, loader, epoch=epoch, lr=lr, autocast=autocast, memory_format=memory_format)
        train_time = time.perf_counter() - t0

        metrics, selected, is_selected = _epoch_metrics(
            cfg, ctx, log, unwrap(student), splits, selected, epoch=epoch, lr=lr, samples=samples, t0=t0, train_time=train_time, previous_time=previous_time,
        )
        previous_time = metrics["time_in_epochs_s"]
        if cfg.runtime.progress and ctx.rank == 0:
            print(f"{cfg.name}: epoch {epoch}/{cfg.optim.epochs}  loss {metrics['loss']:.4f}  val clean {metrics['val_clean_acc']:.4f}  "
                  f"val PGD {metrics['val_pgd_acc']:.4f}  ({metrics['epoch_time_s']:.1f} s)", flush=True)

        # Asked before the checkpoint is built, so a stopped run's checkpoint records why it stopped.
        stop = ctx.rung_stop(epoch, metrics)
        payload = None
        if ctx.rank == 0:
            payload = _checkpoint_payload(cfg, spec, student, optimizer, method, epoch, metrics)
            if is_selected and cfg.eval.select == "best":
                ctx.save_best(payload)  # before the report: a crash between the two re-runs this epoch
        ctx.report(metrics, payload)
        if stop:
            break
    return metrics


def _start_epoch(cfg: TrainConfig, ctx: Context, optimizer: torch.optim.Optimizer, method: Method, epoch: int) -> float:
    """Re-seed from (seed, epoch, rank), set the epoch's lr, decay the method's own rates after a milestone; the lr."""
    seed_everything(cfg.runtime.seed, epoch, ctx.rank)
    lr = lr_at(cfg, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    if epoch - 1 in cfg.optim.milestones:
        method.on_milestone(cfg.optim.gamma)  # official: the balance lrs decay with the lr
    return lr


def _resume(cfg: TrainConfig, ctx: Context, student: nn.Module, optimizer: torch.optim.Optimizer, method: Method) -> tuple[int, dict]:
    """The first epoch to train and the metrics so far: from the context's latest checkpoint (whose
    weights, optimizer and method state are restored here), else (1, {})."""
    state = ctx.latest_checkpoint()
    if state is None:
        return 1, {}
    ckpt.load_weights(unwrap(student), state["state_dict"], arch=cfg.student.arch, source="the resumed checkpoint")
    optimizer.load_state_dict(state["optimizer"])
    method.load_state_dict(state["method"])
    return state["epoch"] + 1, state["metrics"]


def _train_epoch(
    cfg: TrainConfig, ctx: Context, method: Method, optimizer: torch.optim.Optimizer, loader, *, epoch: int, lr: float, autocast, memory_format
) -> tuple[EpochLog, int]:
    """One epoch's optimizer steps: its loss log and the samples this rank trained on. Raises
    `TrainingDiverged` at the first non-finite loss a check reads (every `divergence_check_every` steps)."""
    log = EpochLog(ctx.device)
    samples = 0
    check_every = cfg.runtime.divergence_check_every
    for step, (x, y) in enumerate(_progress(loader, cfg, ctx, epoch)):
        x = x.to(ctx.device, non_blocking=True).to(memory_format=memory_format)
        y = y.to(ctx.device, non_blocking=True)
        train_step(method, optimizer, x, y, step=step, log=log, autocast=autocast, reduce_mean=ctx.all_reduce_mean)
        samples += len(y)
        if (step + 1) % check_every == 0:
            _stop_if_diverged(log, cfg, epoch, lr)
        if step + 1 == ctx.max_steps_per_epoch:
            break
    _stop_if_diverged(log, cfg, epoch, lr)
    return log, samples


def _epoch_metrics(
    cfg: TrainConfig, ctx: Context, log: EpochLog, model: nn.Module, splits: Splits, selected: dict, *,
    epoch: int, lr: float, samples: int, t0: float, train_time: float, previous_time: float,
) -> tuple[dict, dict, bool]:
    """The epoch's reported metrics, the same on every rank (loss parts all-reduced, validation, the
    selected epoch's numbers, times, throughput), the selection after it, and whether this epoch is
    now the selected one. `previous_time`: seconds in the run's earlier epochs, across resumes."""
    means = log.means()
    reduced = ctx.all_reduce_mean(torch.stack(list(means.values()))).tolist() if means else []
    metrics = {"epoch": epoch, "lr": lr, **dict(zip(means, reduced))}
    metrics.update(validation_metrics(model, cfg, splits, ctx, validation_autocast(cfg, ctx.device)))
    selected, is_selected = update_selection(cfg, selected, metrics)
    metrics.update(selected)
    total_samples = ctx.all_reduce_sum(torch.tensor(float(samples), device=ctx.device)).item()
    epoch_time = time.perf_counter() - t0  # training + validation
    metrics.update(
        train_time_s=train_time,
        samples_per_s=total_samples / max(train_time, 1e-9),
        epoch_time_s=epoch_time,
        # Summed over the epochs of this run, across resumes: what a search's trial really trained for.
        time_in_epochs_s=previous_time + epoch_time,
    )
    return metrics, selected, is_selected


def _checkpoint_payload(cfg: TrainConfig, spec: dict, student: nn.Module, optimizer: torch.optim.Optimizer, method: Method, epoch: int, metrics: dict) -> dict:
    """What an epoch's checkpoint holds: enough to rebuild the model alone (`model`) and to resume exactly."""
    return {
        "model": spec,
        "state_dict": unwrap(student).state_dict(),
        "optimizer": optimizer.state_dict(),
        "method": method.state_dict(),
        "epoch": epoch,
        "rng": {"seed": cfg.runtime.seed, "scheme": "reseeded from (seed, epoch, rank) at each epoch start"},
        "config": to_dict(cfg),
        "metrics": metrics,
    }


def _stop_if_diverged(log: EpochLog, cfg: TrainConfig, epoch: int, lr: float) -> None:
    bad = log.first_bad()
    if bad is None:
        return
    step, value = bad
    kept = f"the last good checkpoint (epoch {epoch - 1}) is kept" if epoch > 1 else "no checkpoint was written yet"
    raise TrainingDiverged(
        f"training diverged: loss is {value} at epoch {epoch}, batch {step} (method {cfg.method.name}, "
        f"optim.lr={lr:g}); {kept}; lower optim.lr or check the teachers",
        epoch,
    )


def _progress(loader, cfg: TrainConfig, ctx: Context, epoch: int):
    if not cfg.runtime.progress or ctx.rank != 0:
        return loader
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (job logs, CI), where it is only noise.
    return tqdm(loader, desc=f"{cfg.name} epoch {epoch}/{cfg.optim.epochs}", leave=False, dynamic_ncols=True, disable=None)

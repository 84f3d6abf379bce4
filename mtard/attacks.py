"""L∞ white-box attacks for training (inner maximisation) and evaluation.

All attacks share one projected-sign-gradient loop (`_linf_attack`):

    x_adv ← clip_[0,1]( Π_{‖·−x‖∞≤ε}( x_adv + step·sign(∇_{x_adv} loss) ) )

Design choices, and why:

* Gradients come from `torch.autograd.grad(loss, x_adv)`, never `.backward()`:
  nothing accumulates in the parameters' `.grad` (the training step that follows
  would otherwise add attack gradients to its own), and the autograd engine skips
  computing weight gradients altogether.
* The model runs in eval mode (train mode on request: ARD's official attack uses it)
  and every submodule's own mode is restored afterwards, also on an exception, so a
  deliberately frozen BatchNorm inside a training model stays frozen.
* Losses are computed from float32 logits even under autocast, so the sign of small
  gradients does not flip or vanish through half-precision rounding.
* Losses are *summed* over the batch: the sign is scale-invariant, and the sum keeps
  per-sample gradients from underflowing to 0 on large batches.
* The loop runs under `torch.enable_grad()`, so evaluation code may call it inside
  `torch.no_grad()`. (Not inside `torch.inference_mode()`: no gradients exist there.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Start = Literal["gaussian", "uniform", "uniform_unclamped", "zero"]
STARTS = ("gaussian", "uniform", "uniform_unclamped", "zero")
LossName = Literal["ce", "kl"]

#: Std of the MTARD/RSLAD/TRADES random start `x + 0.001·N(0, 1)`.
GAUSSIAN_START_STD = 1e-3


def _start_point(x: Tensor, eps: float, start: str) -> Tensor:
    if start == "gaussian":
        # As the official code: no clamp here; the first projection + clamp fixes it.
        return x + GAUSSIAN_START_STD * torch.randn_like(x)
    if start in ("uniform", "uniform_unclamped"):
        noisy = x + torch.empty_like(x).uniform_(-eps, eps)
        # ARD's official start is not clamped: its first forward may see pixels outside [0, 1].
        return noisy if start == "uniform_unclamped" else noisy.clamp_(0.0, 1.0)
    if start == "zero":
        return x.clone()
    raise ValueError(f"unknown attack start {start!r}; expected one of {', '.join(STARTS)}")


def _linf_attack(
    model: nn.Module,
    x: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    *,
    eps: float,
    step_size: float,
    steps: int,
    start: str,
    train_mode: bool,
) -> Tensor:
    """Maximise `loss_fn(model(x_adv))` (float32 logits in, scalar out) inside the ε-ball."""
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError(f"eps, step_size and steps must be >= 0, got {eps}, {step_size}, {steps}")
    if start not in STARTS:
        raise ValueError(f"unknown attack start {start!r}; expected one of {', '.join(STARTS)}")
    x = x.detach()
    if eps == 0 or steps == 0:
        return x.clone()

    modes = [(m, m.training) for m in model.modules()]
    model.train(train_mode)
    try:
        with torch.enable_grad():
            x_adv = _start_point(x, eps, start)
            lower, upper = x - eps, x + eps
            for _ in range(steps):
                x_adv.requires_grad_(True)
                loss = loss_fn(model(x_adv).float())
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = x_adv.detach() + step_size * grad.sign()
                x_adv = torch.clamp(torch.min(torch.max(x_adv, lower), upper), 0.0, 1.0)
    finally:
        for module, was_training in modes:
            module.training = was_training
    return x_adv.detach()


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    start: Start = "uniform",
    loss: LossName = "ce",
    target_logits: Tensor | None = None,
    train_mode: bool = False,
) -> Tensor:
    """L∞ PGD maximising cross-entropy (`loss="ce"`) or a KL divergence (`loss="kl"`).

    Args:
        model: maps images in [0, 1] to logits [B, C].
        x: clean images in [0, 1]; y: labels [B] (unused for `loss="kl"`).
        start: "gaussian" (x + 0.001·N(0,1): MTARD/RSLAD/TRADES training),
            "uniform" (x + U(−ε, ε), clamped: Madry/SAT and the PGD-20 evaluations),
            "uniform_unclamped" (the same without the clamp: ARD's official attack) or "zero".
        loss: "ce" = CE(model(x_adv), y); "kl" = KL(softmax(target) ‖ softmax(model(x_adv))),
            summed. TRADES passes the student's clean logits as the target, RSLAD the
            robust teacher's clean logits.
        train_mode: run the model in train mode during the attack (ARD's official attack).

    Returns:
        Detached adversarial images; a copy of `x` when `eps == 0` or `steps == 0`.
    """
    if loss == "ce":

        def loss_fn(logits: Tensor) -> Tensor:
            return F.cross_entropy(logits, y, reduction="sum")

    elif loss == "kl":
        if target_logits is None:
            raise ValueError("pgd(loss='kl') needs target_logits (the logits the KL is measured against)")
        target = torch.softmax(target_logits.detach().float(), dim=1)

        def loss_fn(logits: Tensor) -> Tensor:
            if logits.shape != target.shape:
                raise ValueError(
                    f"pgd(loss='kl'): target_logits shape {tuple(target.shape)} "
                    f"differs from the model's logits {tuple(logits.shape)}"
                )
            return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")

    else:
        raise ValueError(f"unknown attack loss {loss!r}; expected 'ce' or 'kl'")
    return _linf_attack(
        model, x, loss_fn, eps=eps, step_size=step_size, steps=steps, start=start, train_mode=train_mode
    )


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, random_start: bool = False) -> Tensor:
    """FGSM: one signed-gradient step of size ε on the cross-entropy (eval mode).

    From `x` itself (Goodfellow et al.), or with `random_start` from `x + U(−ε, ε)` clamped to
    [0, 1], then projected back into the ε-ball: the "FGSM" of the DAT/FAT evaluation code
    (`attack_generator.py` of FAT, Zhang et al. 2020, `rand_init=True`), which later robust
    distillation papers' tables follow.
    """
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, start="uniform" if random_start else "zero")


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample margin `z_y − max_{j≠y} z_j` (positive = correctly classified)."""
    true = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return true - others.max(dim=1).values


def cw_inf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    confidence: float = 50.0,
) -> Tensor:
    """CW∞: PGD on the Carlini-Wagner margin loss, as the DAT/FAT evaluation code runs it.

    Lineage: no official MTARD, RSLAD, ARD or TRADES repository contains a CW attack. This is
    the "CW" of FAT's `attack_generator.py` (Zhang et al. 2020, after DAT, Wang et al. 2019),
    whose margin loss is credited there to CAT (Cai et al. 2018): confidence 50, 30 steps of
    ε/4 at ε = 0.031, uniform random start (clamped), eval mode.

    The maximised loss is `−max(z_y − max_{j≠y} z_j + κ, 0)` per sample, summed: it keeps
    pushing until the best wrong class beats the true class by the confidence κ, then
    stops (zero gradient).
    """

    def loss_fn(logits: Tensor) -> Tensor:
        return -torch.clamp(cw_margin(logits, y) + confidence, min=0.0).sum()

    return _linf_attack(
        model, x, loss_fn, eps=eps, step_size=step_size, steps=steps, start="uniform", train_mode=False
    )

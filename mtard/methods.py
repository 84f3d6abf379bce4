"""Training methods: one small step object each.

A step takes a clean batch and returns a dict of loss parts; `"loss"` carries the
gradient, every other entry is a detached number that flows unchanged into the
logs (so adding a method never touches logging). Formulas follow the reference
(docs/algorithm.md); the official choices are the config defaults.

Distributed runs pass `reduce_mean`, an all-reduce over ranks: MTARD's controllers
consume per-batch statistics, and averaging them keeps τ and w identical on every
rank (a plain process passes the identity).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtard.attacks import pgd
from mtard.balance import EntropyBalance, LossBalance
from mtard.config import NEEDS_TEACHERS, TrainConfig
from mtard.losses import reference_kl

Reduce = Callable[[Tensor], Tensor]
Parts = dict[str, Tensor | float]

# Each method's official attack start, used when attack.start is "method".
OFFICIAL_START = {"sat": "uniform", "trades": "gaussian", "ard": "uniform_unclamped", "rslad": "gaussian", "mtard": "gaussian"}


def teacher_fields(cfg: TrainConfig) -> list[tuple[str, str]]:
    """The (config field, teacher name) pairs this run's method needs, e.g. [("teachers.robust", "x")]."""
    return [(f"teachers.{role}", getattr(cfg.teachers, role)) for role in NEEDS_TEACHERS[cfg.method.name]]


def _identity(t: Tensor) -> Tensor:
    return t


def unwrap(model: nn.Module) -> nn.Module:
    """The attack runs on the bare student: DDP only has to see the training forwards."""
    return model.module if hasattr(model, "module") else model


# Methods whose official attack runs the student in train mode (BN on batch statistics), used when
# attack.bn_mode is "method". (Madry's own SAT does too: attack.bn_mode: train, cifar10_sat_madry.)
OFFICIAL_TRAIN_MODE_ATTACK = ("ard",)


class Method:
    """Base: no state, no schedule. Subclasses implement `__call__(x, y) -> Parts`."""

    def __init__(self, cfg: TrainConfig, student: nn.Module, teachers: dict[str, nn.Module], reduce_mean: Reduce = _identity):
        self.cfg = cfg
        self.student = student
        self.teachers = teachers
        self.reduce_mean = reduce_mean
        a = cfg.attack
        start = OFFICIAL_START.get(cfg.method.name, "uniform") if a.start == "method" else a.start
        train_mode = cfg.method.name in OFFICIAL_TRAIN_MODE_ATTACK if a.bn_mode == "method" else a.bn_mode == "train"
        self.attack_kwargs = dict(eps=a.eps, step_size=a.step_size, steps=a.steps, start=start, train_mode=train_mode)

    def __call__(self, x: Tensor, y: Tensor) -> Parts:
        raise NotImplementedError

    def on_milestone(self, gamma: float) -> None:
        """Called when the lr schedule passes a milestone."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Natural(Method):
    def __call__(self, x, y):
        return {"loss": F.cross_entropy(self.student(x), y)}


class SAT(Method):
    """PGD-AT (Madry et al.): cross-entropy on PGD examples."""

    def __call__(self, x, y):
        x_adv = pgd(unwrap(self.student), x, y, **self.attack_kwargs)
        return {"loss": F.cross_entropy(self.student(x_adv), y)}


class TRADES(Method):
    """CE(clean) + β·KL(S(x) ‖ S(x_adv)); the attack maximises that KL."""

    def __call__(self, x, y):
        bare = unwrap(self.student)
        with torch.no_grad():
            was_training = bare.training
            bare.eval()
            target = bare(x).float()
            bare.train(was_training)
        x_adv = pgd(bare, x, y, loss="kl", target_logits=target, **self.attack_kwargs)
        logits_nat = self.student(x).float()
        logits_adv = self.student(x_adv).float()
        natural = F.cross_entropy(logits_nat, y)
        # TRADES' official loss: summed KL over classes, averaged over the batch, gradient through both sides.
        robust = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_nat, 1), reduction="batchmean")
        beta = self.cfg.method.trades_beta
        return {"loss": natural + beta * robust, "ce_nat": natural.detach(), "kl_rob": robust.detach()}


class ARD(Method):
    """α·T²·KL(S(x_adv)/T ‖ T_adv(x)/T) + (1−α)·CE(S(x), y); attack with the student in train mode (official)."""

    def __call__(self, x, y):
        m = self.cfg.method
        x_adv = pgd(unwrap(self.student), x, y, **self.attack_kwargs)  # train mode: OFFICIAL_TRAIN_MODE_ATTACK
        with torch.no_grad():
            teacher = self.teachers["robust"](x).float()
        t = m.ard_temperature
        log_q = F.log_softmax(self.student(x_adv).float() / t, 1)
        # The official code runs the clean forward at every α, α = 1 included (train mode, after the
        # adversarial one), so the student's BN running statistics also see clean batches.
        ce = F.cross_entropy(self.student(x).float(), y)
        # ARD's KLDivLoss() averaged over all B×C elements; written out because reduction="mean"
        # is deprecated and will turn into "batchmean" (C times larger) in a future torch.
        kl = F.kl_div(log_q, F.softmax(teacher / t, 1), reduction="sum") / log_q.numel()
        loss = m.ard_alpha * t * t * kl
        if m.ard_alpha < 1:  # at α = 1 the official 0·CE adds no gradient (and 0·inf would be NaN)
            loss = loss + (1 - m.ard_alpha) * ce
        return {"loss": loss, "kl_adv": kl.detach(), "ce_nat": ce.detach()}


class RSLAD(Method):
    """Robust soft labels: the robust teacher's clean prediction supervises both student views."""

    def __call__(self, x, y):
        m = self.cfg.method
        with torch.no_grad():
            soft = self.teachers["robust"](x).float()
        x_adv = pgd(unwrap(self.student), x, y, loss="kl", target_logits=soft, **self.attack_kwargs)
        p = F.softmax(soft, 1)
        kl_adv = m.kl_scale * reference_kl(p, F.log_softmax(self.student(x_adv).float(), 1))
        kl_nat = m.kl_scale * reference_kl(p, F.log_softmax(self.student(x).float(), 1))
        w = m.rslad_adv_weight
        return {"loss": w * kl_adv + (1 - w) * kl_nat, "kl_adv": kl_adv.detach(), "kl_nat": kl_nat.detach()}


class MTARD(Method):
    """B-MTARD: a clean and a robust teacher, balanced by temperature (entropy) and loss weights."""

    def __init__(self, cfg, student, teachers, reduce_mean=_identity):
        super().__init__(cfg, student, teachers, reduce_mean)
        b = cfg.balance
        self.entropy = EntropyBalance(tau_nat=b.tau_nat_init, tau_adv=b.tau_adv_init, lr=b.tau_lr, tau_min=b.tau_min, tau_max=b.tau_max)
        self.weights = LossBalance(w_nat=b.w_nat_init, lr=b.w_lr, alpha=b.alpha)

    def __call__(self, x, y):
        x_adv = pgd(unwrap(self.student), x, y, **self.attack_kwargs)  # no teacher takes part in the attack
        with torch.no_grad():
            t_adv = self.teachers["robust"](x_adv).float()
            t_nat = self.teachers["clean"](x).float()
        # Two separate forwards, as the official code: each view updates the BN statistics.
        s_adv = self.student(x_adv).float()
        s_nat = self.student(x).float()
        tau_adv, tau_nat = self.entropy.tau_adv, self.entropy.tau_nat
        scale = self.cfg.method.kl_scale
        kl_adv = scale * reference_kl(F.softmax(t_adv / tau_adv, 1), F.log_softmax(s_adv, 1))
        kl_nat = scale * reference_kl(F.softmax(t_nat / tau_nat, 1), F.log_softmax(s_nat, 1))

        # Entropy-Based Balance: measured at the current τ, moves τ for the *next* step.
        # A diverged student (NaN/inf inputs or logits) gives NaN statistics, which the balances
        # rightly refuse: skip their update and let the loop see the non-finite loss (TrainingDiverged).
        if self.cfg.balance.learn_temperature:
            h_nat, h_adv = self.reduce_mean(self.entropy.entropies(t_nat, t_adv)).tolist()
            if math.isfinite(h_nat) and math.isfinite(h_adv):
                self.entropy.update(h_nat, h_adv)
        # Normalization Loss Balance: moves w for *this* step; weights are plain numbers (no gradient).
        loss_nat, loss_adv = self.reduce_mean(torch.stack([kl_nat.detach(), kl_adv.detach()])).tolist()
        if math.isfinite(loss_nat) and math.isfinite(loss_adv):
            self.weights.step(loss_nat, loss_adv)
        w_adv, w_nat = self.weights.w_adv, self.weights.w_nat
        return {
            "loss": w_adv * kl_adv + w_nat * kl_nat,
            "kl_adv": kl_adv.detach(),
            "kl_nat": kl_nat.detach(),
            "w_adv": w_adv,
            "w_nat": w_nat,
            "tau_adv": tau_adv,
            "tau_nat": tau_nat,
        }

    def on_milestone(self, gamma):
        if self.cfg.balance.decay_with_lr:
            self.entropy.scale_lr(gamma)
            self.weights.scale_lr(gamma)

    def state_dict(self):
        return {"entropy": self.entropy.state_dict(), "weights": self.weights.state_dict()}

    def load_state_dict(self, state):
        self.entropy.load_state_dict(state["entropy"])
        self.weights.load_state_dict(state["weights"])


METHODS: dict[str, type[Method]] = {"natural": Natural, "sat": SAT, "trades": TRADES, "ard": ARD, "rslad": RSLAD, "mtard": MTARD}


def build_method(cfg: TrainConfig, student: nn.Module, teachers: dict[str, nn.Module], reduce_mean: Reduce = _identity) -> Method:
    return METHODS[cfg.method.name](cfg, student, teachers, reduce_mean)

"""The two B-MTARD controllers: Entropy-Based Balance and Normalization Loss Balance.

Both are tiny stateful objects holding plain Python floats, so that

* the trainer can checkpoint them (`state_dict`) and a resumed run continues
  bit-for-bit;
* a distributed trainer can average the statistics across workers between
  measuring and updating (`EntropyBalance.entropies` → all-reduce → `update`;
  `LossBalance.step` takes already-reduced floats), keeping every worker's
  temperatures and weights identical;
* the learning-rate milestones can shrink their step sizes (`scale_lr`), as the
  official code multiplies η_τ and η_w by 0.1 at the same epochs as the SGD lr.

The update rules are the official ones (docs/algorithm.md, 'Entropy-Based Balance' and 'Normalization Loss Balance').
Invalid statistics raise `ValueError` instead of turning the temperatures or the
weights into NaN, which would otherwise silently poison every later step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mtard.losses import neg_entropy


def _sign(v: float) -> float:
    """`torch.sign` for a Python float: −1, 0 or +1 (0 when the two sides are equal)."""
    return float((v > 0) - (v < 0))


def _require_keys(state: dict[str, Any], keys: tuple[str, ...], owner: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{owner}.load_state_dict: missing keys {missing}")


class EntropyBalance:
    """Adapts the two teachers' temperatures so their output entropies stay comparable.

    Each step measures `H = mean(p·log(p+1e-5))` of both teachers' tempered softmax
    (a negative number, −entropy/C) at the *current* temperatures and moves each
    temperature by a fixed step `lr` in the direction that equalises the entropies:
    the teacher whose distribution is more spread out (|H| larger) gets a lower
    temperature, the sharper one a higher temperature. Both are clipped to
    `[tau_min, tau_max]`. The new temperatures take effect at the next step.
    """

    _KEYS = ("tau_nat", "tau_adv", "lr", "tau_min", "tau_max")

    def __init__(
        self,
        tau_nat: float = 1.0,
        tau_adv: float = 1.0,
        lr: float = 1e-3,
        tau_min: float = 1.0,
        tau_max: float = 10.0,
    ) -> None:
        if not (0.0 < tau_min <= tau_max and math.isfinite(tau_max)):
            raise ValueError(f"need 0 < tau_min <= tau_max < inf, got [{tau_min}, {tau_max}]")
        for name, tau in (("tau_nat", tau_nat), ("tau_adv", tau_adv)):
            if not tau_min <= tau <= tau_max:
                raise ValueError(f"{name}={tau} lies outside [tau_min, tau_max] = [{tau_min}, {tau_max}]")
        if not (lr >= 0.0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number >= 0, got {lr}")
        self.tau_nat = float(tau_nat)
        self.tau_adv = float(tau_adv)
        self.lr = float(lr)
        self.tau_min = float(tau_min)
        self.tau_max = float(tau_max)

    @torch.no_grad()
    def entropies(self, nat_logits: Tensor, adv_logits: Tensor) -> Tensor:
        """Return `(H_nat, H_adv)` as a float32 tensor of shape [2] on the logits' device.

        The statistics use the current temperatures. Returned as one tensor so a
        distributed caller can all-reduce (average) it in a single collective.
        """
        h_nat = neg_entropy(torch.softmax(nat_logits.float() / self.tau_nat, dim=1))
        h_adv = neg_entropy(torch.softmax(adv_logits.float() / self.tau_adv, dim=1))
        return torch.stack([h_nat, h_adv])

    def update(self, h_nat: float, h_adv: float) -> None:
        """Apply one temperature step from already-measured (possibly all-reduced) statistics.

        Raises:
            ValueError: a statistic is NaN/inf, or exactly 0 (the ratio is undefined).
                A *positive* value is accepted: the `1e-5` guard makes a near-one-hot
                teacher's statistic slightly positive, and the official rule then
                raises both temperatures, which is the softening such a teacher needs.
        """
        h_nat, h_adv = float(h_nat), float(h_adv)
        for name, h in (("nat", h_nat), ("adv", h_adv)):
            if not math.isfinite(h) or h == 0.0:
                raise ValueError(
                    f"Entropy-Based Balance got an invalid {name}-teacher entropy statistic {h}; "
                    "the teacher's logits are probably NaN/inf or degenerate"
                )
        tau_adv = self.tau_adv - self.lr * _sign(h_adv / h_nat - 1.0)
        tau_nat = self.tau_nat - self.lr * _sign(h_nat / h_adv - 1.0)
        self.tau_adv = min(max(tau_adv, self.tau_min), self.tau_max)
        self.tau_nat = min(max(tau_nat, self.tau_min), self.tau_max)

    def step(self, nat_teacher_logits: Tensor, adv_teacher_logits: Tensor) -> None:
        """Single-process shortcut: `update(*entropies(nat, adv))`."""
        h_nat, h_adv = self.entropies(nat_teacher_logits, adv_teacher_logits).tolist()
        self.update(h_nat, h_adv)

    def scale_lr(self, factor: float) -> None:
        """Multiply the temperature step size (the official schedule uses 0.1 at lr milestones)."""
        self.lr *= float(factor)

    def state_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self._KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _require_keys(state, self._KEYS, type(self).__name__)
        for k in self._KEYS:
            setattr(self, k, float(state[k]))

    def __repr__(self) -> str:
        return f"EntropyBalance(tau_nat={self.tau_nat}, tau_adv={self.tau_adv}, lr={self.lr})"


class LossBalance:
    """Normalization Loss Balance: moves the loss weights toward the *slower* loss.

    The first call records the two losses as the reference `L⁰` (kept for the whole
    run, including across resumes). Afterwards each loss's relative progress is
    `r_i = (L_i / L_i⁰)^alpha`; the loss that has decreased less (larger r) is the one
    lagging behind, and the weights move by `lr` toward `w_nat* = r_nat/(r_nat+r_adv)`.
    The weights apply to the *current* step's total loss and are plain numbers.
    """

    _KEYS = ("w_nat", "lr", "alpha", "ref_nat", "ref_adv")

    def __init__(self, w_nat: float = 0.5, lr: float = 0.025, alpha: float = 1.0) -> None:
        if not 0.0 <= w_nat <= 1.0:
            raise ValueError(f"w_nat must lie in [0, 1], got {w_nat}")
        if not (lr >= 0.0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number >= 0, got {lr}")
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be finite, got {alpha}")
        self.w_nat = float(w_nat)
        self.lr = float(lr)
        self.alpha = float(alpha)
        self.ref_nat: float | None = None
        self.ref_adv: float | None = None

    @property
    def w_adv(self) -> float:
        return 1.0 - self.w_nat

    def step(self, loss_nat: float, loss_adv: float) -> tuple[float, float]:
        """Update and return `(w_nat, w_adv)` for this step's loss.

        Args:
            loss_nat, loss_adv: this step's (detached, possibly all-reduced) losses.

        Raises:
            ValueError: the reference losses are not finite and > 0 (the ratios would
                be inf/NaN), or a later loss is not finite and >= 0, or both are 0.
        """
        loss_nat, loss_adv = float(loss_nat), float(loss_adv)
        if self.ref_nat is None or self.ref_adv is None:
            for name, v in (("natural", loss_nat), ("adversarial", loss_adv)):
                if not (math.isfinite(v) and v > 0.0):
                    raise ValueError(
                        f"Normalization Loss Balance needs a finite, positive first {name} loss "
                        f"as its reference, got {v}"
                    )
            self.ref_nat, self.ref_adv = loss_nat, loss_adv
        for name, v in (("natural", loss_nat), ("adversarial", loss_adv)):
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f"Normalization Loss Balance got an invalid {name} loss {v}")
        r_nat = (loss_nat / self.ref_nat) ** self.alpha
        r_adv = (loss_adv / self.ref_adv) ** self.alpha
        total = r_nat + r_adv
        if not (math.isfinite(total) and total > 0.0):
            raise ValueError(
                f"Normalization Loss Balance: relative losses r_nat={r_nat}, r_adv={r_adv} "
                "cannot be normalised (both zero or overflowing)"
            )
        self.w_nat -= self.lr * (self.w_nat - r_nat / total)
        return self.w_nat, self.w_adv

    def scale_lr(self, factor: float) -> None:
        """Multiply the weight step size (the official schedule uses 0.1 at lr milestones)."""
        self.lr *= float(factor)

    def state_dict(self) -> dict[str, float | None]:
        return {
            "w_nat": self.w_nat,
            "lr": self.lr,
            "alpha": self.alpha,
            "ref_nat": self.ref_nat,
            "ref_adv": self.ref_adv,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _require_keys(state, self._KEYS, type(self).__name__)
        self.w_nat = float(state["w_nat"])
        self.lr = float(state["lr"])
        self.alpha = float(state["alpha"])
        self.ref_nat = None if state["ref_nat"] is None else float(state["ref_nat"])
        self.ref_adv = None if state["ref_adv"] is None else float(state["ref_adv"])

    def __repr__(self) -> str:
        return f"LossBalance(w_nat={self.w_nat}, w_adv={self.w_adv}, lr={self.lr}, alpha={self.alpha})"

"""Distillation losses exactly as the official MTARD code computes them.

The official code does not use PyTorch's `kl_div` reduction conventions: it writes
the KL divergence element-wise with a `1e-5` guard inside the teacher's logarithm
and then takes the plain mean over *all* B×C elements (so the result is the
per-sample KL divided by the number of classes, averaged over the batch). The
scale matters: the loss-balance controller and the learning rate were tuned on
this scale, so using `reduction="batchmean"` instead would silently multiply the
effective learning rate by C.

Both functions compute in float32 even under autocast: `log(p + 1e-5)` on half
precision loses most of the small probabilities that carry the "dark knowledge".
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The guard the official code adds inside `log(p + EPS)`; it keeps p = 0 finite.
LOG_EPS = 1e-5


def _check_same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})")


def reference_kl(teacher_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """Official MTARD KL term: mean over all B×C elements of `p·(log(p+1e-5) − log q)`.

    Args:
        teacher_probs: `softmax(teacher_logits / τ)`, shape [B, C]; no gradient needed.
        student_log_probs: `log_softmax(student_logits)` (temperature 1), shape [B, C].

    Returns:
        A 0-d float32 tensor, differentiable w.r.t. `student_log_probs`.
    """
    _check_same_shape(teacher_probs, student_log_probs, "reference_kl")
    p = teacher_probs.float()
    log_q = student_log_probs.float()
    return (p * (torch.log(p + LOG_EPS) - log_q)).mean()


def neg_entropy(probs: Tensor) -> Tensor:
    """Mean over all elements of `p·log(p+1e-5)`: the Entropy-Based Balance statistic.

    For a proper distribution this is minus the entropy divided by C (a negative
    number; the `1e-5` guard can push a near-one-hot distribution slightly above 0).
    The controller only uses the ratio of two such values, so the 1/C factor cancels.

    Returns:
        A 0-d float32 tensor.
    """
    p = probs.float()
    return (p * torch.log(p + LOG_EPS)).mean()

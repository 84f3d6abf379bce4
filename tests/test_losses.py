"""Known-answer tests for the official-scale KL and the entropy statistic."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtard.losses import neg_entropy, reference_kl


def test_reference_kl_known_answer() -> None:
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.25, 0.75]])
    # Elements: 0.5·(ln 0.50001 − ln 0.25) = 0.5·(−0.693127 + 1.386294) = 0.346584
    #           0.5·(ln 0.50001 − ln 0.75) = 0.5·(−0.693127 + 0.287682) = −0.202722
    # Mean over the B·C = 2 elements: (0.346584 − 0.202722) / 2 = 0.071931
    expected = 0.25 * (2 * math.log(0.50001) - math.log(0.25) - math.log(0.75))
    assert expected == pytest.approx(0.071931, abs=1e-6)
    assert reference_kl(p, q.log()).item() == pytest.approx(expected, rel=1e-6)


def test_reference_kl_is_per_sample_kl_over_classes_batch_mean() -> None:
    # Divided by C and averaged over B: the official scale (not PyTorch's batchmean).
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(4, 10), dim=1)
    log_q = torch.log_softmax(torch.randn(4, 10), dim=1)
    per_sample = (p * (torch.log(p + 1e-5) - log_q)).sum(dim=1)
    assert reference_kl(p, log_q).item() == pytest.approx((per_sample / 10).mean().item(), rel=1e-6)
    # And it is PyTorch's KL up to the 1e-5 guard: F.kl_div(..., "sum") / (B·C).
    torch_kl = F.kl_div(log_q, p, reduction="sum").item() / 40
    assert reference_kl(p, log_q).item() == pytest.approx(torch_kl, abs=1e-4)


def test_reference_kl_gradient_flows_to_student_only() -> None:
    p = torch.tensor([[0.5, 0.5]])
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # softmax = [0.25, 0.75]
    reference_kl(p, torch.log_softmax(logits, dim=1)).backward()
    # d/dz of −mean(p·log_softmax(z)) = (softmax(z) − p)/(B·C) = ([0.25, 0.75] − 0.5)/2
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.125, 0.125]]))


def test_reference_kl_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        reference_kl(torch.ones(2, 3) / 3, torch.zeros(3, 2))


def test_neg_entropy_known_answers() -> None:
    # Uniform over 2: each element 0.5·ln(0.50001) = −0.346564; the mean is the same.
    assert neg_entropy(torch.tensor([[0.5, 0.5]])).item() == pytest.approx(0.5 * math.log(0.50001), rel=1e-6)
    # [0.25, 0.75]: (0.25·ln 0.25001 + 0.75·ln 0.75001) / 2 = (−0.346564 − 0.215752)/2 = −0.281158
    expected = (0.25 * math.log(0.25001) + 0.75 * math.log(0.75001)) / 2
    assert expected == pytest.approx(-0.281158, abs=1e-6)
    assert neg_entropy(torch.tensor([[0.25, 0.75]])).item() == pytest.approx(expected, rel=1e-6)
    # One-hot: 1·ln(1.00001) / 2 ≈ +5e-6: the guard makes it slightly positive
    # (float32 rounds 1.00001, hence the loose tolerance).
    assert neg_entropy(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(math.log(1.00001) / 2, rel=1e-2)


def test_float32_from_half_inputs() -> None:
    p = torch.tensor([[0.5, 0.5]], dtype=torch.bfloat16)
    assert reference_kl(p, p.log()).dtype == torch.float32
    assert neg_entropy(p).dtype == torch.float32

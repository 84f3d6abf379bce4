"""Hand-computed sequences for the two B-MTARD controllers.

Step sizes are powers of two (0.5, 0.25) so every expected value is exact in binary.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mtard.balance import EntropyBalance, LossBalance
from mtard.losses import neg_entropy

# ---------------------------------------------------------------- EntropyBalance


def test_entropy_balance_defaults_match_reference() -> None:
    eb = EntropyBalance()
    assert eb.state_dict() == {"tau_nat": 1.0, "tau_adv": 1.0, "lr": 1e-3, "tau_min": 1.0, "tau_max": 10.0}


def test_entropy_balance_known_sequence() -> None:
    eb = EntropyBalance(tau_nat=2.0, tau_adv=2.0, lr=0.5, tau_min=1.0, tau_max=10.0)
    # Step 1: H_n = −1, H_a = −2 (the adversarial teacher is more spread out).
    #   τ_adv −= 0.5·sign(−2/−1 − 1) = 0.5·sign(1)    → 2 − 0.5 = 1.5
    #   τ_nat −= 0.5·sign(−1/−2 − 1) = 0.5·sign(−0.5) → 2 + 0.5 = 2.5
    eb.update(-1.0, -2.0)
    assert (eb.tau_nat, eb.tau_adv) == (2.5, 1.5)
    # Step 2: equal statistics: sign(0) = 0, nothing moves.
    eb.update(-0.3, -0.3)
    assert (eb.tau_nat, eb.tau_adv) == (2.5, 1.5)
    # Step 3: H_n = −4, H_a = −1: the natural teacher is more spread out.
    #   τ_adv −= 0.5·sign(1/4 − 1) → 1.5 + 0.5 = 2.0;  τ_nat −= 0.5·sign(4 − 1) → 2.5 − 0.5 = 2.0
    eb.update(-4.0, -1.0)
    assert (eb.tau_nat, eb.tau_adv) == (2.0, 2.0)
    assert isinstance(eb.tau_nat, float) and isinstance(eb.tau_adv, float)


def test_entropy_balance_clips_to_bounds() -> None:
    eb = EntropyBalance(tau_nat=2.5, tau_adv=1.5, lr=0.5, tau_min=1.0, tau_max=3.0)
    # Repeating H_n = −1, H_a = −2: τ_adv 1.5 → 1.0 → max(0.5, 1) = 1.0; τ_nat 2.5 → 3.0 → min(3.5, 3) = 3.0
    eb.update(-1.0, -2.0)
    assert (eb.tau_nat, eb.tau_adv) == (3.0, 1.0)
    eb.update(-1.0, -2.0)
    assert (eb.tau_nat, eb.tau_adv) == (3.0, 1.0)


def test_entropy_balance_positive_statistic_follows_official_rule() -> None:
    # A near-one-hot teacher gives a slightly positive statistic (the 1e-5 guard); the
    # ratio is negative, sign(ratio − 1) = −1, so both temperatures rise (soften).
    eb = EntropyBalance(tau_nat=2.0, tau_adv=2.0, lr=0.25)
    eb.update(1e-6, -0.5)
    assert (eb.tau_nat, eb.tau_adv) == (2.25, 2.25)


def test_entropies_match_neg_entropy_of_tempered_softmax() -> None:
    torch.manual_seed(0)
    nat, adv = torch.randn(5, 10) * 3, torch.randn(5, 10)
    eb = EntropyBalance(tau_nat=2.0, tau_adv=4.0)
    h = eb.entropies(nat, adv)
    assert h.shape == (2,) and h.dtype == torch.float32 and not h.requires_grad
    torch.testing.assert_close(h[0], neg_entropy(torch.softmax(nat / 2.0, dim=1)))
    torch.testing.assert_close(h[1], neg_entropy(torch.softmax(adv / 4.0, dim=1)))


def test_step_equals_update_of_entropies() -> None:
    # Clean teacher sharp (large logits), robust teacher flat: H_a more negative than H_n,
    # so τ_adv drops (clipped at 1) and τ_nat rises.
    nat = torch.tensor([[8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
    adv = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    a = EntropyBalance(lr=0.25)
    b = copy.deepcopy(a)
    a.step(nat, adv)
    b.update(*b.entropies(nat, adv).tolist())
    assert a.state_dict() == b.state_dict()
    assert (a.tau_nat, a.tau_adv) == (1.25, 1.0)
    # Second step uses the *new* τ_nat = 1.25 when measuring.
    h = a.entropies(nat, adv)
    torch.testing.assert_close(h[0], neg_entropy(torch.softmax(nat / 1.25, dim=1)))


def test_entropy_balance_scale_lr() -> None:
    eb = EntropyBalance(tau_nat=2.0, tau_adv=2.0, lr=0.5)
    eb.scale_lr(0.5)
    assert eb.lr == 0.25
    eb.update(-1.0, -2.0)  # τ_adv 2 − 0.25 = 1.75, τ_nat 2 + 0.25 = 2.25
    assert (eb.tau_nat, eb.tau_adv) == (2.25, 1.75)


def test_entropy_balance_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(1)
    logits = [(torch.randn(4, 10) * 4, torch.randn(4, 10)) for _ in range(6)]
    a = EntropyBalance(lr=0.25)
    for nat, adv in logits[:3]:
        a.step(nat, adv)
    state = a.state_dict()
    assert all(type(v) is float for v in state.values())
    b = EntropyBalance(tau_nat=5.0, tau_adv=5.0, lr=1.0)
    b.load_state_dict(copy.deepcopy(state))
    for nat, adv in logits[3:]:
        a.step(nat, adv)
        b.step(nat, adv)
        assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize("bad", [(0.0, -1.0), (-1.0, 0.0), (math.nan, -1.0), (-1.0, -math.inf)])
def test_entropy_balance_rejects_invalid_statistics(bad: tuple[float, float]) -> None:
    eb = EntropyBalance()
    with pytest.raises(ValueError, match="Entropy-Based Balance"):
        eb.update(*bad)
    assert (eb.tau_nat, eb.tau_adv) == (1.0, 1.0)  # state untouched


def test_entropy_balance_nan_logits_raise() -> None:
    with pytest.raises(ValueError):
        EntropyBalance().step(torch.full((2, 3), math.nan), torch.zeros(2, 3))


@pytest.mark.parametrize(
    "kwargs", [{"tau_min": 0.0}, {"tau_min": 3.0, "tau_max": 2.0}, {"tau_nat": 11.0}, {"lr": -1.0}]
)
def test_entropy_balance_rejects_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EntropyBalance(**kwargs)


def test_entropy_balance_load_missing_key_raises() -> None:
    with pytest.raises(ValueError, match="missing keys"):
        EntropyBalance().load_state_dict({"tau_nat": 1.0})


# ---------------------------------------------------------------- LossBalance


def test_loss_balance_first_step_keeps_half_half() -> None:
    lb = LossBalance()
    # First step: reference L⁰ = (0.7, 1.9); r = (1, 1) → target 1/2 → w stays 0.5.
    assert lb.step(0.7, 1.9) == (0.5, 0.5)
    assert (lb.ref_nat, lb.ref_adv) == (0.7, 1.9)


def test_loss_balance_known_sequence() -> None:
    lb = LossBalance(w_nat=0.5, lr=0.5, alpha=1.0)
    lb.step(2.0, 4.0)  # reference (2, 4); r = (1, 1) → w_nat 0.5
    # Step 2: r_nat = 1/2 = 0.5, r_adv = 4/4 = 1 → target 0.5/1.5 = 1/3
    #   w_nat = 0.5 − 0.5·(0.5 − 1/3) = 0.5 − 1/12 = 5/12
    w_nat, w_adv = lb.step(1.0, 4.0)
    assert w_nat == pytest.approx(5 / 12) and w_adv == pytest.approx(7 / 12)
    # Step 3: r_nat = 1/2, r_adv = 2/4 → target 1/2
    #   w_nat = 5/12 − 0.5·(5/12 − 6/12) = 5/12 + 1/24 = 11/24
    w_nat, w_adv = lb.step(1.0, 2.0)
    assert w_nat == pytest.approx(11 / 24) and w_adv == pytest.approx(13 / 24)
    assert (lb.w_nat, lb.w_adv) == (w_nat, w_adv)
    assert lb.w_nat + lb.w_adv == pytest.approx(1.0)
    assert (lb.ref_nat, lb.ref_adv) == (2.0, 4.0)  # never reset


def test_loss_balance_alpha_and_non_default_init() -> None:
    lb = LossBalance(w_nat=0.5, lr=0.5, alpha=2.0)
    lb.step(2.0, 4.0)
    # r = ((1/2)², (4/4)²) = (0.25, 1) → target 0.2; w_nat = 0.5 − 0.5·(0.5 − 0.2) = 0.35
    assert lb.step(1.0, 4.0)[0] == pytest.approx(0.35)
    # Non-0.5 init moves toward 1/2 on the first step: 0.3 − 0.025·(0.3 − 0.5) = 0.305
    assert LossBalance(w_nat=0.3).step(1.0, 1.0)[0] == pytest.approx(0.305)


def test_loss_balance_scale_lr() -> None:
    lb = LossBalance(lr=0.5)
    lb.scale_lr(0.5)
    assert lb.lr == 0.25
    lb.step(2.0, 4.0)
    # r = (0.5, 1) → target 1/3; w_nat = 0.5 − 0.25·(1/6) = 11/24
    assert lb.step(1.0, 4.0)[0] == pytest.approx(11 / 24)


def test_loss_balance_state_dict_round_trip_continues_identically() -> None:
    fresh = LossBalance()
    assert fresh.state_dict()["ref_nat"] is None and fresh.state_dict()["ref_adv"] is None
    b0 = LossBalance(w_nat=0.9)
    b0.load_state_dict(fresh.state_dict())  # round trip before the first step
    assert b0.state_dict() == fresh.state_dict()

    losses = [(2.3, 2.1), (1.9, 2.05), (1.5, 2.0), (1.2, 1.95), (1.0, 1.9), (0.9, 1.8)]
    a = LossBalance(lr=0.1)
    for ln, la in losses[:3]:
        a.step(ln, la)
    b = LossBalance()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for ln, la in losses[3:]:
        assert a.step(ln, la) == b.step(ln, la)
    assert a.state_dict() == b.state_dict()
    assert (b.ref_nat, b.ref_adv) == (2.3, 2.1)


@pytest.mark.parametrize("first", [(0.0, 1.0), (1.0, -1.0), (math.nan, 1.0), (1.0, math.inf)])
def test_loss_balance_rejects_bad_reference(first: tuple[float, float]) -> None:
    lb = LossBalance()
    with pytest.raises(ValueError, match="reference"):
        lb.step(*first)
    assert lb.ref_nat is None and lb.w_nat == 0.5


@pytest.mark.parametrize("later", [(math.nan, 1.0), (1.0, math.inf), (-0.1, 1.0), (0.0, 0.0)])
def test_loss_balance_rejects_bad_later_losses(later: tuple[float, float]) -> None:
    lb = LossBalance()
    lb.step(1.0, 1.0)
    with pytest.raises(ValueError, match="Normalization Loss Balance"):
        lb.step(*later)
    assert lb.w_nat == 0.5


def test_loss_balance_accepts_tensors() -> None:
    lb = LossBalance()
    assert lb.step(torch.tensor(2.0), torch.tensor(1.0)) == (0.5, 0.5)  # type: ignore[arg-type]
    assert isinstance(lb.ref_nat, float)

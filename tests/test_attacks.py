"""Attack invariants on tiny models, plus closed-form answers on a linear model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtard.attacks import cw_inf, cw_margin, fgsm, pgd

EPS = 8 / 255
STEP = 2 / 255


def _tiny_net() -> nn.Module:
    """Conv + BatchNorm (so train/eval differ) on 1×8×8 inputs, 3 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )


def _task(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Label = the brightest of three horizontal bands (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.6 + 0.2
    y = torch.randint(0, 3, (n,), generator=g)
    for c in range(3):
        rows = slice(c * 3, c * 3 + 2)
        x[y == c, :, rows, :] += 0.15
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = _tiny_net()
    x, y = _task(256, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    xt, yt = _task(64, seed=1)
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() > 0.8  # the model means something
    return model, xt, yt


def _ce(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def _check_box(x_adv: Tensor, x: Tensor, eps: float) -> None:
    assert not x_adv.requires_grad
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


ATTACKS: dict[str, Callable[[nn.Module, Tensor, Tensor], Tensor]] = {
    "pgd-uniform": lambda m, x, y: pgd(m, x, y, eps=EPS, step_size=STEP, steps=5),
    "pgd-gaussian": lambda m, x, y: pgd(m, x, y, eps=EPS, step_size=STEP, steps=5, start="gaussian"),
    "pgd-zero": lambda m, x, y: pgd(m, x, y, eps=EPS, step_size=STEP, steps=5, start="zero"),
    "pgd-uniform-unclamped": lambda m, x, y: pgd(m, x, y, eps=EPS, step_size=STEP, steps=5, start="uniform_unclamped"),
    "pgd-kl": lambda m, x, y: pgd(
        m, x, y, eps=EPS, step_size=STEP, steps=5, loss="kl", target_logits=torch.zeros(len(x), 3)
    ),
    "pgd-train-mode": lambda m, x, y: pgd(m, x, y, eps=EPS, step_size=STEP, steps=3, train_mode=True),
    "fgsm": lambda m, x, y: fgsm(m, x, y, eps=EPS),
    "fgsm-random-start": lambda m, x, y: fgsm(m, x, y, eps=EPS, random_start=True),
    "cw": lambda m, x, y: cw_inf(m, x, y, eps=EPS, step_size=STEP, steps=5),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_stays_in_eps_ball_and_image_range(name: str, trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    # Include saturated pixels so the [0, 1] clamp actually binds.
    x = x.clone()
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0
    _check_box(ATTACKS[name](model, x, y), x, EPS)


@pytest.mark.parametrize("name", ["pgd-uniform", "pgd-gaussian", "pgd-zero", "fgsm"])
def test_ce_attacks_raise_the_loss(name: str, trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    torch.manual_seed(0)
    clean = _ce(model, x, y)
    assert _ce(model, ATTACKS[name](model, x, y), y) > clean + 0.05


def test_pgd_stronger_with_more_steps(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    one = _ce(model, pgd(model, x, y, eps=EPS, step_size=STEP, steps=1, start="zero"), y)
    ten = _ce(model, pgd(model, x, y, eps=EPS, step_size=STEP, steps=10, start="zero"), y)
    assert ten > one


def test_cw_lowers_the_margin(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    torch.manual_seed(0)
    x_adv = cw_inf(model, x, y, eps=EPS, step_size=STEP, steps=10)
    with torch.no_grad():
        clean, adv = cw_margin(model(x), y), cw_margin(model(x_adv), y)
    assert adv.mean() < clean.mean() - 0.1
    assert (adv <= clean + 1e-4).float().mean() > 0.9


def test_cw_margin_known_answer() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, -1.0, 4.5]])
    # Row 0, y=1: 3 − max(1, 2) = 1.  Row 1, y=1: −1 − max(5, 4.5) = −6.
    torch.testing.assert_close(cw_margin(logits, torch.tensor([1, 1])), torch.tensor([1.0, -6.0]))


def test_kl_attack_raises_kl_and_needs_target(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    with torch.no_grad():
        target = model(x)
    torch.manual_seed(0)
    # TRADES-style: KL to the model's own clean prediction, from the 0.001·N start.
    x_adv = pgd(model, x, y, eps=EPS, step_size=STEP, steps=5, start="gaussian", loss="kl", target_logits=target)
    with torch.no_grad():
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(target, 1), reduction="sum").item()
    assert kl > 0.1
    with pytest.raises(ValueError, match="target_logits"):
        pgd(model, x, y, eps=EPS, step_size=STEP, steps=1, loss="kl")
    with pytest.raises(ValueError, match="shape"):
        pgd(model, x, y, eps=EPS, step_size=STEP, steps=1, loss="kl", target_logits=target[:, :2])


@pytest.mark.parametrize("kwargs", [{"start": "normal"}, {"loss": "mse"}, {"eps": -0.1}, {"steps": -1}])
def test_invalid_arguments_raise(kwargs: dict[str, object]) -> None:
    model = _tiny_net()
    args: dict[str, object] = {"eps": EPS, "step_size": STEP, "steps": 1, **kwargs}
    with pytest.raises(ValueError):
        pgd(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("initially_training", [True, False])
def test_mode_grads_and_requires_grad_untouched(name: str, initially_training: bool) -> None:
    torch.manual_seed(0)
    model = _tiny_net()
    model.train(initially_training)
    model[1].eval()  # a frozen BN inside a training model must stay frozen
    model[0].bias.requires_grad_(False)  # a frozen parameter must stay frozen
    before_modes = [m.training for m in model.modules()]
    before_req = [p.requires_grad for p in model.parameters()]
    x, y = _task(8, seed=2)
    ATTACKS[name](model, x, y)
    assert [m.training for m in model.modules()] == before_modes
    assert [p.requires_grad for p in model.parameters()] == before_req
    assert all(p.grad is None for p in model.parameters())


class _Probe(nn.Module):
    """Records the mode it was called in; optionally raises mid-attack."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.fail = fail
        self.seen: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(self.training)
        if self.fail:
            raise RuntimeError("boom")
        return self.lin(x)


def test_attack_mode_eval_by_default_train_on_request() -> None:
    x, y = torch.rand(3, 4), torch.tensor([0, 1, 0])
    probe = _Probe().train()
    pgd(probe, x, y, eps=0.1, step_size=0.05, steps=2)
    fgsm(probe, x, y, eps=0.1)
    cw_inf(probe, x, y, eps=0.1, step_size=0.05, steps=2)
    assert probe.seen == [False] * 5 and probe.training  # 2 + 1 + 2 forwards
    probe = _Probe().eval()
    pgd(probe, x, y, eps=0.1, step_size=0.05, steps=2, train_mode=True)
    assert probe.seen == [True, True] and not probe.training


def test_bn_statistics_untouched_in_eval_attack_and_updated_in_train_mode() -> None:
    torch.manual_seed(0)
    model = _tiny_net().train()
    x, y = _task(8, seed=3)
    stats = model[1].running_mean.clone()
    pgd(model, x, y, eps=EPS, step_size=STEP, steps=2)
    torch.testing.assert_close(model[1].running_mean, stats)
    pgd(model, x, y, eps=EPS, step_size=STEP, steps=2, train_mode=True)  # ARD's official behaviour
    assert not torch.equal(model[1].running_mean, stats)


@pytest.mark.parametrize("initially_training", [True, False])
def test_mode_restored_after_exception(initially_training: bool) -> None:
    probe = _Probe(fail=True).train(initially_training)
    with pytest.raises(RuntimeError, match="boom"):
        pgd(probe, torch.rand(2, 4), torch.tensor([0, 1]), eps=0.1, step_size=0.05, steps=2, train_mode=True)
    assert probe.training is initially_training and probe.lin.training is initially_training


def test_deterministic_under_seed(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    for start in ("uniform", "gaussian"):
        torch.manual_seed(123)
        a = pgd(model, x, y, eps=EPS, step_size=STEP, steps=3, start=start)  # type: ignore[arg-type]
        torch.manual_seed(123)
        b = pgd(model, x, y, eps=EPS, step_size=STEP, steps=3, start=start)  # type: ignore[arg-type]
        assert torch.equal(a, b)
    torch.manual_seed(7)
    a = cw_inf(model, x, y, eps=EPS, step_size=STEP, steps=3)
    torch.manual_seed(7)
    assert torch.equal(a, cw_inf(model, x, y, eps=EPS, step_size=STEP, steps=3))


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: pgd(m, x, y, eps=0.0, step_size=STEP, steps=5),
        lambda m, x, y: pgd(m, x, y, eps=EPS, step_size=STEP, steps=0),
        lambda m, x, y: fgsm(m, x, y, eps=0.0),
        lambda m, x, y: cw_inf(m, x, y, eps=EPS, step_size=STEP, steps=0),
    ],
)
def test_zero_budget_returns_a_copy_of_x(call: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> None:
    x, y = _task(4, seed=4)
    x.requires_grad_(True)
    out = call(_tiny_net(), x, y)
    assert torch.equal(out, x) and not out.requires_grad
    assert out.data_ptr() != x.data_ptr()


def test_works_inside_no_grad_and_autocast(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    with torch.no_grad():
        x_adv = pgd(model, x, y, eps=EPS, step_size=STEP, steps=2)
    _check_box(x_adv, x, EPS)
    assert _ce(model, x_adv, y) > _ce(model, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(model, x, y, eps=EPS, step_size=STEP, steps=2)
    _check_box(x_adv, x, EPS)
    assert x_adv.dtype == torch.float32


# ----------------------------------------------------- closed form: linear model


def _linear_two_class(w: Tensor) -> nn.Module:
    """logits = (w·x, 0): CE with y=0 has gradient −σ(−w·x)·w, so sign(grad) = −sign(w)."""
    lin = nn.Linear(w.numel(), 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = w
    return lin


def test_fgsm_known_answer_on_linear_model() -> None:
    w = torch.tensor([1.0, -2.0, 0.5, -0.1])
    x = torch.tensor([[0.5, 0.5, 0.02, 0.99]])
    # x_adv = clamp(x − 0.05·sign(w), 0, 1) = [0.45, 0.55, max(−0.03, 0), min(1.04, 1)]
    x_adv = fgsm(_linear_two_class(w), x, torch.tensor([0]), eps=0.05)
    torch.testing.assert_close(x_adv, torch.tensor([[0.45, 0.55, 0.0, 1.0]]))


def test_fgsm_random_start_known_answer_on_linear_model() -> None:
    """FAT/DAT's FGSM: start at clamp(x + U(−ε, ε)), one step of ε along sign(grad), project, clamp."""
    w = torch.tensor([1.0, -2.0, 0.5, -0.1, 0.3, -0.7])
    x = torch.tensor([[0.5, 0.5, 0.02, 0.99, 0.3, 0.6]])
    eps, model = 0.05, _linear_two_class(w)
    torch.manual_seed(1)
    u = torch.empty_like(x).uniform_(-eps, eps)  # the draw the attack makes from the same seed
    start = (x + u).clamp(0, 1)
    # The CE gradient of this model has sign −sign(w) at every point (see _linear_two_class).
    expected = torch.clamp(torch.min(torch.max(start - eps * w.sign(), x - eps), x + eps), 0, 1)
    torch.manual_seed(1)
    x_adv = fgsm(model, x, torch.tensor([0]), eps=eps, random_start=True)
    torch.testing.assert_close(x_adv, expected)
    assert not torch.equal(x_adv, fgsm(model, x, torch.tensor([0]), eps=eps))


def test_pgd_and_cw_reach_the_corner_on_linear_model() -> None:
    w = torch.tensor([1.0, -2.0, 0.5, -0.1])
    x = torch.tensor([[0.5, 0.2, 0.5, 0.5]])
    model, y = _linear_two_class(w), torch.tensor([0])
    # Clean margin z_0 − z_1 = w·x = 0.5 − 0.4 + 0.25 − 0.05 = 0.3 (correct).
    # Every CE/CW step pushes along −sign(w), so enough steps reach the corner
    # x − 0.2·sign(w) = [0.3, 0.4, 0.3, 0.7], margin 0.3 − 0.8 + 0.15 − 0.07 = −0.42.
    corner = torch.tensor([[0.3, 0.4, 0.3, 0.7]])
    torch.manual_seed(0)
    torch.testing.assert_close(pgd(model, x, y, eps=0.2, step_size=0.05, steps=10), corner)
    # CW with κ = 50: −max(margin + 50, 0) never saturates here, so the same corner.
    torch.testing.assert_close(cw_inf(model, x, y, eps=0.2, step_size=0.05, steps=10), corner)
    # With κ = 0 the loss −max(margin, 0) has zero gradient once misclassified: the
    # attack stops as soon as the margin drops to ≤ 0, before reaching the corner.
    x_cw = cw_inf(model, x, y, eps=0.2, step_size=0.05, steps=10, confidence=0.0)
    margin = (x_cw @ w).item()
    assert -0.42 + 1e-3 < margin <= 0.0


def test_ard_start_is_not_clamped_before_the_first_step() -> None:
    """ARD's official start x + U(−ε, ε) leaves [0, 1] at saturated pixels; Madry's is clamped."""
    seen = []

    class Probe(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            seen.append((x.detach().min().item(), x.detach().max().item()))
            return x.flatten(1)[:, :2] * 1.0

    x = torch.tensor([[[[0.0, 1.0] * 8] * 4]]).repeat(4, 1, 1, 1)  # pixels at both box edges
    y = torch.zeros(4, dtype=torch.long)
    for start, inside in (("uniform_unclamped", False), ("uniform", True)):
        seen.clear()
        torch.manual_seed(0)
        x_adv = pgd(Probe(), x, y, eps=0.1, step_size=0.05, steps=1, start=start)
        low, high = seen[0]  # what the first forward saw
        assert (0.0 <= low and high <= 1.0) is inside, start
        _check_box(x_adv, x, 0.1)  # the result is in the box either way

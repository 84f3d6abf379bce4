"""Training methods: a known-answer MTARD step, and every method's step on tiny models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtard.config import TrainConfig, set_path
from mtard.methods import MTARD, NEEDS_TEACHERS, OFFICIAL_START, build_method
from mtard.models import build_model
from mtard.teachers import FrozenTeacher

EPS, STEP, STEPS = 0.1, 0.05, 2

# ARD's official KLDivLoss() uses reduction="mean" on purpose; torch warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")


def make_config(method: str, **sets) -> TrainConfig:
    cfg = TrainConfig()
    cfg.method.name = method
    cfg.teachers.clean, cfg.teachers.robust = "clean", "robust"
    cfg.attack.eps, cfg.attack.step_size, cfg.attack.steps = EPS, STEP, STEPS
    for path, value in sets.items():
        set_path(cfg, path.replace("__", "."), value)
    return cfg


def linear(weight: list[list[float]], bias: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


# ---------------------------------------------------------------- MTARD known answer

# 4 features, 3 classes. The clean teacher is sharp (large weights, low entropy), the
# robust teacher flat (small weights, high entropy), so the entropy rule must cool the
# robust teacher (τ_adv down) and heat the clean one (τ_nat up).
W_STUDENT = [[0.5, -0.3, 0.2, 0.1], [-0.2, 0.4, 0.1, -0.5], [0.3, 0.1, -0.4, 0.2]]
W_NAT = [[6.0, -4.0, 2.0, 1.0], [-3.0, 5.0, 1.0, -4.0], [2.0, 1.0, -5.0, 3.0]]
W_ADV = [[0.3, -0.2, 0.1, 0.0], [-0.1, 0.2, 0.0, -0.2], [0.1, 0.0, -0.2, 0.1]]


def tiny_setup(**sets):
    student = linear(W_STUDENT, [0.1, 0.0, -0.1])
    teachers = {"clean": FrozenTeacher(linear(W_NAT, [0.0, 0.5, 0.0])), "robust": FrozenTeacher(linear(W_ADV, [0.0, 0.0, 0.1]))}
    cfg = make_config("mtard", **sets)
    return cfg, student, teachers


def batch():
    g = torch.Generator().manual_seed(123)
    return torch.rand(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


def hand_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """The reference's inner maximisation, written out: x + 0.001·N, sign-CE steps, project, clamp."""
    torch.manual_seed(seed)
    x_adv = x + 0.001 * torch.randn_like(x)
    for _ in range(STEPS):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + STEP * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS).clamp(0, 1)
    return x_adv.detach()


def hand_kl(teacher_logits: torch.Tensor, tau: float, student_logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(teacher_logits / tau, 1)
    return (p * (torch.log(p + 1e-5) - torch.log_softmax(student_logits, 1))).mean()


def hand_h(teacher_logits: torch.Tensor, tau: float) -> float:
    p = torch.softmax(teacher_logits / tau, 1)
    return (p * torch.log(p + 1e-5)).mean().item()


def sign(v: float) -> float:
    return float((v > 0) - (v < 0))


def test_mtard_step_known_answer() -> None:
    tau0, tau_lr, w_lr = 2.0, 0.25, 0.025
    cfg, student, teachers = tiny_setup(balance__tau_nat_init=tau0, balance__tau_adv_init=tau0, balance__tau_lr=tau_lr, balance__w_lr=w_lr)
    method = MTARD(cfg, student, teachers)
    x, y = batch()
    t_nat_fn, t_adv_fn = teachers["clean"].model, teachers["robust"].model

    # ---- step 1: τ at the init values, weights 0.5/0.5 after the first LossBalance step.
    x_adv = hand_pgd(student, x, y, seed=7)
    with torch.no_grad():
        t_adv, t_nat = t_adv_fn(x_adv), t_nat_fn(x)
        kl_adv1 = hand_kl(t_adv, tau0, student(x_adv))
        kl_nat1 = hand_kl(t_nat, tau0, student(x))
    torch.manual_seed(7)
    parts = method(x, y)
    assert parts["kl_adv"].item() == pytest.approx(kl_adv1.item(), rel=1e-5)
    assert parts["kl_nat"].item() == pytest.approx(kl_nat1.item(), rel=1e-5)
    assert (parts["w_adv"], parts["w_nat"]) == (0.5, 0.5)
    assert (parts["tau_adv"], parts["tau_nat"]) == (tau0, tau0)  # the τ this step used
    assert parts["loss"].item() == pytest.approx(0.5 * kl_adv1.item() + 0.5 * kl_nat1.item(), rel=1e-5)

    # τ moved by exactly ±tau_lr, in the direction of the reference rule.
    h_adv, h_nat = hand_h(t_adv, tau0), hand_h(t_nat, tau0)
    assert h_adv / h_nat > 1  # the setup: the robust teacher is the more spread out one
    assert method.entropy.tau_adv == tau0 - tau_lr * sign(h_adv / h_nat - 1) == tau0 - tau_lr
    assert method.entropy.tau_nat == tau0 - tau_lr * sign(h_nat / h_adv - 1) == tau0 + tau_lr

    # ---- step 2: the new τ, and the loss-balance rule with the step-1 references.
    tau_adv2, tau_nat2 = tau0 - tau_lr, tau0 + tau_lr
    x_adv = hand_pgd(student, x, y, seed=8)
    with torch.no_grad():
        kl_adv2 = hand_kl(t_adv_fn(x_adv), tau_adv2, student(x_adv)).item()
        kl_nat2 = hand_kl(t_nat_fn(x), tau_nat2, student(x)).item()
    r_nat, r_adv = kl_nat2 / kl_nat1.item(), kl_adv2 / kl_adv1.item()
    w_nat2 = 0.5 - w_lr * (0.5 - r_nat / (r_nat + r_adv))
    torch.manual_seed(8)
    parts = method(x, y)
    assert (parts["tau_adv"], parts["tau_nat"]) == (tau_adv2, tau_nat2)
    assert parts["kl_adv"].item() == pytest.approx(kl_adv2, rel=1e-5)
    assert parts["kl_nat"].item() == pytest.approx(kl_nat2, rel=1e-5)
    assert abs(w_nat2 - 0.5) > 1e-4  # the weights really moved
    assert parts["w_nat"] == pytest.approx(w_nat2, rel=1e-6)
    assert parts["w_adv"] == pytest.approx(1 - w_nat2, rel=1e-6)
    assert parts["loss"].item() == pytest.approx((1 - w_nat2) * kl_adv2 + w_nat2 * kl_nat2, rel=1e-5)


def test_mtard_loss_gradient_matches_hand_loss() -> None:
    cfg, student, teachers = tiny_setup()
    method = MTARD(cfg, student, teachers)
    x, y = batch()
    torch.manual_seed(3)
    parts = method(x, y)
    parts["loss"].backward()
    got = student.weight.grad.clone()

    ref = linear(W_STUDENT, [0.1, 0.0, -0.1])
    x_adv = hand_pgd(ref, x, y, seed=3)
    with torch.no_grad():
        t_adv, t_nat = teachers["robust"](x_adv), teachers["clean"](x)
    loss = 0.5 * hand_kl(t_adv, 1.0, ref(x_adv)) + 0.5 * hand_kl(t_nat, 1.0, ref(x))
    loss.backward()
    torch.testing.assert_close(got, ref.weight.grad, rtol=1e-5, atol=1e-7)


def test_mtard_kl_scale_multiplies_both_terms() -> None:
    x, y = batch()
    out = {}
    for scale in (1.0, 10.0):
        cfg, student, teachers = tiny_setup(method__kl_scale=scale)
        torch.manual_seed(0)
        out[scale] = MTARD(cfg, student, teachers)(x, y)
    for key in ("kl_adv", "kl_nat", "loss"):
        assert out[10.0][key].item() == pytest.approx(10 * out[1.0][key].item(), rel=1e-5)


def test_eccv_mtard_keeps_tau_fixed() -> None:
    cfg, student, teachers = tiny_setup(balance__learn_temperature=False, balance__tau_adv_init=2.0, balance__tau_nat_init=3.0, balance__tau_lr=0.5)
    method = MTARD(cfg, student, teachers)
    x, y = batch()
    for _ in range(3):
        parts = method(x, y)
        assert (parts["tau_adv"], parts["tau_nat"]) == (2.0, 3.0)
    assert (method.entropy.tau_adv, method.entropy.tau_nat) == (2.0, 3.0)
    # ...while the learned version moves it under the same settings.
    cfg.balance.learn_temperature = True
    method = MTARD(cfg, student, teachers)
    method(x, y)
    assert (method.entropy.tau_adv, method.entropy.tau_nat) != (2.0, 3.0)


def test_mtard_consumes_the_reduced_statistics() -> None:
    # A distributed run averages the statistics through reduce_mean; the controllers must use
    # what comes back. Swapping the two entropies reverses the direction τ moves in.
    x, y = batch()
    moved = {}
    for name, reduce in (("identity", lambda t: t), ("swapped", lambda t: t.flip(0))):
        cfg, student, teachers = tiny_setup(balance__tau_nat_init=2.0, balance__tau_adv_init=2.0, balance__tau_lr=0.25)
        method = MTARD(cfg, student, teachers, reduce_mean=reduce)
        torch.manual_seed(0)
        method(x, y)
        moved[name] = (method.entropy.tau_adv, method.entropy.tau_nat)
    assert moved["identity"] == (1.75, 2.25)
    assert moved["swapped"] == (2.25, 1.75)


@pytest.mark.parametrize("decay", [True, False])
def test_on_milestone_scales_the_balance_lrs(decay: bool) -> None:
    cfg, student, teachers = tiny_setup(balance__decay_with_lr=decay, balance__tau_lr=0.001, balance__w_lr=0.025)
    method = MTARD(cfg, student, teachers)
    method.on_milestone(0.1)
    factor = 0.1 if decay else 1.0
    assert method.entropy.lr == pytest.approx(0.001 * factor, rel=1e-12)
    assert method.weights.lr == pytest.approx(0.025 * factor, rel=1e-12)


def test_mtard_state_dict_round_trip() -> None:
    cfg, student, teachers = tiny_setup(balance__tau_nat_init=2.0, balance__tau_adv_init=2.0, balance__tau_lr=0.25)
    method = MTARD(cfg, student, teachers)
    x, y = batch()
    method(x, y)
    method(x, y)
    state = method.state_dict()
    fresh = MTARD(cfg, student, teachers)
    assert fresh.state_dict() != state
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert state["weights"]["ref_nat"] is not None  # the first-step references are part of the state
    torch.manual_seed(5)
    a = method(x, y)
    torch.manual_seed(5)
    b = fresh(x, y)
    assert a["loss"].item() == b["loss"].item() and a["w_nat"] == b["w_nat"]


# ---------------------------------------------------------------- every method on tiny models


def digits_net(arch: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, num_classes=10, in_channels=1, image_size=8)


CASES = [
    ("natural", {}),
    ("sat", {}),
    ("trades", {}),
    ("ard", {}),
    ("ard", {"method__ard_alpha": 0.5}),
    ("rslad", {}),
    ("mtard", {}),
    ("mtard", {"balance__learn_temperature": False}),
]


@pytest.mark.parametrize("arch", ["mlp", "small_cnn"])
@pytest.mark.parametrize("method_name, sets", CASES, ids=[f"{m}{'-' + '-'.join(s) if s else ''}" for m, s in CASES])
def test_method_step_on_tiny_models(method_name: str, sets: dict, arch: str) -> None:
    cfg = make_config(method_name, **sets)
    student = digits_net(arch, 0)
    teachers = {role: FrozenTeacher(digits_net("mlp", i + 1)) for i, role in enumerate(NEEDS_TEACHERS[method_name])}
    teacher_before = {role: {k: v.clone() for k, v in t.state_dict().items()} for role, t in teachers.items()}
    method = build_method(cfg, student, teachers)
    student.train()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)

    parts = method(x, y)
    assert student.training, "the attack must give the student back in train mode"
    assert all(p.grad is None for p in student.parameters()), "the attack leaked gradients into the student"
    loss = parts["loss"]
    assert loss.dim() == 0 and math.isfinite(loss.item()) and loss.requires_grad
    for key, value in parts.items():
        if key != "loss":
            assert not (isinstance(value, torch.Tensor) and value.requires_grad), f"{key} must be detached"
            assert math.isfinite(float(value)), key
    loss.backward()
    for name, p in student.named_parameters():
        assert p.grad is not None, f"no gradient for student parameter {name}"
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in student.parameters())
    for role, teacher in teachers.items():
        assert not teacher.training and not teacher.model.training
        for name, p in teacher.named_parameters():
            assert not p.requires_grad and p.grad is None, f"gradient reached teacher {role} parameter {name}"
        for k, v in teacher.state_dict().items():
            assert torch.equal(v, teacher_before[role][k]), f"teacher {role} buffer {k} changed"

    if method_name == "mtard":
        assert {"kl_adv", "kl_nat", "w_adv", "w_nat", "tau_adv", "tau_nat"} <= set(parts)
        assert parts["w_adv"] + parts["w_nat"] == pytest.approx(1.0, abs=1e-12)
        if not cfg.balance.learn_temperature:
            for _ in range(2):
                parts = method(x, y)
            assert (parts["tau_adv"], parts["tau_nat"]) == (1.0, 1.0)
            assert (method.entropy.tau_adv, method.entropy.tau_nat) == (1.0, 1.0)
    if method_name == "ard":
        assert "ce_nat" in parts
    if method_name == "trades":
        assert {"ce_nat", "kl_rob"} <= set(parts)


def test_official_attack_starts() -> None:
    student = digits_net("mlp", 0)
    for name in ("natural", "sat", "trades", "ard", "rslad", "mtard"):
        teachers = {role: FrozenTeacher(digits_net("mlp", 1)) for role in NEEDS_TEACHERS[name]}
        m = build_method(make_config(name), student, teachers)
        assert m.attack_kwargs == {"eps": EPS, "step_size": STEP, "steps": STEPS, "start": OFFICIAL_START.get(name, "uniform"),
                                   "train_mode": name == "ard"}
    assert OFFICIAL_START["mtard"] == "gaussian" and OFFICIAL_START["sat"] == "uniform"
    assert OFFICIAL_START["ard"] == "uniform_unclamped"  # ARD's official start skips the [0, 1] clamp
    m = build_method(make_config("mtard", attack__start="zero"), student, {r: FrozenTeacher(digits_net("mlp", 1)) for r in ("clean", "robust")})
    assert m.attack_kwargs["start"] == "zero"
    sat = build_method(make_config("sat", attack__bn_mode="train"), student, {})  # Madry's SAT
    ard = build_method(make_config("ard", attack__bn_mode="eval"), student, {"robust": FrozenTeacher(digits_net("mlp", 1))})
    assert sat.attack_kwargs["train_mode"] is True and ard.attack_kwargs["train_mode"] is False


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_ard_runs_the_clean_forward_at_every_alpha(alpha: float) -> None:
    """Official ARD: attack forwards (train mode), then S(x_adv), then S(x) — also at α = 1."""
    cfg = make_config("ard", method__ard_alpha=alpha)
    student = digits_net("small_cnn", 0)
    method = build_method(cfg, student, {"robust": FrozenTeacher(digits_net("mlp", 1))})
    student.train()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    counters = [m for m in student.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert counters
    method(x, y)
    # STEPS attack forwards + the adversarial forward + the clean forward, each in train mode.
    assert all(int(m.num_batches_tracked) == STEPS + 2 for m in counters)

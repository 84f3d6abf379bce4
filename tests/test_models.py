"""Model registry: shapes, gradients, parameter counts and checkpoint layouts."""

import pytest
import torch
from torch.nn import functional as F

from mtard.errors import MtardError
from mtard.models import build_model, model_names

ALL_MODELS = model_names()


def _trainable_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_registry_names() -> None:
    assert ALL_MODELS == [
        "dm_wrn22_6",
        "dm_wrn22_6_c10stats",
        "mlp",
        "mobilenet_v2",
        "resnet18",
        "resnet56",
        "small_cnn",
        "wrn16_2",
        "wrn22_6",
        "wrn28_10",
        "wrn34_10",
    ]


@pytest.mark.parametrize("arch", ALL_MODELS)
def test_forward_digits_shape(arch: str) -> None:
    model = build_model(arch, num_classes=10, in_channels=1, image_size=8).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, 8, 8))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ALL_MODELS)
def test_forward_cifar100_shape(arch: str) -> None:
    model = build_model(arch, num_classes=100, in_channels=3, image_size=32).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["mlp", "small_cnn", "resnet56", "mobilenet_v2", "wrn16_2"])
def test_backward_reaches_every_trainable_parameter(arch: str) -> None:
    model = build_model(arch, num_classes=10, in_channels=1, image_size=8).train()
    F.cross_entropy(model(torch.rand(4, 1, 8, 8)), torch.arange(4)).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_trades_unused_sub_block_is_frozen() -> None:
    """TRADES' `sub_block1` never runs; frozen, DDP and SGD skip it instead of failing."""
    model = build_model("wrn16_2", num_classes=10)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("sub_block1.") for n in frozen)


# Published sizes at 10 classes: kuangliu/RSLAD ResNet-18 11.17M, ResNet-56 0.85M (He et al.),
# CIFAR MobileNetV2 2.30M, WRN-34-10 46.16M and WRN-28-10 36.5M (TRADES' unused sub_block1
# excluded, as it is from every published figure).
@pytest.mark.parametrize(
    ("arch", "published"),
    [
        ("resnet18", 11.17e6),
        ("resnet56", 0.85e6),
        ("mobilenet_v2", 2.30e6),
        ("wrn34_10", 46.16e6),
        ("wrn28_10", 36.5e6),
    ],
)
def test_parameter_count_matches_published(arch: str, published: float) -> None:
    count = _trainable_count(build_model(arch, num_classes=10))
    assert count == pytest.approx(published, rel=0.02)


def _trades_wrn_keys(blocks_per_stage: int) -> set[str]:
    """The state-dict keys of TRADES' `models/wideresnet.py`, spelled out from its layout."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{s}" for s in bn}
    for stage in ("block1", "sub_block1", "block2", "block3"):
        for i in range(blocks_per_stage):
            prefix = f"{stage}.layer.{i}"
            keys |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
            keys |= {f"{prefix}.{norm}.{s}" for norm in ("bn1", "bn2") for s in bn}
        keys.add(f"{stage}.layer.0.convShortcut.weight")
    return keys


def test_wrn34_10_state_dict_matches_trades_layout() -> None:
    state = build_model("wrn34_10", num_classes=10).state_dict()
    for key in (
        "conv1.weight",
        "block1.layer.0.convShortcut.weight",
        "block1.layer.4.bn2.running_var",
        "sub_block1.layer.0.conv1.weight",
        "sub_block1.layer.4.conv2.weight",
        "block2.layer.0.convShortcut.weight",
        "block3.layer.4.conv2.weight",
        "bn1.running_mean",
        "fc.weight",
        "fc.bias",
    ):
        assert key in state
    assert "block1.layer.1.convShortcut.weight" not in state
    assert "block1.layer.5.conv1.weight" not in state
    assert set(state) == _trades_wrn_keys(blocks_per_stage=5)
    assert state["block1.layer.0.convShortcut.weight"].shape == (160, 16, 1, 1)
    assert state["sub_block1.layer.0.convShortcut.weight"].shape == (160, 16, 1, 1)
    assert state["block3.layer.0.conv1.weight"].shape == (640, 320, 3, 3)
    assert state["fc.weight"].shape == (10, 640)


def test_wrn_loads_a_trades_layout_state_dict_strictly() -> None:
    source = build_model("wrn16_2", num_classes=10)
    target = build_model("wrn16_2", num_classes=10)
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


def test_wrn_block_wiring_matches_trades() -> None:
    """Where channels change, TRADES feeds relu(bn1(x)) to both conv1 and convShortcut."""
    block = build_model("wrn16_2", num_classes=10).block2.layer[0].eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        activated = F.relu(block.bn1(x))
        inner = block.conv2(F.relu(block.bn2(block.conv1(activated))))
        assert torch.allclose(block(x), block.convShortcut(activated) + inner)


def test_resnet_checkpoint_layouts() -> None:
    """ResNet-18 keeps RSLAD's names, ResNet-56 chenyaofo's (MTARD's clean teacher)."""
    r18 = build_model("resnet18", num_classes=10).state_dict()
    assert {"layer2.0.shortcut.0.weight", "layer4.1.bn2.running_mean", "linear.weight"} <= set(r18)
    assert "layer1.0.shortcut.0.weight" not in r18
    r56 = build_model("resnet56", num_classes=10).state_dict()
    assert {"layer2.0.downsample.0.weight", "layer3.8.conv2.weight", "fc.weight"} <= set(r56)
    assert "layer1.0.downsample.0.weight" not in r56


def test_mobilenet_v2_cifar_strides() -> None:
    """Only three stride-2 stages (8× downsampling): a 32×32 input ends at 4×4."""
    model = build_model("mobilenet_v2", num_classes=10).eval()
    with torch.no_grad():
        features = model.layers(model.bn1(model.conv1(torch.rand(1, 3, 32, 32))))
    assert features.shape == (1, 320, 4, 4)


def test_mlp_size_follows_image() -> None:
    model = build_model("mlp", num_classes=10, in_channels=3, image_size=32)
    assert model.net[1].in_features == 3 * 32 * 32


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(MtardError, match="resnet99") as info:
        build_model("resnet99", num_classes=10)
    for name in ALL_MODELS:
        assert name in str(info.value)


def test_non_positive_size_is_a_user_error() -> None:
    with pytest.raises(MtardError, match="num_classes"):
        build_model("small_cnn", num_classes=0)


# State-dict entries and their total element count (buffers included) of the published
# networks at 10 classes, counted from the official code: kuangliu's ResNet-18 and
# MobileNetV2, chenyaofo's ResNet-56, TRADES' WRN-34-10 (with its unused sub_block1).
@pytest.mark.parametrize(
    ("arch", "entries", "elements"),
    [
        ("resnet18", 122, 11_183_582),
        ("resnet56", 344, 860_083),
        ("mobilenet_v2", 344, 2_332_067),
        ("wrn34_10", 252, 48_287_971),
    ],
)
def test_state_dict_size_matches_official_layout(arch: str, entries: int, elements: int) -> None:
    state = build_model(arch, num_classes=10).state_dict()
    assert (len(state), sum(v.numel() for v in state.values())) == (entries, elements)


# Plain, out-of-place forwards spelled out from the published code. The models compute the
# same thing with in-place residual adds and ReLUs (for speed); these pin the function.
def _resnet_reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(model.bn1(model.conv1(x)))
    stages = [getattr(model, f"layer{i}") for i in (1, 2, 3, 4) if hasattr(model, f"layer{i}")]
    for stage in stages:
        for block in stage:
            shortcut = getattr(block, "shortcut", None) or getattr(block, "downsample", None)
            inner = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(out)))))
            out = F.relu(inner + (out if shortcut is None else shortcut(out)))
    head = model.linear if hasattr(model, "linear") else model.fc
    return head(out.mean(dim=(2, 3)))


def _mobilenet_reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(model.bn1(model.conv1(x)))
    for block in model.layers:
        inner = F.relu(block.bn1(block.conv1(out)))
        inner = block.bn3(block.conv3(F.relu(block.bn2(block.conv2(inner)))))
        out = inner if block.shortcut is None else inner + block.shortcut(out)
    out = F.relu(model.bn2(model.conv2(out)))
    return model.linear(out.mean(dim=(2, 3)))


def _wrn_reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model.conv1(x)
    for stage in (model.block1, model.block2, model.block3):
        for block in stage.layer:
            activated = F.relu(block.bn1(out))
            inner = block.conv2(F.relu(block.bn2(block.conv1(activated))))
            out = torch.add(out if block.convShortcut is None else block.convShortcut(activated), inner)
    return model.fc(F.relu(model.bn1(out)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("arch", "reference"),
    [
        ("resnet18", _resnet_reference),
        ("resnet56", _resnet_reference),
        ("mobilenet_v2", _mobilenet_reference),
        ("wrn16_2", _wrn_reference),
    ],
)
@pytest.mark.parametrize("train", [False, True])
def test_in_place_forward_computes_the_published_function(arch, reference, train: bool) -> None:
    """Logits, input gradients (what attacks use), weight gradients and BN statistics match
    the plain forward to float rounding, in both modes; autograd raises if an in-place write
    ever clobbers a tensor that backward needs."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=3, image_size=8).train(train)
    twin = build_model(arch, num_classes=10, in_channels=3, image_size=8).train(train)
    twin.load_state_dict(model.state_dict())
    x = torch.rand(4, 3, 8, 8)
    y = torch.arange(4)

    def run(forward):
        xg = x.clone().requires_grad_(True)
        logits = forward(xg)
        F.cross_entropy(logits, y).backward()
        return logits.detach(), xg.grad

    logits, x_grad = run(model)
    ref_logits, ref_x_grad = run(lambda v: reference(twin, v))
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(x_grad, ref_x_grad)
    ref_params = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        if p.grad is not None or ref_params[name].grad is not None:
            torch.testing.assert_close(p.grad, ref_params[name].grad, msg=name)
    torch.testing.assert_close(model.state_dict(), twin.state_dict())

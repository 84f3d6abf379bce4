"""WideResNet in the TRADES checkpoint layout: the robust teachers (WRN-34-10 on CIFAR-10).

The robust teacher everyone uses is the WRN-34-10 checkpoint TRADES released (and RSLAD /
MTARD redistribute). Module names, block semantics and even an unused module match the
TRADES `models/wideresnet.py`, so `load_state_dict(strict=True)` on that checkpoint works
and gives the same function:

* `conv1`, `block1`/`block2`/`block3` (each a `layer` Sequential of pre-activation blocks
  with `bn1, relu1, conv1, bn2, relu2, conv2` and `convShortcut` where channels change),
  the final `bn1`, `relu` and `fc`.
* `sub_block1`: a copy of `block1` that TRADES builds but never calls. Its weights are in
  every checkpoint, so strict loading needs the module; we freeze it (requires_grad=False)
  so DDP and optimizers ignore it instead of reporting parameters without gradients.

The final pool averages over the whole remaining map: TRADES' `avg_pool2d(out, 8)` on a
32×32 input, bit for bit, and still one value per channel on smaller inputs. The residual
is added into conv2's output in place (a convolution never saves its output for backward),
which saves one allocation per block against TRADES' `torch.add` and gives the same sum.
"""

import torch
from torch import nn
from torch.nn import functional as F


class WideBasicBlock(nn.Module):
    """Pre-activation block BN-ReLU-conv3×3-BN-ReLU-conv3×3 with the TRADES residual rule.

    When channels change, the shortcut 1×1 conv reads the *activated* input relu(bn1(x))
    rather than x; an identity shortcut adds the raw x. Checkpoint weights were trained
    with exactly this wiring.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.convShortcut: nn.Conv2d | None = (  # noqa: N815 - checkpoint key name
            None
            if in_planes == out_planes
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        out += x if self.convShortcut is None else self.convShortcut(activated)
        return out


class WideStage(nn.Module):
    """`blocks` WideBasicBlocks under the attribute `layer` (the checkpoint's key prefix)."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-`depth`-`widen_factor`: stem conv to 16 channels, three stages of (depth-4)/6
    blocks at widths 16k/32k/64k (the last two halving the resolution), BN-ReLU, pool, fc.
    """

    def __init__(self, *, depth: int, widen_factor: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        blocks = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(blocks, widths[0], widths[1], stride=1)
        self.sub_block1 = WideStage(blocks, widths[0], widths[1], stride=1)
        self.sub_block1.requires_grad_(False)
        self.block2 = WideStage(blocks, widths[1], widths[2], stride=2)
        self.block3 = WideStage(blocks, widths[2], widths[3], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        # TRADES' initialisation: He-normal over fan-out, zero classifier bias.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.avg_pool2d(out, out.shape[-2:]).flatten(1))


def wrn34_10(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """WRN-34-10, the TRADES/RSLAD robust teacher (46.16M trainable parameters at 10 classes)."""
    del image_size
    return WideResNet(depth=34, widen_factor=10, num_classes=num_classes, in_channels=in_channels)


def wrn28_10(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """WRN-28-10 (36.5M trainable parameters), the other common robust-training backbone."""
    del image_size
    return WideResNet(depth=28, widen_factor=10, num_classes=num_classes, in_channels=in_channels)


def wrn22_6(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """WRN-22-6 in this (TRADES, ReLU) layout; the official CIFAR-100 clean teacher is the DeepMind-layout Swish one, `dm_wrn22_6`."""
    del image_size
    return WideResNet(depth=22, widen_factor=6, num_classes=num_classes, in_channels=in_channels)


def wrn16_2(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """WRN-16-2 (~0.69M parameters): a same-layout teacher cheap enough for CPU tests."""
    del image_size
    return WideResNet(depth=16, widen_factor=2, num_classes=num_classes, in_channels=in_channels)

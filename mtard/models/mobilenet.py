"""MobileNetV2, CIFAR variant: the second MTARD student.

This is the variant RSLAD / MTARD train (kuangliu's pytorch-cifar): compared with the
ImageNet network, the stem and the second bottleneck stage use stride 1, so a 32×32 image
is downsampled only 8×. Module names (`conv1`, `bn1`, `layers.N.{conv1..3, bn1..3,
shortcut}`, `conv2`, `bn2`, `linear`) match that layout so its checkpoints load strictly,
and the forward pass does the same arithmetic (logits match to the bit), but writes in
place where autograd allows: the ReLUs rectify batch-norm outputs in place and the
residual is added into bn3's output (batch norm never saves its output for backward).
The final pool averages over the whole map (kuangliu's `avg_pool2d(out, 4)` on 32×32).
"""

import torch
from torch import nn
from torch.nn import functional as F

# (expansion, out_channels, blocks, stride of the first block) per stage.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 on ImageNet; 1 keeps resolution on 32×32 inputs
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_WIDTH = 32
_HEAD_WIDTH = 1280


class InvertedResidual(nn.Module):
    """1×1 expand, 3×3 depthwise, 1×1 linear projection, each followed by BN.

    As in the CIFAR layout, every stride-1 block is residual: an identity when channels
    match, otherwise a 1×1 conv+BN projection (the ImageNet network has no residual there).
    """

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module | None = None
        if stride == 1:
            self.shortcut = (
                nn.Identity()
                if in_planes == out_planes
                else nn.Sequential(
                    nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out += self.shortcut(x)
        return out


class MobileNetV2(nn.Module):
    """Stem conv+BN+ReLU, 17 inverted residual blocks, 1×1 conv to 1280, pool, linear."""

    def __init__(self, *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, _STEM_WIDTH, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_WIDTH)
        blocks = []
        in_planes = _STEM_WIDTH
        for expansion, out_planes, count, first_stride in _STAGES:
            for position in range(count):
                stride = first_stride if position == 0 else 1
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, stride))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(in_planes, _HEAD_WIDTH, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(_HEAD_WIDTH)
        self.linear = nn.Linear(_HEAD_WIDTH, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        return self.linear(F.avg_pool2d(out, out.shape[-2:]).flatten(1))


def mobilenet_v2(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """CIFAR MobileNetV2 (~2.30M parameters at 10 classes); `image_size` is not needed."""
    del image_size
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels)

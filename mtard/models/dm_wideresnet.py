"""WideResNet in the DeepMind layout: the official CIFAR-100 teachers' family.

MTARD's CIFAR-100 teachers are Gowal et al.'s WRN-70-16 (robust; from the RobustBench zoo as
`rb:Gowal2020Uncovering`) and a clean WRN-22-6, both in the layout of DeepMind's
adversarial-robustness code (docs/algorithm.md, 'Teachers and students'). This module builds that layout
so a clean WRN-22-6 can be trained by recipe and files interchange with DeepMind/RobustBench ones:

* parameter names `init_conv`, `layer.G.block.B.{batchnorm_0, conv_0, batchnorm_1, conv_1, shortcut}`,
  `batchnorm`, `logits` (strict loading of a DeepMind/RobustBench state dict works);
* Swish activations (x·sigmoid(x), `nn.SiLU`), TensorFlow "SAME" padding for the strided 3×3
  convs (pad right/bottom only), a 1×1 projection shortcut that reads the activated input;
* input normalisation *inside* the model, so it takes images in [0, 1] like every mtard model.
  The statistics are not weights (not in the state dict): `dm_wrn22_6` uses the statistics of
  the data set it is built for (CIFAR-100's for 100 classes); `dm_wrn22_6_c10stats` reproduces
  the official code, which normalises its CIFAR-100 models with CIFAR-10 mean/std (a quirk).

Only the final 8×8 average pool is adaptive here (identical on 32×32; also serves 8×8 digits).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


class DMBlock(nn.Module):
    """Pre-activation BN-Swish-conv3×3-BN-Swish-conv3×3; a projection shortcut (when channels change) reads the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride {stride}: the DeepMind block supports 1 and 2")
        self.stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False) if in_planes != out_planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.silu(self.batchnorm_0(x))
        # "SAME" padding as TensorFlow computes it: symmetric for stride 1, right/bottom only for stride 2.
        padded = F.pad(activated, (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1))
        out = self.conv_1(F.silu(self.batchnorm_1(self.conv_0(padded))))
        return out + (self.shortcut(activated) if self.shortcut is not None else x)


class DMBlockGroup(nn.Module):
    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *(DMBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(num_blocks))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    def __init__(self, *, depth: int, width: int, num_classes: int, in_channels: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth {depth}: a WideResNet has depth 6n + 4")
        n = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        # Not persistent: DeepMind/RobustBench files carry no statistics, and the choice is the model's.
        self.register_buffer("mean", torch.tensor(mean).view(1, in_channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, in_channels, 1, 1), persistent=False)
        self.init_conv = nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False)
        self.layer = nn.Sequential(
            DMBlockGroup(n, channels[0], channels[1], 1),
            DMBlockGroup(n, channels[1], channels[2], 2),
            DMBlockGroup(n, channels[2], channels[3], 2),
        )
        self.batchnorm = nn.BatchNorm2d(channels[3])
        self.logits = nn.Linear(channels[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(self.init_conv((x - self.mean) / self.std))
        out = F.adaptive_avg_pool2d(F.silu(self.batchnorm(out)), 1).flatten(1)
        return self.logits(out)


def dataset_stats(num_classes: int, in_channels: int, *, official_cifar100_quirk: bool = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std for the data set a model is built for; RGB with 100 classes is CIFAR-100, other RGB CIFAR-10."""
    if in_channels != 3:
        return (0.0,) * in_channels, (1.0,) * in_channels  # digits: no statistics to match
    if num_classes == 100 and not official_cifar100_quirk:
        return CIFAR100_MEAN, CIFAR100_STD
    return CIFAR10_MEAN, CIFAR10_STD


def dm_wrn22_6(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """WRN-22-6, DeepMind layout, Swish: the official CIFAR-100 clean teacher's architecture (normalised with the data set's statistics)."""
    del image_size
    mean, std = dataset_stats(num_classes, in_channels)
    return DMWideResNet(depth=22, width=6, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)


def dm_wrn22_6_c10stats(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """`dm_wrn22_6` normalised with CIFAR-10 mean/std on CIFAR-100 too, exactly as the official code does."""
    del image_size
    mean, std = dataset_stats(num_classes, in_channels, official_cifar100_quirk=True)
    return DMWideResNet(depth=22, width=6, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)

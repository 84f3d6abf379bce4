"""CIFAR-style ResNets: ResNet-18 (the MTARD student) and ResNet-56 (the clean teacher).

Both use a 3×3 stride-1 stem with no max-pool, so a 32×32 image keeps its resolution in
the first stage; a global average pool over whatever map is left makes them work for 8×8
inputs too.

The two networks differ only in depth, widths and their checkpoints' module names. We keep
each one's published names so existing weights load with `load_state_dict(strict=True)`:

* ResNet-18 follows the layout RSLAD / MTARD students are saved in (kuangliu's
  pytorch-cifar): projection shortcut under `shortcut`, classifier `linear`.
* ResNet-56 follows chenyaofo's pytorch-cifar-models, which MTARD's clean teacher was
  trained with: projection shortcut under `downsample`, classifier `fc`.

The forward passes use the published networks' arithmetic (so logits match theirs to the
bit) and write in place wherever autograd allows, which makes a training step slightly
cheaper than the official one: the residual is added into the second BN's output and every
ReLU rectifies in place (batch norm and addition never save their outputs for backward).
The global pool is the one each published network uses: kuangliu's `avg_pool2d` over the
final map for ResNet-18, an adaptive average pool for ResNet-56 (the two sum in different
orders, so their logits differ by a few ulp).
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """Two 3×3 conv+BN layers plus a residual; 1×1 conv+BN projection when shapes change.

    `shortcut_name` is the attribute the projection lives under; it only affects
    state-dict keys (see the module docstring). Identity shortcuts own no parameters,
    so both published layouts store nothing for them.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut_name: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        projects = stride != 1 or in_planes != planes
        shortcut: nn.Module = (
            nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
            if projects
            else nn.Identity()
        )
        self.add_module(shortcut_name, shortcut)
        self._shortcut = shortcut_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.get_submodule(self._shortcut)(x)
        return F.relu(out, inplace=True)


def window_average_pool(x: torch.Tensor) -> torch.Tensor:
    """kuangliu's `F.avg_pool2d(out, 4)` on a 32×32 input, for any final map size."""
    return F.avg_pool2d(x, x.shape[-2:])


def adaptive_average_pool(x: torch.Tensor) -> torch.Tensor:
    """chenyaofo's `nn.AdaptiveAvgPool2d((1, 1))`."""
    return F.adaptive_avg_pool2d(x, 1)


class CifarResNet(nn.Module):
    """Stem conv+BN+ReLU, stages of BasicBlocks (the first stage at stride 1, later ones
    halving the resolution), global average pool, linear classifier.

    `shortcut_name` / `head_name` choose the checkpoint layout and `pool` the global
    average pool of the published network (see the module docstring).
    """

    def __init__(
        self,
        *,
        widths: Sequence[int],
        depths: Sequence[int],
        num_classes: int,
        in_channels: int,
        shortcut_name: str,
        head_name: str,
        pool: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for index, (planes, depth) in enumerate(zip(widths, depths, strict=True), start=1):
            blocks = []
            for position in range(depth):
                stride = 2 if index > 1 and position == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut_name))
                in_planes = planes
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self._stages = [f"layer{index}" for index in range(1, len(widths) + 1)]
        self.add_module(head_name, nn.Linear(in_planes, num_classes))
        self._head = head_name
        self._pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        for stage in self._stages:
            out = self.get_submodule(stage)(out)
        return self.get_submodule(self._head)(self._pool(out).flatten(1))


def resnet18(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-18 for CIFAR (~11.17M parameters at 10 classes); `image_size` is not needed."""
    del image_size
    return CifarResNet(
        widths=(64, 128, 256, 512),
        depths=(2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut_name="shortcut",
        head_name="linear",
        pool=window_average_pool,
    )


def resnet56(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-56 for CIFAR (~0.86M parameters); `image_size` is not needed.

    He et al. count 0.85M with parameter-free (zero-padding) shortcuts; chenyaofo's
    checkpoints use 1×1 conv+BN projections, adding 2,752 parameters.
    """
    del image_size
    model = CifarResNet(
        widths=(16, 32, 64),
        depths=(9, 9, 9),
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut_name="downsample",
        head_name="fc",
        pool=adaptive_average_pool,
    )
    # chenyaofo's initialisation: He-normal over fan-out keeps the 56-layer stack trainable.
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model

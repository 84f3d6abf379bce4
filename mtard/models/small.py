"""Tiny models for the embedded 8×8 digits default: train in seconds on a CPU.

They exist so the whole pipeline (attack, distillation, search) can run end to end in
tests and demos without CIFAR-sized compute; they are not meant to reproduce paper numbers.
"""

import torch
from torch import nn

_CNN_WIDTHS = (32, 64)
# A 4×4 map keeps coarse layout, which matters on 8×8 digits (a 1×1 global pool loses it),
# and adaptive pooling to a fixed size lets the same net run on 32×32 images.
_CNN_POOLED_SIZE = 4
_MLP_HIDDEN = 256


class SmallCNN(nn.Module):
    """Two 3×3 conv+BN+ReLU blocks (32, 64 channels), 4×4 adaptive average pool, linear."""

    def __init__(self, *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        first, second = _CNN_WIDTHS
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, padding=1, bias=False),
            nn.BatchNorm2d(first),
            nn.ReLU(inplace=True),
            nn.Conv2d(first, second, 3, padding=1, bias=False),
            nn.BatchNorm2d(second),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(_CNN_POOLED_SIZE),
        )
        self.classifier = nn.Linear(second * _CNN_POOLED_SIZE**2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class MLP(nn.Module):
    """Flatten, two 256-unit ReLU hidden layers, linear output.

    No BatchNorm: the MLP is the normalisation-free baseline, and without BN its train and
    eval modes compute the same function, which keeps attacks on it easy to reason about.
    """

    def __init__(self, *, num_classes: int, in_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, _MLP_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(_MLP_HIDDEN, _MLP_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(_MLP_HIDDEN, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def small_cnn(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The digits default (~29K parameters at 1 channel, 10 classes); any input size works."""
    del image_size
    return SmallCNN(num_classes=num_classes, in_channels=in_channels)


def mlp(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """MLP over in_channels × image_size² inputs: the only model whose size depends on the image."""
    return MLP(num_classes=num_classes, in_features=in_channels * image_size**2)

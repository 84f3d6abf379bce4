"""Model registry: every student and teacher architecture, built by name.

All models take images in [0, 1] with no mean/std normalisation (attacks work in that
space; docs/algorithm.md, 'Teachers and students'), accept any channel count and class count, and end in a global
average pool over whatever map is left, so the same names serve the 8×8 digits default
and 32×32 CIFAR. The published architectures compute exactly what their official code
computes on 32×32 (same pooling op, same arithmetic; see each module).
"""

from collections.abc import Callable

from torch import nn

from mtard.errors import MtardError
from mtard.models.dm_wideresnet import dm_wrn22_6, dm_wrn22_6_c10stats
from mtard.models.mobilenet import mobilenet_v2
from mtard.models.resnet import resnet18, resnet56
from mtard.models.small import mlp, small_cnn
from mtard.models.wideresnet import wrn16_2, wrn22_6, wrn28_10, wrn34_10

Builder = Callable[..., nn.Module]
"""Called as `builder(num_classes=..., in_channels=..., image_size=...)`."""

_REGISTRY: dict[str, Builder] = {
    "dm_wrn22_6": dm_wrn22_6,
    "dm_wrn22_6_c10stats": dm_wrn22_6_c10stats,
    "mlp": mlp,
    "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18,
    "resnet56": resnet56,
    "small_cnn": small_cnn,
    "wrn16_2": wrn16_2,
    "wrn22_6": wrn22_6,
    "wrn28_10": wrn28_10,
    "wrn34_10": wrn34_10,
}


def model_names() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(_REGISTRY)


def build_model(arch: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Build a freshly initialised `arch` for `in_channels`×`image_size`² inputs in [0, 1].

    Raises `MtardError` for an unknown name or a non-positive size, since both come
    straight from user configs.
    """
    builder = _REGISTRY.get(arch)
    if builder is None:
        raise MtardError(
            f"unknown model architecture {arch!r}; choose one of: {', '.join(model_names())}"
        )
    sizes = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    for name, value in sizes.items():
        if value < 1:
            raise MtardError(f"model {arch!r}: {name} must be a positive integer, got {value}")
    return builder(**sizes)

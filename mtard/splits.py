"""The types a data set is handed around as (shared by `mtard.data` and `mtard.cifar`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset, Subset

from mtard.errors import MtardError


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set to be built for it."""

    name: str
    num_classes: int
    channels: int
    image_size: int


_INFO: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", num_classes=10, channels=1, image_size=8),
    "cifar10": DatasetInfo("cifar10", num_classes=10, channels=3, image_size=32),
    "cifar100": DatasetInfo("cifar100", num_classes=100, channels=3, image_size=32),
}

def dataset_info(name: str) -> DatasetInfo:
    """The shape facts of data set `name` (``digits``, ``cifar10`` or ``cifar100``)."""
    try:
        return _INFO[name]
    except KeyError:
        raise MtardError(
            f"unknown data set {name!r}: set data.name to one of {', '.join(_INFO)}"
        ) from None


@dataclass
class Splits:
    """The three splits of one data set; only `train` is augmented."""

    train: Dataset  # augmented if cfg.augment
    val: Dataset  # carved from the training set, never augmented
    test: Dataset  # never augmented; only for final reports
    info: DatasetInfo


class TransformSubset(Subset):
    """A `Subset` that applies its own transform to the base data set's raw items.

    Train and val are two views of one untransformed training set: they share its
    storage (no copy of 50,000 images) while one view augments and the other does not.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform: Callable[[Any], Any]) -> None:
        super().__init__(dataset, indices)
        self.transform = transform

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        x, y = self.dataset[self.indices[idx]]
        return self.transform(x), y

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any]]:
        # Subset.__getitems__ would bypass our transform through the base's batch path.
        return [self[i] for i in indices]

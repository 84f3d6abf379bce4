"""Data sets, the seeded train/val/test splits, and per-epoch loaders.

Three data sets are supported:

* ``digits`` — scikit-learn's 8×8 handwritten digits, bundled with scikit-learn, so
  everything (tests, the quick-start, a laptop search) works offline.
* ``cifar10`` / ``cifar100`` — read by torchvision from ``data.root`` in its usual
  on-disk layout; downloaded only when ``data.download`` is true (``mtard.cifar``).

Every item is ``(x, y)``: ``x`` a float32 C×H×W tensor in [0, 1] and ``y`` an integer
class. Images are deliberately *not* mean/std normalised: the attacks clip to
[0, 1] and ε is defined in pixel units, so normalisation belongs inside the model.

The validation split is always carved from the training set (the test set is only
for final reports, never for model selection), and it is never augmented so a
trial's validation score does not depend on augmentation noise.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

from mtard.config import DataConfig
from mtard.errors import MtardError
from mtard.splits import DatasetInfo, Splits, TransformSubset, dataset_info

__all__ = ["DatasetInfo", "Splits", "TransformSubset", "dataset_info", "epoch_loader", "load_splits"]


# The digits test split is held out with a constant seed, independent of
# data.split_seed: a search may vary split_seed, but every run must report on the
# same test images or the final numbers are not comparable.
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 0


# The splits last built in this process, and what they were built from. A search's trial process
# runs trial after trial (Tune reuses it): the next trial on the same data gets the same splits
# instead of reading and splitting the data set again. One entry: a process never holds two.
_LAST_SPLITS: tuple[tuple, Splits] | None = None


def load_splits(cfg: DataConfig) -> Splits:
    """Build train/val/test for `cfg.name`, with the seeded validation split (reused while the
    fields that determine the splits stay the same; the splits are never modified)."""
    global _LAST_SPLITS
    key = (cfg.name, cfg.val_fraction, cfg.split_seed, cfg.augment)
    if cfg.name != "digits":  # files on disk: a changed or replaced file is read again
        key += (str(Path(cfg.root).resolve()), _files_fingerprint(Path(cfg.root)))
    if _LAST_SPLITS is not None and _LAST_SPLITS[0] == key:
        return _LAST_SPLITS[1]
    _LAST_SPLITS = None  # free the old data set before building the next
    splits = _build_splits(cfg)
    _LAST_SPLITS = (key, splits)
    return splits


def _files_fingerprint(root: Path, depth: int = 2) -> tuple:
    """(path, size, mtime) of every file up to `depth` folders below `root` (CIFAR: a dozen files)."""
    found = []
    for folder, dirs, files in os.walk(root):
        if len(Path(folder).relative_to(root).parts) >= depth:
            dirs.clear()
        for name in files:
            stat = os.stat(os.path.join(folder, name))
            found.append((os.path.join(folder, name), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


def _build_splits(cfg: DataConfig) -> Splits:
    info = dataset_info(cfg.name)
    if not 0 < cfg.val_fraction < 1:
        raise MtardError(f"data.val_fraction: must be in (0, 1), e.g. 0.1; got {cfg.val_fraction}")
    if cfg.name == "digits":
        return _digits_splits(cfg, info)
    # Imported here: torchvision takes ~1.5 s to import, paid by every Ray worker of every trial.
    from mtard.cifar import cifar_splits

    return cifar_splits(cfg, info)


# ---------------------------------------------------------------- digits


def _digits_splits(cfg: DataConfig, info: DatasetInfo) -> Splits:
    """Digits in memory: fixed stratified test split, then a seeded stratified val split.

    No augmentation, whatever cfg.augment says: on 8×8 images a 1-pixel shift is
    an eighth of the digit and a horizontal flip changes its identity (2 vs 5), so
    CIFAR-style crops and flips would corrupt the labels rather than regularise.
    """
    from sklearn.datasets import load_digits  # heavy import, only needed here

    digits = load_digits()
    x = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)  # N×1×8×8 in [0, 1]
    y = torch.from_numpy(digits.target).long()
    base = TensorDataset(x, y)

    labels = digits.target
    rest, test = _stratified_split(
        np.arange(len(labels)), labels, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED, "the digits test split"
    )
    train, val = _stratified_split(rest, labels[rest], cfg.val_fraction, cfg.split_seed, "data.val_fraction")
    return Splits(train=Subset(base, train), val=Subset(base, val), test=Subset(base, test), info=info)


def _stratified_split(
    indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[list[int], list[int]]:
    """Split `indices` into (keep, held_out) with every class in both parts, sorted."""
    from sklearn.model_selection import train_test_split

    try:
        keep, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as err:
        classes = len(np.unique(labels))
        raise MtardError(
            f"{what}: a fraction of {fraction} of {len(indices)} images cannot hold each of the "
            f"{classes} classes on both sides ({err}); use a value between "
            f"{classes / len(indices):.3f} and {1 - classes / len(indices):.3f}"
        ) from err
    # Sorted so the order of a split never depends on the splitter's shuffling.
    return sorted(int(i) for i in keep), sorted(int(i) for i in held)


# ---------------------------------------------------------------- loaders


def epoch_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader for one epoch of one rank: `batch_size` is per rank.

    The order is a pure function of (seed, epoch) and the ranks get disjoint shards
    (DistributedSampler), so a run restarted from a checkpoint at epoch k replays
    exactly the batches it would have seen. DistributedSampler takes num_replicas and
    rank explicitly, so no process group is needed for the single-process case.
    Worker processes are seeded from (seed, epoch, rank) so random augmentation in
    workers is reproducible too; with num_workers=0 augmentation draws from the
    process's global torch RNG, which the caller seeds.
    """
    if batch_size < 1:
        raise MtardError(
            f"batch size per worker is {batch_size}: data.batch_size must be >= scaling.workers"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")  # a caller bug, not user input
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,  # a fresh loader per epoch: persistent workers would leak
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(_mix_seed(seed, epoch, rank)),
    )


def _mix_seed(seed: int, epoch: int, rank: int) -> int:
    """One well-spread 63-bit seed per (seed, epoch, rank); nearby inputs don't collide."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint64)[0] >> 1)


def _seed_worker(worker_id: int) -> None:
    """Seed Python and NumPy in a worker from its torch seed (DataLoader derives that one
    from the loader's generator + worker id), for transforms that use those RNGs."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


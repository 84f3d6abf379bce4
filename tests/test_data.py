"""mtard.data on real torchvision/sklearn code paths with tiny generated data.

The CIFAR fixtures are written in the real on-disk format (pickled dicts, as
torchvision reads them with encoding="latin1"), so the tests exercise torchvision's
own loading code; only the file *contents* are made up.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from mtard.config import DataConfig
from mtard.data import DatasetInfo, dataset_info, epoch_loader, load_splits
from mtard.errors import MtardError

CIFAR10_TRAIN_PER_BATCH = 8  # 5 batches -> 40 training images
CIFAR10_TEST = 10
CIFAR100_TRAIN = 60
CIFAR100_TEST = 20


# ---------------------------------------------------------------- fixtures


def _dump(path: Path, obj: dict) -> None:
    # Keys are str: the real files were pickled by Python 2, whose str keys load as
    # str under torchvision's encoding="latin1" (a Python 3 bytes key would not).
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def make_cifar10(root: Path, seed: int = 0) -> Path:
    """A tiny cifar-10-batches-py/ folder under `root`; returns the folder."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    start = 0
    for b in range(1, 6):
        n = CIFAR10_TRAIN_PER_BATCH
        labels = [(start + i) % 10 for i in range(n)]
        _dump(
            folder / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "labels": labels,
                "data": _images(rng, n),
                "filenames": [f"img_{start + i}.png" for i in range(n)],
            },
        )
        start += n
    _dump(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [i % 10 for i in range(CIFAR10_TEST)],
            "data": _images(rng, CIFAR10_TEST),
            "filenames": [f"test_{i}.png" for i in range(CIFAR10_TEST)],
        },
    )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": CIFAR10_TRAIN_PER_BATCH, "num_vis": 3072})
    return folder


def make_cifar100(root: Path, seed: int = 0) -> Path:
    """A tiny cifar-100-python/ folder under `root`; returns the folder."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", CIFAR100_TRAIN), ("test", CIFAR100_TEST)):
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        _dump(
            folder / name,
            {
                "batch_label": f"{name} batch",
                "fine_labels": fine,
                "coarse_labels": [v // 5 for v in fine],
                "data": _images(rng, n),
                "filenames": [f"{name}_{i}.png" for i in range(n)],
            },
        )
    _dump(
        folder / "meta",
        {"fine_label_names": [f"fine_{i}" for i in range(100)], "coarse_label_names": [f"coarse_{i}" for i in range(20)]},
    )
    return folder


def _cfg(name: str, root: Path | str = "data", **kw) -> DataConfig:
    return DataConfig(name=name, root=str(root), download=False, **kw)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


# ---------------------------------------------------------------- dataset_info


def test_dataset_info_values_and_unknown_name():
    assert dataset_info("digits") == DatasetInfo("digits", 10, 1, 8)
    assert dataset_info("cifar10") == DatasetInfo("cifar10", 10, 3, 32)
    assert dataset_info("cifar100") == DatasetInfo("cifar100", 100, 3, 32)
    with pytest.raises(MtardError, match="digits, cifar10, cifar100"):
        dataset_info("mnist")


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize(
    "name, make, n_train, n_test",
    [
        ("cifar10", make_cifar10, 5 * CIFAR10_TRAIN_PER_BATCH, CIFAR10_TEST),
        ("cifar100", make_cifar100, CIFAR100_TRAIN, CIFAR100_TEST),
    ],
)
def test_cifar_splits_shapes_labels_and_partition(tmp_path, name, make, n_train, n_test):
    make(tmp_path)
    splits = load_splits(_cfg(name, tmp_path, val_fraction=0.25, split_seed=3))
    classes = splits.info.num_classes
    assert splits.info == dataset_info(name)
    assert len(splits.test) == n_test

    train_idx, val_idx = set(splits.train.indices), set(splits.val.indices)
    assert not train_idx & val_idx
    assert train_idx | val_idx == set(range(n_train))
    assert len(val_idx) == round(0.25 * n_train)

    for ds in (splits.train, splits.val, splits.test):
        x, y = ds[0]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert isinstance(y, int) and 0 <= y < classes

    # The val view is the raw training image, only converted to [0, 1].
    base = splits.val.dataset
    i = splits.val.indices[0]
    raw = torch.from_numpy(base.data[i]).permute(2, 0, 1).float() / 255
    assert torch.allclose(splits.val[0][0], raw)
    assert splits.val[0][1] == base.targets[i]

    batch_x, batch_y = next(iter(epoch_loader(splits.train, batch_size=4, seed=0, epoch=0)))
    assert batch_x.shape == (4, 3, 32, 32) and batch_y.dtype == torch.long


def test_cifar_split_is_seeded(tmp_path):
    make_cifar10(tmp_path)
    a = load_splits(_cfg("cifar10", tmp_path, val_fraction=0.25, split_seed=0))
    b = load_splits(_cfg("cifar10", tmp_path, val_fraction=0.25, split_seed=0))
    c = load_splits(_cfg("cifar10", tmp_path, val_fraction=0.25, split_seed=1))
    assert a.val.indices == b.val.indices
    assert a.val.indices != c.val.indices


def test_cifar_val_is_plain_and_train_is_augmented(tmp_path):
    make_cifar10(tmp_path)
    torch.manual_seed(0)
    splits = load_splits(_cfg("cifar10", tmp_path, augment=True))
    val_reads = [splits.val[0][0] for _ in range(5)]
    assert all(_same(val_reads[0], x) for x in val_reads)
    assert all(_same(splits.test[0][0], splits.test[0][0]) for _ in range(3))
    train_reads = [splits.train[0][0] for _ in range(10)]
    assert any(not _same(train_reads[0], x) for x in train_reads)

    plain = load_splits(_cfg("cifar10", tmp_path, augment=False))
    assert _same(plain.train[0][0], plain.train[0][0])


def test_cifar_loads_from_archive_alone(tmp_path):
    folder = make_cifar10(tmp_path / "build")
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    splits = load_splits(_cfg("cifar10", root))
    assert len(splits.train) + len(splits.val) == 5 * CIFAR10_TRAIN_PER_BATCH
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cifar10", ["cifar-10-python.tar.gz", "cifar-10-batches-py/", "data_batch_1..5", "test_batch", "batches.meta", "data.root"]),
        ("cifar100", ["cifar-100-python.tar.gz", "cifar-100-python/", "train, test, meta", "data.root"]),
    ],
)
def test_missing_cifar_names_files_and_fix(tmp_path, name, expected):
    with pytest.raises(MtardError) as err:
        load_splits(_cfg(name, tmp_path / "nowhere"))
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message
    for part in expected:
        assert part in message


def test_partial_cifar_names_missing_file(tmp_path):
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(MtardError, match="missing in .*: data_batch_3"):
        load_splits(_cfg("cifar10", tmp_path))


def test_corrupt_cifar_file_is_a_clear_error(tmp_path):
    folder = make_cifar100(tmp_path)
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(MtardError, match="could not be read.*delete the folder"):
        load_splits(_cfg("cifar100", tmp_path))


# ---------------------------------------------------------------- digits


def test_digits_splits():
    splits = load_splits(_cfg("digits", val_fraction=0.1, split_seed=0))
    n = 1797
    train, val, test = (set(s.indices) for s in (splits.train, splits.val, splits.test))
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(range(n))
    assert abs(len(test) - 0.2 * n) < 1
    assert abs(len(val) - 0.1 * (n - len(test))) < 1

    for ds in (splits.train, splits.val, splits.test):
        ys = torch.stack([ds[i][1] for i in range(len(ds))])
        assert set(ys.tolist()) == set(range(10))  # stratified: every class in every split
    x, y = splits.train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8)
    assert y.dtype == torch.long and y.dim() == 0
    xs = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    assert xs.min() >= 0 and xs.max() <= 1 and xs.max() > 0.9

    # No augmentation for digits even when asked for (see data._digits_splits).
    assert _same(splits.train[0][0], splits.train[0][0])


def test_digits_test_split_ignores_split_seed():
    a = load_splits(_cfg("digits", split_seed=0))
    b = load_splits(_cfg("digits", split_seed=1))
    assert a.test.indices == b.test.indices
    assert a.val.indices != b.val.indices
    assert a.val.indices == load_splits(_cfg("digits", split_seed=0)).val.indices


def test_val_fraction_out_of_range():
    with pytest.raises(MtardError, match="data.val_fraction"):
        load_splits(_cfg("digits", val_fraction=1.0))
    with pytest.raises(MtardError, match="data.val_fraction"):
        load_splits(_cfg("digits", val_fraction=0.001))  # fewer val images than classes


# ---------------------------------------------------------------- epoch_loader


def _labels(n: int = 20) -> TensorDataset:
    return TensorDataset(torch.zeros(n, 1), torch.arange(n))


def _order(**kw) -> list[int]:
    return torch.cat([y for _, y in epoch_loader(_labels(), batch_size=3, **kw)]).tolist()


def test_epoch_loader_is_a_function_of_seed_and_epoch():
    first = _order(seed=1, epoch=0)
    assert first == _order(seed=1, epoch=0)
    assert sorted(first) == list(range(20))
    assert first != _order(seed=1, epoch=1)
    assert first != _order(seed=2, epoch=0)
    assert _order(seed=1, epoch=0, shuffle=False) == list(range(20))


def test_epoch_loader_ranks_are_disjoint_and_cover():
    shards = [_order(seed=0, epoch=3, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 10
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(20))


def test_epoch_loader_batches_collate_to_long():
    batches = list(epoch_loader(_labels(10), batch_size=4, seed=0, epoch=0, drop_last=True))
    assert [len(y) for _, y in batches] == [4, 4]
    assert all(y.dtype == torch.long for _, y in batches)


class _RandomItems(Dataset):
    """Each read draws from the RNGs a worker must seed (torch and numpy)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([torch.rand(()).item(), float(np.random.rand())]), i


def test_epoch_loader_seeds_workers_deterministically():
    def draws(epoch: int) -> torch.Tensor:
        loader = epoch_loader(_RandomItems(), batch_size=4, seed=5, epoch=epoch, num_workers=1)
        return torch.cat([x for x, _ in loader])

    first = draws(0)
    assert torch.equal(first, draws(0))
    assert not torch.equal(first, draws(1))


def test_bad_batch_size_is_a_user_error():
    with pytest.raises(MtardError, match="data.batch_size"):
        epoch_loader(_labels(), batch_size=0, seed=0, epoch=0)



def test_training_on_digits_does_not_import_torchvision() -> None:
    # Every Ray worker of every trial imports the loop; torchvision costs ~1.5 s there and only CIFAR needs it.
    probe = ("import sys, mtard.distributed, mtard.search.run; from mtard.config import load_config; "
             "from mtard.data import load_splits; load_splits(load_config('digits_mtard').data); "
             "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_splits_are_reused_while_the_fields_that_determine_them_stay_the_same():
    """A search's trial process runs trial after trial: the same data is not built twice."""
    cfg = DataConfig(name="digits", batch_size=32)
    first = load_splits(cfg)
    assert load_splits(DataConfig(name="digits", batch_size=64, num_workers=2)) is first  # loader fields only
    other = load_splits(DataConfig(name="digits", split_seed=1))
    assert other is not first and other.val.indices != first.val.indices
    again = load_splits(cfg)  # only the latest splits are kept
    assert again is not first and again.val.indices == first.val.indices


def test_cifar_splits_are_read_again_when_a_file_changes(tmp_path):
    """The per-process reuse of splits never serves a data set whose files changed on disk."""
    import os

    make_cifar10(tmp_path)
    cfg = _cfg("cifar10", tmp_path, val_fraction=0.25)
    first = load_splits(cfg)
    assert load_splits(cfg) is first
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    stat = batch.stat()
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_splits(cfg) is not first

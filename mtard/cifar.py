"""CIFAR-10 / CIFAR-100 through torchvision: files from ``data.root``, a clear error offline.

Imported only when a CIFAR data set is asked for (see ``mtard.data.load_splits``).
"""

from __future__ import annotations

import pickle
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets, transforms
from torchvision.datasets.utils import download_and_extract_archive, extract_archive

from mtard.config import DataConfig
from mtard.errors import MtardError
from mtard.splits import DatasetInfo, Splits, TransformSubset

# Bounds a download attempt that hangs (e.g. a firewall dropping packets) instead
# of failing; applies per socket operation, so a slow but live download still works.
DOWNLOAD_SOCKET_TIMEOUT_S = 30.0


class _LocalFilesCheck:
    """Replace torchvision's md5 checks by an existence check of every expected file.

    torchvision re-hashes all batch files on every construction and refuses any file
    whose md5 differs from the official one. That makes hand-built or re-packed copies
    (including the tiny ones the tests generate) unusable and costs a full read of
    ~170 MB per trial. Here the md5 of the archive is verified by torchvision at
    download time only (`download_and_extract_archive(..., md5=tgz_md5)`); files
    placed by hand are trusted as long as they are all present and unpickle.
    """

    root: str
    base_folder: str
    meta: dict[str, str]

    def _check_integrity(self) -> bool:
        return not _missing_files(type(self), Path(self.root))

    def _load_meta(self) -> None:
        path = Path(self.root, self.base_folder, self.meta["filename"])
        with open(path, "rb") as infile:
            data = pickle.load(infile, encoding="latin1")
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class _CIFAR10(_LocalFilesCheck, datasets.CIFAR10):
    pass


class _CIFAR100(_LocalFilesCheck, datasets.CIFAR100):
    pass


@dataclass(frozen=True)
class _CifarSpec:
    title: str
    dataset_cls: type[datasets.CIFAR10]
    files_hint: str  # how the error message lists the extracted folder's contents


_CIFAR: dict[str, _CifarSpec] = {
    "cifar10": _CifarSpec("CIFAR-10", _CIFAR10, "data_batch_1..5, test_batch, batches.meta"),
    "cifar100": _CifarSpec("CIFAR-100", _CIFAR100, "train, test, meta"),
}


def cifar_splits(cfg: DataConfig, info: DatasetInfo) -> Splits:
    """CIFAR train/val as two views of the training set, test as-is; only train augments."""
    spec = _CIFAR[cfg.name]
    root = Path(cfg.root)
    _ensure_cifar_files(spec, root, cfg.download)
    base_train = _open_cifar(spec, root, train=True, transform=None)  # raw PIL images
    test = _open_cifar(spec, root, train=False, transform=transforms.ToTensor())

    train_idx, val_idx = _random_split(len(base_train), cfg.val_fraction, cfg.split_seed)
    plain = transforms.ToTensor()
    train_tf = _cifar_augmentation() if cfg.augment else plain
    return Splits(
        train=TransformSubset(base_train, train_idx, train_tf),
        val=TransformSubset(base_train, val_idx, plain),
        test=test,
        info=info,
    )


def _cifar_augmentation() -> transforms.Compose:
    """The standard CIFAR augmentation of the adversarial-distillation papers."""
    return transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
    )


def _random_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) index lists: a seeded random `fraction` of range(n) is val, both sorted.

    Not stratified: CIFAR's classes are balanced and its val split holds thousands
    of images, so every class is represented without the extra machinery.
    """
    n_val = round(fraction * n)
    if not 0 < n_val < n:
        raise MtardError(
            f"data.val_fraction: {fraction} of {n} training images leaves an empty split; "
            f"use a value between {1 / n:.4f} and {1 - 1 / n:.4f}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def _expected_files(cls: type[datasets.CIFAR10]) -> list[str]:
    return [name for name, _md5 in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _missing_files(cls: type[datasets.CIFAR10], root: Path) -> list[str]:
    folder = root / cls.base_folder
    return [name for name in _expected_files(cls) if not (folder / name).is_file()]


def _ensure_cifar_files(spec: _CifarSpec, root: Path, download: bool) -> None:
    """Make the extracted folder complete: from a local archive, a download, or fail clearly.

    The local checks come first so that a machine with the files never touches
    the network, and an offline machine without them fails in seconds.
    """
    cls = spec.dataset_cls
    if not _missing_files(cls, root):
        return
    archive = root / cls.filename
    if archive.is_file():
        _extract_local_archive(spec, archive, root)
        if not _missing_files(cls, root):
            return
    problem = ""
    if download:
        problem = _try_download(cls, root)
        if not _missing_files(cls, root):
            return
    raise MtardError(_not_found_message(spec, root, download, problem))


def _extract_local_archive(spec: _CifarSpec, archive: Path, root: Path) -> None:
    try:
        extract_archive(str(archive), str(root))
    except Exception as err:  # tarfile/gzip raise several unrelated types on a bad file
        raise MtardError(
            f"{spec.title} archive {archive} could not be extracted ({err}): delete it and place a "
            f"fresh copy from {spec.dataset_cls.url}, or set data.root"
        ) from err


def _try_download(cls: type[datasets.CIFAR10], root: Path) -> str:
    """Download and extract (md5-checked by torchvision); return '' or why it failed."""
    archive = root / cls.filename
    had_archive = archive.exists()
    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as err:  # offline: URLError, timeouts, DNS, md5 mismatch, ...
        if not had_archive and archive.exists():
            archive.unlink()  # a partial download we wrote would be mistaken for the real file
        return f"download from {cls.url} failed: {err}"
    return ""


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _not_found_message(spec: _CifarSpec, root: Path, download: bool, problem: str) -> str:
    cls = spec.dataset_cls
    folder = root / cls.base_folder
    details = []
    if folder.is_dir():
        details.append(f"missing in {folder}/: {', '.join(_missing_files(cls, root))}")
    if problem:
        details.append(problem)
    why = f" ({'; '.join(details)})" if details else ""
    fetch = "" if download else ", or set data.download=true on a machine with internet access"
    return (
        f"{spec.title} not found under {root}/{why}: place {cls.filename} from {cls.url} in {root}/ "
        f"(or its extracted folder {folder}/ with {spec.files_hint}), or set data.root{fetch}"
    )


def _open_cifar(spec: _CifarSpec, root: Path, *, train: bool, transform: Callable | None) -> datasets.CIFAR10:
    """Construct the torchvision data set, turning unreadable files into one clear error."""
    try:
        return spec.dataset_cls(root=str(root), train=train, transform=transform, download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, IndexError, OSError) as err:
        folder = root / spec.dataset_cls.base_folder
        raise MtardError(
            f"{spec.title} files in {folder}/ could not be read ({type(err).__name__}: {err}): delete "
            f"the folder and extract a fresh copy of {spec.dataset_cls.filename} from {spec.dataset_cls.url}"
        ) from err

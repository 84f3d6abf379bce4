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

import numpy as np
import torch
from torchvision import datasets, transforms
from torchvision.datasets.utils import download_and_extract_archive, extract_archive

from mtard.config import DataConfig
from mtard.errors import MtardError
from mtard.splits import DatasetInfo, Splits, TransformSubset

# Bounds a download attempt that hangs (e.g. a firewall dropping packets) instead
# of failing; applies per socket operation, so a slow but live download still works.
DOWNLOAD_SOCKET_TIMEOUT_S = 30.0


class CifarFileError(ValueError):
    """A CIFAR file that is not a plain batch or meta pickle (wrong content, or a payload)."""


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain data only: CIFAR files are pickles, and a pickle can run any code.

    The files are placed by hand (or re-packed), so they are untrusted like teacher
    checkpoints. A real batch needs builtin containers and numbers plus numpy's array
    reconstruction; any other global (os.system, builtins.eval, ...) is refused before
    it can be called.
    """

    ALLOWED = frozenset({
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # how numpy pickles an array (numpy 1 and 2 names)
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise CifarFileError(f"it names {module}.{name}, which CIFAR data never needs (refused unrun: a pickle can run code)")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as infile:
        try:
            data = _CifarUnpickler(infile, encoding="latin1").load()
        except CifarFileError as err:
            raise CifarFileError(f"{path.name}: {err}") from err
    if not isinstance(data, dict):
        raise CifarFileError(f"{path.name} holds a {type(data).__name__}, not a dict")
    return data


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """A batch file's images (N×3072 uint8) and labels, checked against the CIFAR format."""
    entry = _read_pickle(path)
    images, labels = entry.get("data"), entry.get(label_key)
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2 and images.shape[1] == 3072):
        raise CifarFileError(f"{path.name}: 'data' must be an N×3072 uint8 array (32×32 RGB images)")
    if not (isinstance(labels, list) and len(labels) == len(images)
            and all(isinstance(v, int) and 0 <= v < num_classes for v in labels)):
        raise CifarFileError(f"{path.name}: {label_key!r} must be a list of {len(images)} class indices in [0, {num_classes})")
    return images, labels


class _LocalFilesCheck:
    """Read the files with the restricted unpickler, and check presence instead of md5s.

    torchvision re-hashes all batch files on every construction and refuses any file
    whose md5 differs from the official one. That makes hand-built or re-packed copies
    (including the tiny ones the tests generate) unusable and costs a full read of
    ~170 MB per trial. Here the md5 of the archive is verified by torchvision at
    download time only (`download_and_extract_archive(..., md5=tgz_md5)`); files
    placed by hand are accepted when they are all present and hold plain CIFAR data
    (`_CifarUnpickler`): torchvision's own reader would `pickle.load` them.
    """

    root: str
    base_folder: str
    meta: dict[str, str]
    train_list: list[list[str]]
    test_list: list[list[str]]
    label_key: str
    num_classes: int

    def __init__(self, root: str, train: bool, transform: Callable | None) -> None:
        datasets.VisionDataset.__init__(self, root, transform=transform)
        self.train = train
        folder = Path(root, self.base_folder)
        parts = [_read_batch(folder / name, self.label_key, self.num_classes) for name, _md5 in (self.train_list if train else self.test_list)]
        # torchvision's layout: N×32×32×3 uint8 (HWC), as its __getitem__ expects.
        self.data = np.vstack([images for images, _ in parts]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.targets = [label for _, labels in parts for label in labels]
        self._load_meta()

    def _check_integrity(self) -> bool:
        return not _missing_files(type(self), Path(self.root))

    def _load_meta(self) -> None:
        path = Path(self.root, self.base_folder, self.meta["filename"])
        names = _read_pickle(path).get(self.meta["key"])
        if not (isinstance(names, list) and len(names) == self.num_classes and all(isinstance(n, str) for n in names)):
            raise CifarFileError(f"{path.name}: {self.meta['key']!r} must list the {self.num_classes} class names")
        self.classes = names
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class _CIFAR10(_LocalFilesCheck, datasets.CIFAR10):
    label_key = "labels"
    num_classes = 10


class _CIFAR100(_LocalFilesCheck, datasets.CIFAR100):
    label_key = "fine_labels"
    num_classes = 100


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
    if root.exists() and not root.is_dir():
        raise MtardError(
            f"data.root {root} is a file, not a folder: set data.root to the folder that holds "
            f"{cls.filename} or its extracted {cls.base_folder}/"
        )
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
        return spec.dataset_cls(root=str(root), train=train, transform=transform)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, IndexError, OSError) as err:
        folder = root / spec.dataset_cls.base_folder
        raise MtardError(
            f"{spec.title} files in {folder}/ could not be read ({type(err).__name__}: {err}): delete "
            f"the folder and extract a fresh copy of {spec.dataset_cls.filename} from {spec.dataset_cls.url}"
        ) from err

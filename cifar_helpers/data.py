"""CIFAR-10 from torchvision's download or an image-folder copy: datasets, loaders, a fast path."""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .runstate import CheckpointError, save_atomic

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
#: The seed's normalization: maps [0, 1] to [-1, 1].
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
#: CIFAR-10's real per-channel training-set statistics (notebook 01 measures them).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
TV_FOLDER = "cifar-10-batches-py"   # what torchvision's download unpacks into data_dir
_CACHE_VERSION = 1


class DataError(FileNotFoundError):
    """The data set is missing, corrupt or not CIFAR-10; the message says how to fix it."""

    def __init__(self, message: str) -> None:
        # A DataLoader worker's DataError comes back as DataError("Caught DataError in DataLoader
        # worker process N.\nOriginal Traceback ... DataError: <message>"): keep the message only.
        if message.startswith("Caught DataError") and "DataError: " in message:
            message = message.rstrip().rsplit("DataError: ", 1)[1]
        super().__init__(message)


def how_to_provide(data_dir: str | os.PathLike) -> str:
    """The two ways to provide the data, for error messages."""
    root = Path(data_dir).resolve()
    return (f"Either download the original with torchvision (parameter download=True, or "
            f"`-p download True` with papermill/run_all) into {root}, or point data_dir "
            f"(or the CIFAR10_DATA_DIR environment variable) at an image-folder copy laid out "
            f"as train/<class>/*.jpg and test/<class>/*.jpg.")


def seed_transform(mean=MEAN, std=STD) -> transforms.Compose:
    """The seed's transform: ToTensor, then Normalize (by default to [-1, 1])."""
    from torchvision import transforms   # imported when needed: the fast path runs without it
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])


def find_layout(data_dir: str | os.PathLike) -> str | None:
    """``"folder"`` (train/ and test/ class folders), ``"torchvision"`` (its pickles) or None."""
    root = Path(data_dir)
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "folder"
    if (root / TV_FOLDER).is_dir():
        return "torchvision"
    return None


def _check_class_folders(split_dir: Path, data_dir: str | os.PathLike) -> None:
    if not split_dir.is_dir():
        raise DataError(f"No folder {split_dir.resolve()}: an image-folder copy of CIFAR-10 "
                        f"needs both train/ and test/. {how_to_provide(data_dir)}")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if tuple(found) != CIFAR10_CLASSES:
        missing = sorted(set(CIFAR10_CLASSES) - set(found))
        extra = sorted(set(found) - set(CIFAR10_CLASSES))
        raise DataError(f"{split_dir} does not hold CIFAR-10's ten class folders "
                        f"(missing: {missing or 'none'}, unexpected: {extra or 'none'}). "
                        f"Expected exactly {list(CIFAR10_CLASSES)}. {how_to_provide(data_dir)}")
    empty = [c for c in CIFAR10_CLASSES if not _holds_files(split_dir / c)]
    if empty:
        raise DataError(f"{split_dir.resolve()}: the class folders {empty} hold no images. "
                        f"{how_to_provide(data_dir)}")


def _holds_files(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() for e in entries)


def _check_torchvision_files(data_dir: str | os.PathLike) -> None:
    from torchvision import datasets
    folder = Path(data_dir).resolve() / TV_FOLDER
    names = [n for n, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list]
    missing = [n for n in [*names, datasets.CIFAR10.meta["filename"]] if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder} is incomplete (missing: {missing}). Delete it and download "
                        f"again. {how_to_provide(data_dir)}")


def _not_found(data_dir: str | os.PathLike) -> DataError:
    return DataError(f"CIFAR-10 not found in {Path(data_dir).resolve()} (no train/ and test/ "
                     f"folders, no {TV_FOLDER}/, and download is off). {how_to_provide(data_dir)}")


def check_data_dir(data_dir: str | os.PathLike, download: bool = False) -> str:
    """``data_dir``'s layout (``"folder"`` or ``"torchvision"``), or a :class:`DataError` saying how
    to provide the data: no CIFAR-10 there and download off, a split missing, class folders that
    are not CIFAR-10's or hold no images, or torchvision's files incomplete.

    Notebook 01 calls it before building the datasets itself, so a learner gets this message
    instead of torchvision's bare "Dataset not found or corrupted".
    """
    layout = find_layout(data_dir)
    if layout == "folder":
        for split in ("train", "test"):
            _check_class_folders(Path(data_dir) / split, data_dir)
    elif layout == "torchvision" and not download:
        _check_torchvision_files(data_dir)
    elif layout is None and not download:
        raise _not_found(data_dir)
    return layout or "torchvision"


def cifar10(data_dir: str | os.PathLike, train: bool = True,
            transform=None, download: bool = False) -> Dataset:
    """The CIFAR-10 training or test set as a torchvision dataset (``ImageFolder`` or ``CIFAR10``).

    Labels and ``.classes`` are the same for both layouts. Both splits are checked first.
    """
    from torchvision import datasets
    if check_data_dir(data_dir, download) == "folder":
        split_dir = Path(data_dir) / ("train" if train else "test")
        try:
            return datasets.ImageFolder(str(split_dir), transform=transform, loader=open_image)
        except FileNotFoundError as err:  # class folders holding only non-image files
            raise DataError(f"{split_dir.resolve()}: {err} {how_to_provide(data_dir)}") from err
    try:
        ds = datasets.CIFAR10(root=str(data_dir), train=train, transform=transform,
                              download=download)
    except (RuntimeError, OSError, EOFError, urllib.error.URLError) as err:
        archive = Path(data_dir).resolve() / datasets.CIFAR10.filename
        raise DataError(f"Could not get CIFAR-10 through torchvision in "
                        f"{Path(data_dir).resolve()}: {err}. If a download broke off or is "
                        f"corrupt, delete {archive} and {archive.parent / TV_FOLDER} and try "
                        f"again. {how_to_provide(data_dir)}"
                        ) from err
    if tuple(ds.classes) != CIFAR10_CLASSES:
        raise DataError(f"{data_dir}/{TV_FOLDER} names classes {ds.classes}, not CIFAR-10's.")
    return ds


def subset_indices(n: int, size: int | None) -> torch.Tensor | None:
    """A fixed random choice of ``size`` of ``n`` indices, sorted; None when ``size`` is None.

    The same choice for every layout and loader, so all classes appear in a small subset.
    """
    if size is None:
        return None
    if size > n:
        raise ValueError(f"asked for {size} images but the set has only {n}; "
                         f"use a smaller size, or None for all")
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size].sort().values


def subset(dataset: Dataset, size: int | None) -> Dataset:
    """``size`` images of ``dataset`` chosen by :func:`subset_indices` (all when None)."""
    idx = subset_indices(len(dataset), size)
    return dataset if idx is None else Subset(dataset, idx.tolist())


def dataloader(dataset: Dataset, batch_size: int, shuffle: bool,
               num_workers: int = 0, seed: int = 0) -> DataLoader:
    """A standard ``DataLoader``; seeded shuffling, workers that also start under spawn."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed),
                      persistent_workers=num_workers > 0)


# ---------------------------------------------------------------------------------------
# The fast path: decode once into uint8 tensors, cache them, batch with tensor indexing.
# ---------------------------------------------------------------------------------------

def _fingerprint(data_dir: Path, train: bool) -> tuple[str, str]:
    """(layout, digest of every source file's name, size and mtime)."""
    layout = find_layout(data_dir)
    h = hashlib.sha1()
    if layout == "folder":
        split_dir = data_dir / ("train" if train else "test")
        for cls in sorted(os.scandir(split_dir), key=lambda e: e.name):
            if not cls.is_dir():
                continue
            for f in sorted(os.scandir(cls.path), key=lambda e: e.name):
                st = f.stat()
                h.update(f"{cls.name}/{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    elif layout == "torchvision":
        from torchvision import datasets
        files = datasets.CIFAR10.train_list if train else datasets.CIFAR10.test_list
        for name, _md5 in files:
            st = (data_dir / TV_FOLDER / name).stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return str(layout), h.hexdigest()


def cache_path(data_dir: str | os.PathLike, train: bool) -> Path:
    """Where the decoded tensors live: beside the data, or in a user cache if that is read-only
    (no write access, or no write bit at all: root may write anywhere, but should not there)."""
    root = Path(data_dir).resolve()
    name = f"cifar10-{'train' if train else 'test'}-uint8.pt"
    if os.environ.get("CIFAR_HELPERS_CACHE"):
        base = Path(os.environ["CIFAR_HELPERS_CACHE"])
    elif os.access(root, os.W_OK) and root.stat().st_mode & 0o222:
        return root / ".cache" / name
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cifar_helpers"
    return base / hashlib.sha1(str(root).encode()).hexdigest()[:16] / name


def open_image(path: str) -> Image.Image:
    """The RGB image at ``path`` (``ImageFolder``'s loader here), or a :class:`DataError` naming
    the file when it is truncated or corrupt."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:  # PIL raises several types for broken files
        raise DataError(f"Cannot read image {path}, a truncated or corrupt file ({err}). "
                        f"Extract the data copy again, or delete that file.") from err


def _read_image(path: str) -> np.ndarray:
    arr = np.asarray(open_image(path))
    if arr.shape != (32, 32, 3):
        raise DataError(f"Image {path} is {arr.shape[1]}x{arr.shape[0]}; CIFAR-10 images are "
                        f"32x32. Replace or delete the file.")
    return arr


def _decode(data_dir: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets
    ds = cifar10(data_dir, train=train, download=download)
    if isinstance(ds, datasets.CIFAR10):
        images, labels = np.asarray(ds.data), ds.targets
    else:
        paths = [p for p, _ in ds.samples]
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            images = np.stack(list(pool.map(_read_image, paths, chunksize=256)))
        labels = [y for _, y in ds.samples]
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64)


def _load_cache(path: Path, fingerprint: tuple[str, str]
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
    try:
        blob = torch.load(path, weights_only=True)
        images, labels = blob["images"], blob["labels"]
        ok = (blob["version"] == _CACHE_VERSION and tuple(blob["fingerprint"]) == fingerprint
              and images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
              and labels.shape == (images.shape[0],))
    except Exception:  # missing, truncated or foreign file: rebuild, never trust
        return None
    return (images, labels) if ok else None


def load_tensors(data_dir: str | os.PathLike, train: bool = True, download: bool = False,
                 cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split as uint8 ``N x 3 x 32 x 32`` plus int64 labels, decoded once, cached.

    The cache is rebuilt when any source file changes, and when it is truncated or foreign. When
    it cannot be written (full disk, read-only folder), one line on stderr says so and why.
    """
    root = Path(data_dir)
    if find_layout(root) is None:
        cifar10(root, train=train, download=download)  # downloads, or raises a DataError
    check_data_dir(root)                               # both splits, before decoding either
    fp = _fingerprint(root, train)
    path = cache_path(root, train)
    if cache:
        hit = _load_cache(path, fp)
        if hit is not None:
            return hit
    images, labels = _decode(root, train, download)
    if cache:
        try:
            save_atomic({"version": _CACHE_VERSION, "fingerprint": list(fp),
                         "images": images, "labels": labels}, path)
        except (OSError, CheckpointError) as err:  # full disk, read-only folder: not fatal
            print(f"cifar_helpers.data: the decoded images stay in memory only, not cached: {err} "
                  f"(CIFAR_HELPERS_CACHE=<folder> puts the cache elsewhere)", file=sys.stderr)
    return images, labels


def normalize(images_uint8: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """uint8 images to floats, exactly as ``ToTensor`` + ``Normalize(mean, std)`` compute them."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images_uint8.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images_uint8.device).view(-1, 1, 1)
    return images_uint8.float().div(255).sub(mean).div(std)


class TensorLoader:
    """Batches ``(inputs, labels)`` from uint8 tensors, normalized as the seed's transform does.

    It stands in for a ``DataLoader``: same values, no per-image Python work. With ``shuffle``,
    each epoch has its own order, fixed by ``seed`` and the epoch number (see ``set_epoch``).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, seed: int = 0, mean=MEAN, std=STD,
                 drop_last: bool = False, device: str | torch.device = "cpu"):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor N x C x H x W")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.seed, self.drop_last = seed, drop_last
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)[:, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)[:, None, None]
        self.epoch = 0

    @property
    def dataset(self) -> TensorDataset:
        """The images and labels, so ``len(loader.dataset)`` counts images as with a DataLoader."""
        return TensorDataset(self.images, self.labels)

    def __len__(self) -> int:
        n = self.labels.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order on the next pass (passes otherwise count up from 0)."""
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        """The index order of epoch ``epoch``."""
        n = self.labels.shape[0]
        if not self.shuffle:
            return torch.arange(n, device=self.device)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g).to(self.device)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """This loader's :func:`normalize`."""
        return normalize(images_uint8, self.mean, self.std)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.order(self.epoch)
        self.epoch += 1
        stop = len(self) * self.batch_size
        for start in range(0, stop, self.batch_size):
            b = idx[start:start + self.batch_size]
            yield self.normalize(self.images[b]), self.labels[b]


def make_loader(data_dir: str | os.PathLike, train: bool, batch_size: int, *, seed: int = 0,
                size: int | None = None, download: bool = False, fast: bool = True,
                num_workers: int = 0, mean=MEAN, std=STD) -> TensorLoader | DataLoader:
    """A loader for one split: the fast path, or a torchvision dataset + ``DataLoader``.

    Both give the same images, labels and normalization; the training split is shuffled.
    """
    if fast:
        images, labels = load_tensors(data_dir, train=train, download=download)
        idx = subset_indices(len(labels), size)
        if idx is not None:
            images, labels = images[idx], labels[idx]
        return TensorLoader(images, labels, batch_size, shuffle=train, seed=seed, mean=mean,
                            std=std)
    dataset = subset(cifar10(data_dir, train=train, transform=seed_transform(mean, std),
                             download=download), size)
    return dataloader(dataset, batch_size, shuffle=train, num_workers=num_workers, seed=seed)


def make_loaders(data_dir: str | os.PathLike, batch_size: int, *, seed: int = 0,
                 train_size: int | None = None, test_size: int | None = None,
                 download: bool = False, fast: bool = True, num_workers: int = 0
                 ) -> tuple[TensorLoader | DataLoader, TensorLoader | DataLoader]:
    """``(trainloader, testloader)`` from :func:`make_loader`."""
    kw = dict(seed=seed, download=download, fast=fast, num_workers=num_workers)
    return (make_loader(data_dir, True, batch_size, size=train_size, **kw),
            make_loader(data_dir, False, batch_size, size=test_size, **kw))


def images_at(loader: TensorLoader | DataLoader, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized images and labels at ``indices`` of either kind of loader's data set."""
    if isinstance(loader, TensorLoader):
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return loader.normalize(loader.images[idx]), loader.labels[idx]
    items = [loader.dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])

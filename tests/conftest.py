"""Tiny generated CIFAR-10 look-alikes in both layouts, built from the same pixels."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision import datasets

from cifar_helpers.data import CIFAR10_CLASSES, TV_FOLDER

TRAIN_PER_CLASS, TEST_PER_CLASS = 8, 4
REAL_DATA = os.environ.get("CIFAR10_DATA_DIR")


def make_pixels(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` images per class: noise around a class colour, so they are learnable."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    rng.shuffle(labels)
    base = (np.arange(10)[:, None] * np.array([25, 80, 140]) % 256)[labels]
    images = np.clip(base[:, None, None, :] + rng.integers(-40, 40, (len(labels), 32, 32, 3)), 0, 255)
    return images.astype(np.uint8), labels.astype(np.int64)


def write_folder(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """``root/split/<class>/NNNN.png`` (PNG: lossless, so pixels equal the pickles')."""
    counters = [0] * 10
    for img, y in zip(images, labels):
        d = root / split / CIFAR10_CLASSES[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{counters[y]:04d}.png")
        counters[y] += 1


def write_torchvision(root: Path, train: tuple, test: tuple) -> dict[str, str]:
    """torchvision's ``cifar-10-batches-py`` layout; returns each file's md5."""
    folder = root / TV_FOLDER
    folder.mkdir(parents=True)
    chunks = np.array_split(np.arange(len(train[1])), 5)
    files = {f"data_batch_{i + 1}": (train[0][c], train[1][c]) for i, c in enumerate(chunks)}
    files["test_batch"] = test
    md5 = {}
    for name, (imgs, labs) in files.items():
        blob = {"data": imgs.transpose(0, 3, 1, 2).reshape(len(labs), -1), "labels": labs.tolist()}
        (folder / name).write_bytes(pickle.dumps(blob))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}))
    for name in [*files, "batches.meta"]:
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return md5


@pytest.fixture(scope="session")
def tiny_pixels():
    return make_pixels(TRAIN_PER_CLASS, 0), make_pixels(TEST_PER_CLASS, 1)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, tiny_pixels) -> Path:
    """An image-folder copy: train/<class>/*.png, test/<class>/*.png."""
    root = tmp_path_factory.mktemp("tiny_folder")
    write_folder(root, "train", *tiny_pixels[0])
    write_folder(root, "test", *tiny_pixels[1])
    return root


@pytest.fixture(scope="session")
def _tiny_tv_files(tmp_path_factory, tiny_pixels):
    root = tmp_path_factory.mktemp("tiny_tv")
    return root, write_torchvision(root, *tiny_pixels)


@pytest.fixture
def tiny_tv(_tiny_tv_files, monkeypatch) -> Path:
    """torchvision's layout; its md5 table is patched to accept the generated files."""
    root, md5 = _tiny_tv_files
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]]
                                                        for i in range(1, 6)])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setitem(datasets.CIFAR10.meta, "md5", md5["batches.meta"])
    return root


@pytest.fixture(autouse=True)
def _private_cache(request, tmp_path, monkeypatch):
    """Keep each test's decoded-tensor cache in its own folder (the real data keeps its own)."""
    if request.node.get_closest_marker("realdata") is None:
        monkeypatch.setenv("CIFAR_HELPERS_CACHE", str(tmp_path / "cache"))


def copy_folder(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst

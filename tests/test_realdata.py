"""The regression tier: the real CIFAR-10 copy in CIFAR10_DATA_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifar_helpers import data

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = os.environ.get("CIFAR10_DATA_DIR")
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not DATA_DIR or not Path(DATA_DIR).is_dir(),
                       reason="CIFAR10_DATA_DIR does not point to the real CIFAR-10 copy; "
                              "set it to run the real-data tier (see README)"),
]


@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_fast_path_equals_torchvision_on_real_images(train):
    dataset = data.cifar10(DATA_DIR, train=train, transform=data.seed_transform())
    images, labels = data.load_tensors(DATA_DIR, train=train)
    assert len(labels) == len(dataset) == (50_000 if train else 10_000)
    assert torch.bincount(labels).tolist() == [len(labels) // 10] * 10
    loader = data.TensorLoader(images, labels, 1)
    for i in torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:300].tolist():
        x, y = dataset[i]
        assert torch.equal(loader.normalize(images[i:i + 1])[0], x) and labels[i].item() == y


@pytest.mark.slow
def test_notebooks_reproduce_their_stored_outputs(tmp_path):
    """nbval --nbval-lax: every cell runs; the cells tagged nbval-check-output must match."""
    # one language per lesson: the Chinese notebook carries the English run's outputs (tests/test_languages.py)
    notebooks = sorted(str(p) for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
                       if not p.name.endswith(".zh.ipynb"))
    env = {**os.environ, "CIFAR10_DATA_DIR": str(Path(DATA_DIR).resolve())}
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
                           "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path), *notebooks],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout.splitlines()[-1]

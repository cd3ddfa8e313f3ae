"""Data sources, errors, the fast path and its cache, against torchvision as the reference."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch._utils import ExceptionWrapper
from torchvision import datasets

from cifar_helpers import data
from conftest import TEST_PER_CLASS, TRAIN_PER_CLASS, copy_folder


def as_multiset(dataset) -> Counter:
    return Counter((bytes(dataset[i][0].numpy()), int(dataset[i][1])) for i in range(len(dataset)))


@pytest.mark.parametrize("layout", ["tiny_folder", "tiny_tv"])
def test_both_layouts_give_cifar10(layout, request):
    root = request.getfixturevalue(layout)
    train = data.cifar10(root, train=True, transform=data.seed_transform())
    test = data.cifar10(root, train=False, transform=data.seed_transform())
    assert tuple(train.classes) == data.CIFAR10_CLASSES
    assert (len(train), len(test)) == (10 * TRAIN_PER_CLASS, 10 * TEST_PER_CLASS)
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert -1 <= image.min() and image.max() <= 1 and 0 <= label < 10


def test_layouts_hold_the_same_images_and_labels(tiny_folder, tiny_tv):
    for train in (True, False):
        folder = data.cifar10(tiny_folder, train=train, transform=data.seed_transform())
        tv = data.cifar10(tiny_tv, train=train, transform=data.seed_transform())
        assert as_multiset(folder) == as_multiset(tv)


def test_missing_data_names_path_and_both_ways(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.cifar10(tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert str((tmp_path / "nowhere").resolve()) in msg
    assert "download=True" in msg and "CIFAR10_DATA_DIR" in msg and "train/<class>" in msg


def test_folder_without_cifar10_classes(tiny_folder, tmp_path):
    root = copy_folder(tiny_folder, tmp_path / "copy")
    (root / "train" / "cat").rename(root / "train" / "kitten")
    with pytest.raises(data.DataError, match=r"missing: \['cat'\].*unexpected: \['kitten'\]"):
        data.cifar10(root, train=True)
    with pytest.raises(data.DataError, match="missing"):
        data.load_tensors(root, train=True)


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split_is_found_before_any_decoding(split, tiny_folder, tmp_path, monkeypatch):
    root = copy_folder(tiny_folder, tmp_path / "copy")
    shutil.rmtree(root / split)
    monkeypatch.setattr(data, "_decode", lambda *a: pytest.fail("decoded before the check"))
    for load in (lambda: data.load_tensors(root, train=True),
                 lambda: data.make_loaders(root, 4, fast=False),
                 lambda: data.cifar10(root, train=split == "test")):   # the split that is there
        with pytest.raises(data.DataError, match=f"No folder {root / split}: .* needs both "
                                                 r"train/ and test/.*train/<class>/\*\.jpg"):
            load()


def test_empty_class_folder_is_found_before_any_decoding(tiny_folder, tmp_path, monkeypatch):
    root = copy_folder(tiny_folder, tmp_path / "copy")
    for f in (root / "test" / "dog").iterdir():
        f.unlink()
    monkeypatch.setattr(data, "_decode", lambda *a: pytest.fail("decoded before the check"))
    with pytest.raises(data.DataError, match=r"test: the class folders \['dog'\] hold no images"):
        data.load_tensors(root, train=True)
    (root / "test" / "dog" / "notes.txt").write_text("no image")   # a file, but not an image
    with pytest.raises(data.DataError, match="dog"):
        data.cifar10(root, train=False)


def test_incomplete_torchvision_copy(tiny_tv, tmp_path):
    root = copy_folder(tiny_tv, tmp_path / "copy")
    (root / data.TV_FOLDER / "test_batch").unlink()
    with pytest.raises(data.DataError, match=r"incomplete \(missing: \['test_batch'\]\)"):
        data.load_tensors(root, train=True)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A loopback HTTP server over ``tmp_path/served``; torchvision's download URL points into it."""
    import functools
    import http.server
    import threading
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(datasets.CIFAR10, "url",
                        f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz")
    yield folder
    server.shutdown()
    server.server_close()


def test_corrupt_download_is_a_clear_error(tmp_path, served):
    bad = served / "cifar-10-python.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:  # a valid archive with the wrong content (md5 differs)
        payload = b"not cifar"
        info = tarfile.TarInfo("junk.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(data.DataError) as err:
        data.cifar10(tmp_path / "data", download=True)
    msg = str(err.value)
    assert "corrupt" in msg and "delete" in msg and "CIFAR10_DATA_DIR" in msg


def test_failed_download_is_a_clear_error(tmp_path, served):  # nothing served: HTTP 404
    with pytest.raises(data.DataError, match="Could not get CIFAR-10 through torchvision"):
        data.cifar10(tmp_path / "data", download=True)


def test_unreadable_and_wrongly_sized_images(tiny_folder, tmp_path):
    root = copy_folder(tiny_folder, tmp_path / "broken")
    victim = next((root / "train" / "dog").iterdir())
    victim.write_bytes(b"\x89PNG not really")
    with pytest.raises(data.DataError, match=f"Cannot read image .*{victim.name}"):
        data.load_tensors(root, train=True)
    Image.new("RGB", (64, 48)).save(victim, format="PNG")
    with pytest.raises(data.DataError, match=r"is 64x48; CIFAR-10 images are 32x32"):
        data.load_tensors(root, train=True)


@pytest.mark.parametrize("cut", [300, -10])   # in the JPEG header; in the image data
def test_truncated_jpeg_names_the_file_on_every_path(cut, tiny_folder, tmp_path):
    root = copy_folder(tiny_folder, tmp_path / "broken")
    victim = root / "test" / "frog" / "0001.jpg"
    png = victim.with_suffix(".png")
    Image.open(png).save(victim, format="JPEG")
    png.unlink()
    victim.write_bytes(victim.read_bytes()[:cut])
    expected = (rf"^Cannot read image {victim}, a truncated or corrupt file \(.+\)\. "
                r"Extract the data copy again, or delete that file\.$")
    with pytest.raises(data.DataError, match=expected):
        data.load_tensors(root, train=False)                           # the fast path
    with pytest.raises(data.DataError, match=expected):                # a DataLoader's
        list(data.make_loader(root, False, 8, fast=False))
    try:                                  # in a worker process, then raised again in the main one
        data.open_image(str(victim))      # as the DataLoader does it (a real worker takes 5 s)
    except data.DataError:
        from_worker = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(data.DataError, match=expected):                # still one line
        from_worker.reraise()


def test_unwritable_cache_keeps_the_data_in_memory(tiny_folder, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CIFAR_HELPERS_CACHE", str(blocker / "cache"))   # under a file: unwritable
    images, _ = data.load_tensors(tiny_folder, train=False)
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("cifar_helpers.data: the decoded images stay in memory only, not "
                          f"cached: cannot write {blocker}/cache/")
    monkeypatch.setenv("CIFAR_HELPERS_CACHE", str(tmp_path / "ok"))
    assert torch.equal(data.load_tensors(tiny_folder, train=False)[0], images)
    assert capsys.readouterr() == ("", "")                             # quiet when all goes well


# --- the fast path -------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["tiny_folder", "tiny_tv"])
def test_tensor_loader_equals_dataloader(layout, request):
    root = request.getfixturevalue(layout)
    for train in (True, False):
        reference = data.dataloader(data.cifar10(root, train, data.seed_transform()), 7, shuffle=False)
        images, labels = data.load_tensors(root, train=train)
        fast = data.TensorLoader(images, labels, 7, shuffle=False)
        assert len(fast) == len(reference) and len(fast.dataset) == len(reference.dataset)
        for (a, y), (b, z) in zip(fast, reference, strict=True):
            assert torch.equal(a, b) and torch.equal(y, z)  # bit-identical to ToTensor + Normalize


def test_shuffle_differs_per_epoch_and_repeats_per_seed(tiny_folder):
    images, labels = data.load_tensors(tiny_folder, train=True)

    def orders(seed, epochs=3):
        loader = data.TensorLoader(images, labels, 5, shuffle=True, seed=seed)
        return [torch.cat([y for _, y in loader]) for _ in range(epochs)]

    first, again, other = orders(0), orders(0), orders(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))          # same seed: same orders
    assert not torch.equal(first[0], first[1])                            # a new order each epoch
    assert not torch.equal(first[0], other[0])                            # another seed: another order
    assert all(sorted(o.tolist()) == sorted(labels.tolist()) for o in first)  # every image once
    loader = data.TensorLoader(images, labels, 5, shuffle=True, seed=0)
    loader.set_epoch(2)
    assert torch.equal(torch.cat([y for _, y in loader]), first[2])       # set_epoch jumps there


def test_drop_last_and_batch_count(tiny_folder):
    images, labels = data.load_tensors(tiny_folder, train=True)
    n = len(labels)
    assert len(data.TensorLoader(images, labels, 7)) == -(-n // 7)
    loader = data.TensorLoader(images, labels, 7, drop_last=True)
    assert len(loader) == n // 7 and sum(len(y) for _, y in loader) == (n // 7) * 7


def test_cache_is_used_then_rebuilt_when_source_changes(tiny_folder, tmp_path, monkeypatch):
    root = copy_folder(tiny_folder, tmp_path / "copy")
    images, _ = data.load_tensors(root, train=True)
    cache = data.cache_path(root, train=True)
    assert cache.is_file()

    def no_decode(*a, **k):
        raise AssertionError("decoded again although nothing changed")
    with monkeypatch.context() as m:
        m.setattr(data, "_decode", no_decode)
        again, _ = data.load_tensors(root, train=True)
    assert torch.equal(images, again)

    victim = sorted((root / "train" / "airplane").iterdir())[0]
    Image.new("RGB", (32, 32), (1, 2, 3)).save(victim, format="PNG")
    os.utime(victim, ns=(1, 1))  # a different mtime and content
    changed, labels = data.load_tensors(root, train=True)
    k = data.cifar10(root, train=True).samples.index((str(victim), 0))
    assert changed[k].flatten(1).unique(dim=1).tolist() == [[1], [2], [3]]
    assert not torch.equal(changed, images)


def test_truncated_cache_is_rebuilt_not_trusted(tiny_folder):
    images, labels = data.load_tensors(tiny_folder, train=False)
    cache = data.cache_path(tiny_folder, train=False)
    blob = cache.read_bytes()
    cache.write_bytes(blob[: len(blob) // 2])
    again, again_labels = data.load_tensors(tiny_folder, train=False)
    assert torch.equal(images, again) and torch.equal(labels, again_labels)
    assert data._load_cache(cache, data._fingerprint(tiny_folder, False)) is not None  # rewritten whole


def test_cache_goes_beside_writable_data_else_user_cache(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR_HELPERS_CACHE")
    assert data.cache_path(tmp_path, True) == tmp_path.resolve() / ".cache" / "cifar10-train-uint8.pt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    readonly = tmp_path / "readonly"               # marked read-only: root could still write there
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        assert data.cache_path(readonly, True).is_relative_to(tmp_path / "xdg" / "cifar_helpers")
    finally:
        readonly.chmod(0o755)
    monkeypatch.setattr(os, "access", lambda *a: False)   # writable bits, but not for this user
    assert data.cache_path(tmp_path, True).is_relative_to(tmp_path / "xdg" / "cifar_helpers")


def test_subsets_are_fixed_shared_and_checked(tiny_folder):
    a, b = data.subset_indices(80, 20), data.subset_indices(80, 20)
    assert torch.equal(a, b) and len(set(a.tolist())) == 20 and a.tolist() == sorted(a.tolist())
    assert data.subset_indices(80, None) is None
    with pytest.raises(ValueError, match="only 80"):
        data.subset_indices(80, 81)
    fast, standard = (data.make_loader(tiny_folder, True, 4, size=20, fast=f) for f in (True, False))
    assert len(fast.dataset) == len(standard.dataset) == 20
    idx = [0, 5, 19]
    for (x, y), (u, v) in [(data.images_at(fast, idx), data.images_at(standard, idx))]:
        assert torch.equal(x, u) and torch.equal(y, v)
    assert len(set(data.images_at(fast, range(20))[1].tolist())) > 5   # not one class only


@pytest.mark.slow   # starts two spawned processes: 6-25 s
def test_dataloader_workers_run_under_spawn(tiny_folder):
    """What Windows and macOS do: workers import everything from modules, nothing from __main__."""
    import torch.multiprocessing as mp
    ds = data.cifar10(tiny_folder, train=False, transform=data.seed_transform())
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2,
                                         multiprocessing_context=mp.get_context("spawn"))
    assert sum(len(y) for _, y in loader) == len(ds)

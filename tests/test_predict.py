"""``cifar_helpers.predict``: any picture to a 32x32 input, the checkpoint's normalization, the
command line, and one clear error per bad input. Generated pictures and tiny models only."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from cifar_helpers import predict
from cifar_helpers.checkpoint import (CheckpointError, normalization_entry, normalization_of,
                                      save_atomic, save_model)
from cifar_helpers.data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, MEAN, STD
from cifar_helpers.models import ConvGroupNet, Net

ROOT = Path(__file__).resolve().parent.parent


def pattern(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful RGB picture (JPEG-friendly) with a bit of noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.stack([128 + 100 * np.sin(6 * x), 128 + 100 * np.cos(5 * y), 255 * x * y], -1)
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Checkpoints of a tiny Net (seed normalization recorded) and a tiny ConvGroupNet (none
    recorded: an old checkpoint), and the models themselves."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    net, modern = Net(4, 8).eval(), ConvGroupNet((4, 8, 8)).eval()
    for m in modern.modules():                    # BatchNorm statistics that are not 0/1
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    save_model(folder / "net.pth", net, CIFAR10_CLASSES, normalization=normalization_entry(MEAN, STD))
    save_model(folder / "modern.pth", modern, CIFAR10_CLASSES, epoch=1)
    return {"net": (folder / "net.pth", net), "modern": (folder / "modern.pth", modern)}


# ------------------------------------------------------------------ pictures to inputs

@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA", "I;16", "CMYK"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    rgb = Image.fromarray(pattern(40, 30))
    img = {"RGB": rgb, "L": rgb.convert("L"), "P": rgb.convert("P"), "RGBA": rgb.convert("RGBA"),
           "LA": rgb.convert("LA"), "CMYK": rgb.convert("CMYK"),
           "I;16": Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))}[mode]
    path = tmp_path / ("p.jpg" if mode == "CMYK" else "p.png")
    img.save(path)
    out = predict.load_rgb(path)
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode in ("L", "I;16"):                     # gray stays gray: R = G = B
        arr = np.asarray(out)
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    if mode == "I;16":                            # 16-bit values scaled back to 8 bits
        assert abs(np.asarray(out)[..., 0].astype(int) - np.asarray(rgb.convert("L"))).max() <= 1


def test_transparency_becomes_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0], rgba[:10, :, 3] = 255, 255      # red top half opaque, bottom transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(predict.load_rgb(tmp_path / "a.png"))
    assert (out[:10] == [255, 0, 0]).all() and (out[10:] == 255).all()
    pal = Image.fromarray(rgba[..., :3]).convert("P")       # palette with a transparent index
    pal.info["transparency"] = pal.getpixel((0, 19))
    pal.save(tmp_path / "p.png", transparency=pal.getpixel((0, 19)))
    assert (np.asarray(predict.load_rgb(tmp_path / "p.png"))[15, 5] == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(pattern(60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6                               # "rotate 90 clockwise to view"
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert predict.load_rgb(tmp_path / "phone.jpg").size == (40, 60)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_formats_and_sizes(tmp_path, fmt):
    for w, h in [(32, 32), (300, 200), (90, 400), (17, 23)]:
        path = tmp_path / f"x{w}x{h}.{fmt}"
        Image.fromarray(pattern(w, h)).save(path)
        inputs, small = predict.prepare(path, CIFAR10_MEAN, CIFAR10_STD)
        assert small.size == (32, 32) and inputs.shape == (3, 32, 32) and inputs.dtype == torch.float32


def test_centre_square_is_cropped_then_resized():
    # a wide picture: red centre square, blue side bars; only red must remain
    arr = np.zeros((64, 160, 3), np.uint8)
    arr[:, :48] = arr[:, 112:] = [0, 0, 255]
    arr[:, 48:112] = [255, 0, 0]
    small = np.asarray(predict.to_cifar_size(Image.fromarray(arr)))
    assert small.shape == (32, 32, 3) and (small == [255, 0, 0]).all()
    tall = np.asarray(predict.to_cifar_size(Image.fromarray(arr.transpose(1, 0, 2).copy())))
    assert (tall == [255, 0, 0]).all()


def test_shrinking_is_antialiased():
    # a one-pixel checkerboard shrinks to its mean gray, not to one of its colours (aliasing)
    board = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)
    small = np.asarray(predict.to_cifar_size(Image.fromarray(board).convert("RGB")), dtype=float)
    assert abs(small.mean() - 127.5) < 2 and small.std() < 3


def test_a_cifar_sized_picture_passes_unchanged(tmp_path):
    arr = pattern(32, 32)
    Image.fromarray(arr).save(tmp_path / "c.png")
    inputs, small = predict.prepare(tmp_path / "c.png", MEAN, STD)
    assert (np.asarray(small) == arr).all()
    expected = transforms.Normalize(MEAN, STD)(transforms.ToTensor()(Image.fromarray(arr)))
    assert torch.equal(inputs, expected)           # exactly the training data's values


# ------------------------------------------------------------------ checkpoints

def test_normalization_is_recorded_or_derived(nets):
    _, info, mean, std = predict.load_classifier(nets["net"][0])
    assert info["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3} and (mean, std) == (MEAN, STD)
    _, info, mean, std = predict.load_classifier(nets["modern"][0])
    assert "normalization" not in info and (mean, std) == (CIFAR10_MEAN, CIFAR10_STD)
    assert normalization_of({"model": "Net"}) == (MEAN, STD)
    assert normalization_of({"model": "Net", "run": {"recipe": {"normalize": "dataset"}}}) == (
        CIFAR10_MEAN, CIFAR10_STD)
    with pytest.raises(CheckpointError, match="positive std"):
        normalization_of({"normalization": {"mean": [0.5], "std": [0.0]}})


def test_training_records_the_loaders_normalization(tmp_path):
    from cifar_helpers import data, modern, train
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(8) % 10
    loader = data.TensorLoader(images, labels, 4, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    net = Net(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    train.save_training_state(tmp_path / "t.pth", net, opt, loader, 1, train.new_history())
    _, info = predict.load_model(tmp_path / "t.pth")
    assert normalization_of(info) == (CIFAR10_MEAN, CIFAR10_STD)
    preset = modern.get_preset("demo", epochs=1, batch_size=8, widths=(4, 4, 4), whiten=False,
                               muon_lr=0.0)
    modern.train(preset, images, labels, checkpoint=tmp_path / "m.pth", log=None)
    _, info = predict.load_model(tmp_path / "m.pth")
    assert info["normalization"] == normalization_entry(CIFAR10_MEAN, CIFAR10_STD)


def test_classify_files_matches_the_model(nets, tmp_path):
    paths = []
    for i, (w, h) in enumerate([(64, 48), (32, 32), (50, 90)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pattern(w, h, seed=i)).save(paths[-1])
    for key in ("net", "modern"):
        path, model = nets[key]
        net, info, mean, std = predict.load_classifier(path)
        results = predict.classify_files(paths, net, info["classes"], mean, std, k=4)
        inputs = torch.stack([predict.prepare(p, mean, std)[0] for p in paths])
        with torch.no_grad():
            probs = F.softmax(model(inputs), 1)
        for r, p in zip(results, probs):
            assert [t["class"] for t in r["top"]] == [CIFAR10_CLASSES[j] for j in p.topk(4).indices]
            assert [t["probability"] for t in r["top"]] == [round(v, 4) for v in p.topk(4).values.tolist()]


# ------------------------------------------------------------------ the command line

def run_main(args, capsys):
    code = predict.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def good_pictures(tmp_path):
    paths = [tmp_path / "wide.jpg", tmp_path / "gray.png", tmp_path / "alpha.webp"]
    Image.fromarray(pattern(120, 80)).save(paths[0])
    Image.fromarray(pattern(40, 40, 1)).convert("L").save(paths[1])
    Image.fromarray(pattern(64, 64, 2)).convert("RGBA").save(paths[2])
    return paths


@pytest.mark.parametrize("key", ["net", "modern"])
def test_cli_prints_top_k(nets, tmp_path, capsys, key):
    paths = good_pictures(tmp_path)
    code, out, err = run_main([*paths, "--checkpoint", nets[key][0], "--top", "2"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 3 and all(l.startswith(str(p) + ": ") for l, p in zip(lines, paths))
    assert all(len(l.split(": ", 1)[1].split(", ")) == 2 for l in lines)
    code, out, _ = run_main([*paths, "--checkpoint", nets[key][0], "--json"], capsys)
    rows = [json.loads(l) for l in out.splitlines()]
    assert code == 0 and [r["image"] for r in rows] == [str(p) for p in paths]
    for r in rows:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert {t["class"] for t in r["top"]} <= set(CIFAR10_CLASSES)


def bad_pictures(tmp_path) -> dict[str, tuple[Path, str]]:
    """Each kind of bad picture, and the words its error must contain."""
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture at all")
    buf = io.BytesIO()
    Image.fromarray(pattern(200, 200)).save(buf, "PNG")
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(pattern(200, 200)).save(buf, "JPEG")
    cut_jpg = tmp_path / "cut.jpg"
    cut_jpg.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "folder.png").mkdir()
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {"missing": (tmp_path / "missing.png", "no such file"),
            "text": (text, "not an image"),
            "truncated png": (cut_png, "truncated or corrupt"),
            "truncated jpeg": (cut_jpg, "truncated or corrupt"),
            "folder": (tmp_path / "folder.png", "not a file"),
            "empty": (empty, "not an image")}


def test_cli_names_each_bad_picture_and_still_classifies_the_good(nets, tmp_path, capsys):
    good = good_pictures(tmp_path)
    bad = bad_pictures(tmp_path)
    args = [good[0], *[p for p, _ in bad.values()], good[1]]
    code, out, err = run_main([*args, "--checkpoint", nets["modern"][0]], capsys)
    assert code == 1
    assert [l.split(": ")[0] for l in out.splitlines()] == [str(good[0]), str(good[1])]
    lines = err.splitlines()
    assert len(lines) == len(bad) + 1 and lines[-1] == f"cifar_helpers.predict: {len(bad)} of {len(args)} pictures could not be classified"
    for line, (kind, (path, words)) in zip(lines, bad.items()):
        assert line.startswith(f"cifar_helpers.predict: {path}: ") and words in line, (kind, line)
    code, out, err = run_main([bad["text"][0], "--checkpoint", nets["net"][0], "--json"], capsys)
    assert code == 1 and out == "" and "not an image" in err


def test_cli_refuses_bad_checkpoints(nets, tmp_path, capsys):
    picture = good_pictures(tmp_path)[0]
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 definitely not a torch file")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(nets["net"][0].read_bytes()[:500])
    weights = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)   # a state_dict of some other model
    alien = tmp_path / "alien.pth"
    save_atomic({"format": "cifar_helpers.checkpoint/1", "model": "ResNet50", "config": {},
                 "classes": list(CIFAR10_CLASSES), "state_dict": {}}, alien)
    cases = {tmp_path / "checkpoints" / "modern_net.pth": "run notebook 08_modern_recipe first",
             tmp_path / "nothing.pth": "No checkpoint at",
             corrupt: "corrupt or truncated", truncated: "corrupt or truncated",
             weights: "nor the state_dict of the seed's Net", alien: "'ResNet50' model"}
    for path, words in cases.items():
        code, out, err = run_main([picture, "--checkpoint", path], capsys)
        assert code == 2 and out == "" and err.startswith("cifar_helpers.predict: ") and words in err, (path, err)
        assert err.count("\n") == 1                        # one line, no traceback
    code, _, err = run_main([picture, "--checkpoint", nets["net"][0], "--top", "11"], capsys)
    assert code == 2 and "--top 11 must be between 1 and 10" in err


def test_cli_refuses_checkpoints_with_impossible_entries(nets, tmp_path, capsys, monkeypatch):
    picture = good_pictures(tmp_path)[0]
    blob = torch.load(nets["net"][0], weights_only=True)
    whole = tmp_path / "whole.pth"
    torch.save(nets["net"][1], whole)                       # the whole pickled module
    cases = {"nan_mean.pth": ({"normalization": {"mean": [0.5, float("nan"), 0.5], "std": [0.5] * 3}},
                              "nan_mean.pth: field 'normalization.mean' is [0.5, nan, 0.5]; it must "
                              "be 3 finite numbers (one per RGB channel)"),
             "two_std.pth": ({"normalization": {"mean": [0.5] * 3, "std": [0.5, 0.5]}},
                             "two_std.pth: field 'normalization.std' is [0.5, 0.5]; it must be 3 "
                             "finite numbers > 0"),
             "zero_std.pth": ({"normalization": {"mean": [0.5] * 3, "std": [0.5, 0.0, 0.5]}},
                              "field 'normalization.std' is [0.5, 0.0, 0.5]"),
             "huge.pth": ({"config": {**blob["config"], "num_classes": 10 ** 9}},
                          "huge.pth: field 'config.num_classes' is 1000000000, but 'classes' "
                          "names 10"),
             "float.pth": ({"config": {**blob["config"], "num_classes": 1e9}},
                           "field 'config.num_classes' is 1000000000.0"),
             "fewer.pth": ({"classes": list(CIFAR10_CLASSES[:9])},
                           "field 'config.num_classes' is 10, but 'classes' names 9")}
    built = []
    monkeypatch.setattr(Net, "__init__", lambda *a, **k: built.append(a))   # nothing built
    for name, (changes, words) in cases.items():
        save_atomic({**blob, **changes}, tmp_path / name)
        code, out, err = run_main([picture, "--checkpoint", tmp_path / name], capsys)
        assert code == 2 and out == "" and words in err and err.count("\n") == 1, (name, err)
    assert built == []
    code, out, err = run_main([picture, "--checkpoint", whole], capsys)
    assert code == 2 and err == (f"cifar_helpers.predict: {whole} is a whole pickled model "
                                 f"(cifar_helpers.models.Net, as torch.save(net) writes), not a "
                                 f"state dict, and cannot be loaded safely; where it was made, "
                                 f"re-save it with torch.save(net.state_dict(), '{whole}')\n")


def test_module_runs_from_the_shell(nets, tmp_path):
    picture = good_pictures(tmp_path)[0]
    done = subprocess.run([sys.executable, "-m", "cifar_helpers.predict", str(picture),
                           str(tmp_path / "missing.png"), "--checkpoint", str(nets["net"][0]), "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["image"] == str(picture)
    assert "missing.png: no such file" in done.stderr


def test_save_examples_writes_large_jpegs(tmp_path):
    images = torch.from_numpy(np.stack([pattern(32, 32, i) for i in range(10)])).permute(0, 3, 1, 2)
    labels = torch.arange(10)
    paths = predict.save_examples(images, labels, CIFAR10_CLASSES, tmp_path)
    assert [p.name for p in paths] == [f"{c}_{CIFAR10_CLASSES.index(c)}.jpg" for c in predict.EXAMPLE_CLASSES]
    sizes = [Image.open(p).size for p in paths]
    assert sizes == [(256, 256), (341, 256), (256, 256), (341, 256)]
    for p, c in zip(paths, predict.EXAMPLE_CLASSES):      # the crop undoes the frame: close to the original
        small = np.asarray(predict.to_cifar_size(predict.load_rgb(p)), dtype=float)
        original = images[CIFAR10_CLASSES.index(c)].permute(1, 2, 0).numpy().astype(float)
        assert np.abs(small - original).mean() < 6


def test_train_missing_makes_both_checkpoints_then_nothing(tiny_folder, tmp_path):
    """Notebook 09 opened alone: both networks are trained, then loadable; a second call (the
    files exist, as after notebooks 03 and 08) trains nothing."""
    from cifar_helpers.predict import load_classifier, train_missing
    ckpt, modern_ckpt = tmp_path / "a" / "cifar_net.pth", tmp_path / "b" / "modern_net.pth"
    lines = []
    made = train_missing(ckpt, modern_ckpt, tiny_folder, download=False, log=lines.append,
                         changes={"widths": (8, 16, 16), "epochs": 1})
    assert made == [str(ckpt), str(modern_ckpt)] and len(lines) == 2
    assert "trained the seed's Net" in lines[0] and "trained the modern recipe" in lines[1]
    assert load_classifier(ckpt)[1]["model"] == "Net"
    assert load_classifier(modern_ckpt)[1]["model"] == "ConvGroupNet"
    assert train_missing(ckpt, modern_ckpt, tiny_folder, log=lines.append) == [] and len(lines) == 2

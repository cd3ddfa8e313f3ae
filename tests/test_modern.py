"""The modern recipe's parts, checked against plain references: augmentations, schedule,
lookahead/EMA, TTA, whitening, presets, training and exact resume on tiny data."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cifar_helpers import data, modern
from cifar_helpers.checkpoint import CheckpointError
from cifar_helpers.models import ConvGroupNet
from cifar_helpers.train import NonFiniteLossError


def _images(n: int = 6, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.arange(n * 3 * h * w, dtype=torch.float32).view(n, 3, h, w)


def test_translate_matches_per_image_reference():
    x = _images()
    pad = 2
    shifts = torch.tensor([[0, 0], [-2, 1], [2, -2], [1, 2], [-1, -1], [2, 2]])
    out = modern.translate(x, shifts, pad)
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    for i, (dy, dx) in enumerate(shifts.tolist()):
        ref = padded[i, :, pad + dy:pad + dy + 8, pad + dx:pad + dx + 8]
        assert torch.equal(out[i], ref)
    assert torch.equal(out[0], x[0])                       # no shift: unchanged
    assert torch.equal(out[1][:, 2:, :-1], x[1][:, :-2, 1:])  # (dy, dx) = (-2, +1): content moves down-left
    assert torch.equal(modern.translate(x, shifts, 0), x)


def test_flip_matches_reference():
    x = _images()
    mask = torch.tensor([True, False, True, False, False, True])
    out = modern.flip_lr(x, mask)
    for i in range(len(x)):
        assert torch.equal(out[i], torch.flip(x[i], dims=[-1]) if mask[i] else x[i])


def test_epoch_batches_keep_labels_shapes_and_alternate_flips():
    torch.manual_seed(0)
    n = 64
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(n) % 10
    p = modern.get_preset("demo", batch_size=16, translate=0)
    flip_base = torch.rand(n, generator=torch.Generator().manual_seed(1)) < 0.5
    plain = modern.normalize(images)
    for epoch in (0, 1):
        seen = []
        for x, y in modern.epoch_batches(modern.prepare(images, p, None), labels, p, seed=3, epoch=epoch, flip_base=flip_base):
            assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
            for xi, yi in zip(x, y):
                # find the source image: the one whose (maybe mirrored) normalized pixels match
                hits = [j for j in range(n) if torch.equal(xi, plain[j]) or torch.equal(xi, plain[j].flip(-1))]
                assert hits, "an augmented image that is no flip of any source image"
                j = hits[0]
                assert yi.item() == labels[j].item()       # label preserved
                mirrored = not torch.equal(xi, plain[j]) or torch.equal(plain[j], plain[j].flip(-1))
                assert mirrored == bool(flip_base[j] ^ bool(epoch % 2))
                seen.append(j)
        assert sorted(seen) == list(range(n))              # every image once per epoch
    a = [y for _, y in modern.epoch_batches(plain, labels, p, 3, 0, flip_base)]
    b = [y for _, y in modern.epoch_batches(plain, labels, p, 3, 0, flip_base)]
    c = [y for _, y in modern.epoch_batches(plain, labels, p, 3, 1, flip_base)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))   # same seed and epoch: same batches
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_translate_in_batches_preserves_labels_and_content():
    n = 32
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(n) % 10
    p = modern.get_preset("demo", batch_size=8, flip=False, translate=2)
    plain = modern.normalize(images)
    for x, y in modern.epoch_batches(modern.prepare(images, p, None), labels, p, seed=0, epoch=0, flip_base=None):
        for xi, yi in zip(x, y):
            # the central 28x28 of a shifted image is a window of the source image
            found = [j for j in range(n) for dy in range(-2, 3) for dx in range(-2, 3)
                     if torch.equal(xi[:, 2:30, 2:30], plain[j][:, 2 + dy:30 + dy, 2 + dx:30 + dx])]
            assert found and labels[found[0]].item() == yi.item()


def test_lr_factor_triangle():
    total = 100
    f = [modern.lr_factor(s, total, 0.2, 0.2, 0.07) for s in range(total)]
    assert f[0] == pytest.approx(0.2)
    assert max(f) == pytest.approx(1.0) and f.index(max(f)) == 20
    assert f[10] == pytest.approx(0.6)                       # halfway up
    assert f[-1] == pytest.approx(1 + (0.07 - 1) * 79 / 80)
    assert all(a <= b for a, b in zip(f[:20], f[1:21])) and all(a >= b for a, b in zip(f[20:], f[21:]))
    assert modern.lr_factor(total, total, 0.2, 0.2, 0.07) == pytest.approx(0.07)


def test_lookahead_is_an_ema_that_pulls_weights_back():
    net = nn.Linear(3, 2)
    la = modern.Lookahead(net)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    moved = net.weight.clone()
    la.update(net, decay=0.75)
    expected = 0.75 * start["weight"] + 0.25 * moved
    assert torch.allclose(la.average["weight"], expected)
    assert torch.allclose(net.weight, expected)             # weights pulled to the average
    before = net.weight.clone()
    with torch.no_grad():
        net.weight.add_(5.0)
    la.update(net, decay=1.0)                               # decay 1: back to the average
    assert torch.equal(net.weight, before)


def test_tta_levels_average_the_right_views():
    torch.manual_seed(0)
    net = ConvGroupNet((8, 8, 8)).eval()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    x = modern.normalize(images)
    with torch.no_grad():
        plain, mirror = net(x), net(x.flip(-1))
        p = F.pad(x, (1,) * 4, mode="reflect")
        up, down = p[..., :32, :32], p[..., 2:, 2:]
        m = lambda v: 0.5 * net(v) + 0.5 * net(v.flip(-1))
        level2 = 0.5 * m(x) + 0.25 * m(up) + 0.25 * m(down)
    assert torch.allclose(modern.predict_logits(net, images, 0), plain, atol=1e-5)
    assert torch.allclose(modern.predict_logits(net, images, 1), 0.5 * plain + 0.5 * mirror, atol=1e-5)
    assert torch.allclose(modern.predict_logits(net, images, 2), level2, atol=1e-5)
    assert torch.allclose(modern.predict_logits(net, images, 2, batch_size=2), level2, atol=1e-5)


def test_whitening_decorrelates_patches():
    torch.manual_seed(0)
    base = torch.rand(200, 1, 16, 16)
    images = torch.cat([base, 0.5 * base + 0.1 * torch.rand(200, 1, 16, 16),
                        torch.rand(200, 1, 16, 16)], 1)       # correlated channels
    net = ConvGroupNet((8, 8, 8))
    modern.init_whitening(net, images, eps=0.0)
    with torch.no_grad():
        out = F.conv2d(images, net.whiten.weight[:12])           # the 12 positive filters
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = flat.T @ flat / len(flat)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.equal(net.whiten.weight[12:], -net.whiten.weight[:12])


def test_presets_and_bad_settings():
    assert modern.get_preset("auto", "cpu").name == "cpu10"
    assert modern.get_preset("auto", "cuda").name == "gpu94"
    assert all(modern.get_preset(name).name == name for name in modern.PRESETS)  # each one valid
    assert modern.get_preset("cpu5", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="preset='fast' is unknown.*cpu10"):
        modern.get_preset("fast")
    with pytest.raises(ValueError, match=r"unknown preset field\(s\) \['epoch'\]"):
        modern.get_preset("demo", epoch=3)
    with pytest.raises(ValueError, match=r"epochs must be in \(0, 1000\].*lr must be > 0"):
        modern.get_preset("demo", epochs=0, lr=-1)
    with pytest.raises(ValueError, match="tta must be 0, 1 or 2"):
        modern.get_preset("demo", tta=3)
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        modern.autocast_dtype(modern.get_preset("demo", precision="fp16"), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"val_size=50 must be in \[0, 50\)"):
        modern.split_train(torch.zeros(50), 50)


def test_split_is_disjoint_and_fixed():
    labels = torch.arange(100)
    tr, va = modern.split_train(labels, 10)
    assert len(va) == 10 and len(tr) == 90 and not set(tr.tolist()) & set(va.tolist())
    tr2, va2 = modern.split_train(labels, 10)
    assert torch.equal(va, va2)


def _tiny_run(tmp_path, preset, seed=0, **kw):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (96,), generator=g)
    return modern.train(preset, images, labels, seed=seed, **{"log": None, **kw})


TINY = dict(widths=(8, 16, 16), batch_size=16, epochs=3, ema_start=1, whiten_bias_epochs=1,
            precision="fp32")


def test_train_same_seed_same_weights_and_report(tmp_path):
    p = modern.get_preset("demo", **TINY)
    a, ra = _tiny_run(tmp_path, p)
    b, rb = _tiny_run(tmp_path, p)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    assert ra["history"]["train_loss"] == rb["history"]["train_loss"]
    assert ra["steps"] == 18 and ra["train_images"] == 288
    c, _ = _tiny_run(tmp_path, p, seed=1)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_resume_after_a_crash_is_bit_identical(tmp_path):
    p = modern.get_preset("demo", **{**TINY, "epochs": 2.5})
    full, report = _tiny_run(tmp_path, p, checkpoint=tmp_path / "full.pt")
    assert torch.load(tmp_path / "full.pt", weights_only=True)["step"] == report["steps"] == 15

    class Crash(Exception):
        pass

    def crash_in_epoch_2(msg: str) -> None:     # logged after epoch 2, before its checkpoint
        if msg.startswith("epoch  2"):
            raise Crash

    part = tmp_path / "part.pt"
    with pytest.raises(Crash):
        _tiny_run(tmp_path, p, checkpoint=part, log=crash_in_epoch_2)
    assert torch.load(part, weights_only=True)["epoch"] == 1
    resumed, r2 = _tiny_run(tmp_path, p, checkpoint=part, resume=True)
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    assert r2["history"]["train_loss"] == report["history"]["train_loss"]
    with pytest.raises(CheckpointError, match="other settings.*preset"):
        _tiny_run(tmp_path, modern.get_preset("demo", **{**TINY, "lr": 5.0}), checkpoint=part, resume=True)


@pytest.mark.parametrize("changes, message", [
    (dict(epochs="five"), "preset field epochs='five' must be a number, e.g. epochs=2"),
    (dict(epochs=1e999), "preset field epochs=inf must be a finite number, e.g. epochs=2"),
    (dict(flip="maybe"), "preset field flip='maybe' must be True or False, e.g. flip=True"),
    (dict(flip=1), "preset field flip=1 must be True or False"),
    (dict(batch_size=5.5), "preset field batch_size=5.5 must be a whole number, e.g. "
                           "batch_size=512"),
    (dict(tta=True), "preset field tta=True must be a whole number"),
    (dict(widths=[8, 16]), r"widths=\[8, 16\] must be three whole numbers, e.g. "
                           r"widths=\(32, 128, 256\)"),
    (dict(lr=1e30), r"lr must be > 0 and <= 1000"),
    (dict(epochs=1001), r"epochs must be in \(0, 1000\]"),
    (dict(precision=16), "preset field precision=16 must be a string"),
])
def test_bad_preset_values_are_named_with_an_example(changes, message):
    with pytest.raises(ValueError, match=message):
        modern.get_preset("demo", **changes)


def test_whole_floats_become_ints_and_the_cli_refuses_bad_values(capsys):
    p = modern.get_preset("demo", batch_size=16.0, widths=[8, 16, 16])
    assert p.batch_size == 16 and type(p.batch_size) is int and p.widths == (8, 16, 16)
    for bad in ("epochs=five", "epochs=1e999", "lr=1e30", "flip=maybe"):
        with pytest.raises(SystemExit) as exit_:
            modern.main(["--preset", "demo", "--set", bad, "--data-dir", "nowhere"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("cifar_helpers.modern: ")
        assert err.count("\n") == 1 and "Traceback" not in err


def test_diverging_run_names_epoch_and_step(tmp_path):
    p = replace(modern.get_preset("demo", **TINY), lr=1e30)   # beyond get_preset's bounds
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step \d+: .*lower learning rate"):
        _tiny_run(tmp_path, p)


def test_too_few_images_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        _tiny_run(tmp_path, modern.get_preset("demo", **{**TINY, "batch_size": 200}))


def test_sgd_groups_of_the_muon_optimizer_match_torch_sgd():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(8, 5), torch.randn(8, 3)
    ours = modern.NesterovMuon([dict(params=a.parameters(), lr=0.1, weight_decay=0.01)], momentum=0.85)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01)
    for _ in range(5):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            F.mse_loss(net(x), y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_orthogonalize_and_muon_step():
    torch.manual_seed(0)
    g = torch.randn(16, 40) * torch.logspace(-2, 1, 40)           # badly conditioned
    s = torch.linalg.svdvals(modern.orthogonalize(g).float())
    assert s.max() < 1.6 and s.min() > 0.3                          # all pushed towards 1
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 30
    assert modern.orthogonalize(g.T).shape == (40, 16)
    conv = nn.Conv2d(4, 8, 3, bias=False)
    opt = modern.NesterovMuon([dict(params=[conv.weight], lr=0.1, muon=True, momentum=0.6)], momentum=0.85)
    before = conv.weight.detach().clone()
    conv(torch.randn(2, 4, 6, 6)).square().sum().backward()
    opt.step()
    assert not torch.equal(before, conv.weight)
    rescaled = before * (8 ** 0.5 / before.norm())
    step = (conv.weight - rescaled).reshape(8, -1)                   # the orthogonalized update
    assert torch.allclose(step.norm(), torch.tensor(0.1 * 8 ** 0.5), rtol=0.5)


def test_ladder_switches_techniques_on_one_at_a_time():
    base = modern.get_preset("cpu5")
    steps = list(modern.ladder(base).values())
    assert not steps[0].whiten and steps[0].translate == 0 and steps[0].tta == 0
    assert steps[0].muon_lr == 0 and not steps[0].lookahead
    final = replace(steps[-1], name=base.name, tta=base.tta)
    assert final == base                                           # the last step is the preset


def test_cli_with_val_size_scores_the_held_out_images_and_never_reads_the_test_set(
        tiny_folder, monkeypatch, capsys):
    read = []
    load = data.load_tensors
    monkeypatch.setattr(data, "load_tensors", lambda d, train=True, **kw: read.append(train) or load(d, train, **kw))
    result = modern.main(["--data-dir", str(tiny_folder), "--preset", "demo", "--device", "cpu",
                          "--val-size", "20", "--set", "batch_size=16", "--set", "widths=[8,16,16]"])
    assert read == [True] and result["scored_on"] == "val"
    assert result["train_images"] == 2 * (60 // 16) * 16            # 60 kept, 2 epochs of 3 batches
    assert "val accuracy" in capsys.readouterr().err                  # logged every epoch


@pytest.mark.parametrize("capability, fast", [((7, 5), False), ((8, 0), True), ((9, 0), True)],
                         ids=["T4", "A100", "H100"])
def test_a_gpu_without_fast_bf16_trains_in_float16(monkeypatch, capability, fast):
    """Colab's T4 (compute capability 7.5) only emulates bfloat16: the recipe picks float16."""
    from cifar_helpers import devices
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert devices.supports_bf16("cuda") is fast
    want = torch.bfloat16 if fast else torch.float16
    assert modern.autocast_dtype(modern.get_preset("demo"), torch.device("cuda")) is want


def test_float16_steps_go_through_a_loss_scaler(monkeypatch, tmp_path):
    """The float16 path (a T4) scales the loss, as torch.amp prescribes; bf16/fp32 do not."""
    made = []
    real = torch.amp.GradScaler

    class Recording(real):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append(self)

        def step(self, optimizer, *args, **kw):
            self.steps = getattr(self, "steps", 0) + 1
            return super().step(optimizer, *args, **kw)

    monkeypatch.setattr(torch.amp, "GradScaler", Recording)
    monkeypatch.setattr(modern, "autocast_dtype", lambda preset, device: torch.float16)
    preset = modern.get_preset("demo", **{**TINY, "epochs": 1})
    net, report = _tiny_run(tmp_path, preset)
    assert made and made[0].is_enabled() and made[0].steps == report["steps"] > 0
    assert report["precision"] == "float16" and torch.isfinite(
        torch.tensor(report["history"]["train_loss"])).all()
    monkeypatch.setattr(modern, "autocast_dtype", lambda preset, device: None)
    made.clear()
    _tiny_run(tmp_path, preset)
    assert not made[0].is_enabled()


def test_no_gpu_note_says_how_to_switch_one_on(monkeypatch):
    import sys
    from cifar_helpers.devices import no_gpu_note
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert "carries on with the CPU" in no_gpu_note()
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert "Runtime > Change runtime type" in no_gpu_note()
    monkeypatch.delitem(sys.modules, "google.colab")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert "Accelerator" in no_gpu_note()
    assert "GPU T4 x2" in no_gpu_note(several=True)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    assert "Apple" in no_gpu_note() and "Apple" not in no_gpu_note(several=True)
    assert "two or more NVIDIA GPUs" in no_gpu_note(several=True)

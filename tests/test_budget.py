"""The modern recipe's time budget (``--budget``): the probe, the choice of net, a schedule that
follows the clock, resume, and ``bench budget``'s JSON line, on tiny data with a fake clock."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial

import pytest
import torch

from cifar_helpers import bench, modern
from cifar_helpers.runstate import CheckpointError

TINY = modern.get_preset("demo", widths=(8, 16, 16), batch_size=16, precision="fp32")
N = 96                                     # tiny training images: 6 steps of 16 per epoch


class FakeClock:
    """Seconds that pass only when a test says so: ``dt`` a training step, as asked a probe."""

    def __init__(self, dt: float = 1 / 6):
        self.now, self.dt, self.steps = 0.0, dt, 0

    def __call__(self) -> float:
        return self.now

    def step(self, step: int, rank: int = 0) -> None:   # stands in for runstate.step_hook
        self.now += self.dt
        self.steps += 1

    def measure(self, speeds: dict[str, float]):
        """A probe that takes the seconds it is given and reports ``speeds[preset.name]``."""
        def probe(preset, device, steps, seconds, warm_steps, clock):
            self.now += seconds
            return speeds[preset.name]
        return probe


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(modern, "step_hook", fake.step)
    return fake


def _data(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


def _plan(clock: FakeClock, seconds: float = 20.0, speed: float = 96.0) -> modern.Budget:
    """At ``speed`` images/s a tiny step of 16 images takes 1/6 s: the fake clock's ``dt``."""
    return modern.plan_budget(seconds, "cpu", train_images=N, clock=clock, warm=False,
                              measure=clock.measure({TINY.name: speed}), candidates=[TINY])


def _run(plan: modern.Budget, clock: FakeClock, **kw) -> tuple[torch.nn.Module, dict]:
    return modern.train(plan.preset, *_data(), budget=plan, clock=clock, log=None, **kw)


def test_a_budget_run_ends_on_time_at_the_schedule_end(clock):
    plan = _plan(clock)
    assert plan.probe_seconds <= 0.05 * plan.budget_seconds
    assert plan.train_seconds == pytest.approx(20 - plan.probe_seconds)
    assert plan.preset.epochs == pytest.approx(plan.train_seconds)     # 96 img/s, 96 images
    _, report = _run(plan, clock)
    used = report["train_seconds"] + plan.probe_seconds
    assert 0.95 * 20 <= used <= 1.05 * 20
    assert report["final_lr_factor"] == TINY.lr_end == 0.0
    assert report["epochs_done"] == pytest.approx(plan.preset.epochs, abs=1 / 6 + 1e-9)
    assert report["budget_seconds"] == 20


def test_a_slow_down_mid_run_still_ends_on_time(clock, monkeypatch):
    plan = _plan(clock)
    planned = round(plan.train_seconds / clock.dt)

    def slowing(step: int, rank: int = 0) -> None:
        clock.step(step)
        if clock.steps == planned // 2:
            clock.dt *= 3                         # the machine gets busy half-way through
    monkeypatch.setattr(modern, "step_hook", slowing)
    _, report = _run(plan, clock)
    assert report["train_seconds"] + plan.probe_seconds <= 1.05 * 20
    assert report["train_seconds"] >= plan.train_seconds - 3 * (1 / 6)
    assert report["steps"] < planned * 0.75                # far fewer steps than planned...
    assert report["final_lr_factor"] == TINY.lr_end        # ...yet the schedule reached its end


def test_the_lr_follows_time_not_steps(clock, monkeypatch):
    seen = []
    real = modern.lr_factor
    monkeypatch.setattr(modern, "lr_factor", lambda *a: seen.append(a[0] / a[1]) or real(*a))
    preset = replace(TINY, warmup=0.25, lr_start=0.2, lr_end=0.1)
    plan = replace(_plan(clock), preset=preset)
    _run(plan, clock)
    # evenly spaced steps: progress rises by dt / train_seconds a step, from 0 to exactly 1
    assert seen[0] == 0 and seen[-1] == 1
    gaps = [b - a for a, b in zip(seen, seen[1:-1])]
    assert max(gaps) == pytest.approx(min(gaps), rel=1e-3)
    assert gaps[0] == pytest.approx(clock.dt / plan.train_seconds, rel=1e-3)


def test_the_probe_takes_at_most_five_percent_of_the_budget(clock):
    for seconds in (10, 60, 600):
        plan = _plan(clock, seconds)
        assert 0 < plan.probe_seconds <= 0.05 * seconds
        assert plan.train_seconds + plan.probe_seconds == pytest.approx(seconds)


def test_a_candidate_too_slow_to_probe_in_its_share_keeps_its_warm_up_speed(clock, monkeypatch):
    """30 s on a crowded machine: one step of cpu5 (batch 512 at 260 img/s) takes 2 s, more than
    the probe's share (0.6 s a candidate); its warm-up's speed stands in, the probe stays short."""
    rough = {"cpu10": 1000.0, "cpu5": 260.0}

    def warm_up(preset, device):
        clock.now += 5.0                          # set-up: not counted
        return rough[preset.name]
    monkeypatch.setattr(modern, "warm_up", warm_up)
    plan = modern.plan_budget(30, "cpu", clock=clock, measure=clock.measure({"cpu10": 990.0}))
    assert plan.warmup_seconds == 10 and plan.probe_seconds <= 0.05 * 30
    assert plan.images_per_second == {"cpu10": 990.0, "cpu5": 260.0}
    assert "cpu10 990 img/s, cpu5 260 img/s (warm-up)" in plan.reason


def test_the_probe_takes_turns_so_a_slow_down_hits_every_candidate(clock, monkeypatch):
    """The machine halves its speed halfway through the probe. Measured one after the other,
    the second candidate would look half as fast as it is; in turns, both see the same
    machine. A candidate with long steps gets fewer, longer turns (3 steps at least)."""
    base, order = {"cpu10": 900.0, "cpu5": 1800.0}, []
    share = 0.8 * modern.PROBE_SHARE * 600 / 2        # each candidate's: 12 s of 600
    turn = share / modern.PROBE_ROUNDS

    def measure(preset, device, steps, seconds, warm_steps, clock):
        order.append((preset.name, seconds))
        speed = base[preset.name] * (0.5 if clock() >= share else 1.0)   # the second half
        clock.now += seconds
        return speed
    plan = modern.plan_budget(600, "cpu", clock=clock, warm=False, measure=measure)
    assert order == [("cpu10", turn), ("cpu5", turn)] * modern.PROBE_ROUNDS
    assert plan.images_per_second == {"cpu10": 0.75 * 900, "cpu5": 0.75 * 1800}
    order.clear()
    monkeypatch.setattr(modern, "warm_up", lambda p, d: {"cpu10": 1000.0, "cpu5": 100.0}[p.name])
    modern.plan_budget(600, "cpu", clock=clock, measure=measure)   # a cpu5 step: 5.1 of 12 s
    assert order == [("cpu10", turn), ("cpu5", share)] + [("cpu10", turn)] * 3


def test_the_probe_freezes_the_whitening_bias_in_trainings_share_of_steps(monkeypatch):
    # training freezes the first conv after whiten_bias_epochs (3 of cpu10's 12 epochs), and a
    # frozen first conv skips its backward pass: the probe's steps mix both as training does
    learns = [modern.whiten_bias_learns(modern.PRESETS["cpu10"], k) for k in range(80)]
    assert learns[:8] == [True, False, False, False] * 2 and sum(learns) == 20
    short = modern.shorten(modern.PRESETS["cpu5"], 2.2)      # a budget's plan keeps the share
    assert abs(sum(modern.whiten_bias_learns(short, k) for k in range(110)) - 30) <= 1
    assert all(modern.whiten_bias_learns(replace(TINY, whiten=False), k) for k in range(16))
    nets, seen = [], []
    real_init, real_backward = modern.ConvGroupNet.__init__, torch.Tensor.backward

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        nets.append(self)

    def backward(loss, *args, **kwargs):
        seen.append(nets[-1].whiten.bias.requires_grad)
        return real_backward(loss, *args, **kwargs)
    monkeypatch.setattr(modern.ConvGroupNet, "__init__", init)
    monkeypatch.setattr(torch.Tensor, "backward", backward)
    modern.step_throughput(TINY, "cpu", steps=14, warm_steps=2)
    expected = [modern.whiten_bias_learns(TINY, k) for k in range(16)]
    assert True in expected and False in expected
    assert seen == expected and not nets[-1].whiten.weight.requires_grad


def test_the_probe_stops_before_a_step_that_would_overrun(monkeypatch):
    times = iter([0.0, 0.1, 0.3, 0.5, 0.7, 0.7])     # steps of 0.2 s after 0.1 s of set-up
    speed = modern.step_throughput(TINY, "cpu", steps=100, seconds=0.75, warm_steps=0,
                                   clock=lambda: next(times))
    assert speed == pytest.approx(3 * 16 / 0.6)          # 3 steps: a 4th would end at 0.9 s


@pytest.mark.parametrize("seconds, chosen", [(60, "cpu5"), (600, "cpu5"), (720, "cpu10")])
def test_the_wide_net_once_it_reaches_its_epochs_else_the_narrow_one(clock, seconds, chosen):
    speeds = {"cpu10": 900.0, "cpu5": 1250.0}               # about this machine's
    # the wide net needs modern.MIN_EPOCHS["cpu10"] = 10 epochs, and asks for a fifth more in
    # case the machine slows down: 12. At 900 img/s 600 s give it 10.4, 720 s 12.4
    plan = modern.plan_budget(seconds, "cpu", clock=clock, warm=False,
                              measure=clock.measure(speeds))
    assert plan.preset.name == chosen and plan.images_per_second == speeds
    # the fake probe takes 4 % of the budget; the rest trains at the chosen net's speed
    assert plan.preset.epochs == round(0.96 * seconds * speeds[chosen] / 50_000, 2)
    base = modern.PRESETS[chosen]
    assert plan.preset == modern.shorten(base, plan.preset.epochs)   # its phases scaled too
    assert plan.reason.startswith(f"budget {seconds} s: probe ")
    assert "cpu10 900 img/s, cpu5 1,250 img/s" in plan.reason
    assert f"-> {chosen} net ({','.join(map(str, base.widths))}), batch {base.batch_size}" \
        in plan.reason and "not bit-reproducible" in plan.reason
    assert ("cpu10 gets the 12 epochs it asks for (10 + 20% in reserve)" if chosen == "cpu10"
            else "cpu10 would get 10.4 of the 12 epochs it asks for (10 + 20% in reserve)"
            if seconds == 600 else "cpu10 would get") in plan.reason and "\n" not in plan.reason


def test_bad_budgets_are_refused_before_any_work():
    for bad in (0, 5, -1, float("inf"), float("nan"), "60", True):
        with pytest.raises(ValueError, match="must be a number of seconds >= 10, e.g. --budget"):
            modern.plan_budget(bad, "cpu", measure=None, warm=False)


def test_a_budget_run_resumes_on_the_same_schedule_and_refuses_another_budget(clock, tmp_path):
    plan = _plan(clock, 12)
    _, full = _run(plan, clock)

    class Crash(Exception):
        pass

    def crash_in_epoch_2(msg: str) -> None:
        if msg.startswith("epoch  2"):
            raise Crash

    part = tmp_path / "part.pt"
    clock.now = 0.0
    with pytest.raises(Crash):
        modern.train(plan.preset, *_data(), budget=plan, clock=clock, log=crash_in_epoch_2,
                     checkpoint=part)
    saved = torch.load(part, weights_only=True)
    assert saved["epoch"] == 1 and saved["seconds"] > 0 and not saved["finished"]
    assert saved["run"]["budget_seconds"] == 12 and saved["run"]["budget"]["reason"] == plan.reason

    again = modern.resume_or_plan(12, "cpu", part, resume=True, warm=False)
    assert again == plan                                    # no new probe: the saved choice
    clock.now = 1000.0                                      # the wall clock moved on meanwhile
    _, resumed = _run(again, clock, checkpoint=part, resume=True)
    assert resumed["resumed_from"] == 1 and resumed["steps"] == full["steps"]
    assert resumed["train_seconds"] == pytest.approx(full["train_seconds"])
    assert resumed["history"]["seconds"] == pytest.approx(full["history"]["seconds"])
    assert resumed["final_lr_factor"] == TINY.lr_end
    with pytest.raises(CheckpointError, match=r"budget_seconds: 12.0 in the checkpoint, 30.0 now"):
        modern.resume_or_plan(30, "cpu", part, resume=True, warm=False)
    with pytest.raises(CheckpointError, match=r"budget_seconds: 12.0 in the checkpoint, None now"):
        modern.train(plan.preset, *_data(), checkpoint=part, resume=True, log=None)
    with pytest.raises(ValueError, match="needs the budget's own preset"):
        modern.train(TINY, *_data(), budget=plan, log=None)


def test_bench_budget_prints_one_json_line(clock, monkeypatch, tiny_folder, capsys):
    monkeypatch.setattr(modern, "plan_budget", partial(
        modern.plan_budget, clock=clock, warm=False, candidates=[TINY],
        measure=clock.measure({TINY.name: 96.0})))
    monkeypatch.setattr(modern, "train", partial(modern.train, clock=clock))
    assert bench.main(["budget", "--budget", "12", "--data-dir", str(tiny_folder),
                       "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in out if line.startswith("{")]
    assert len(rows) == 1 and any(line.startswith("# budget 12 s: probe") for line in out)
    row = rows[0]
    for key in ("budget_seconds", "train_seconds", "probe_seconds", "setup_seconds", "widths",
                "batch_size", "epochs", "precision", "test_accuracy", "cpu", "cores", "bf16",
                "reproducible"):
        assert key in row, key
    assert row["widths"] == [8, 16, 16] and row["batch_size"] == 16 and not row["reproducible"]
    assert row["train_seconds"] + row["probe_seconds"] <= 1.05 * 12
    assert row["cpu"] and row["cores"] >= 1 and row["precision"] == "float32"


def test_bench_fast_with_a_budget_is_the_same_path(monkeypatch):
    called = []
    monkeypatch.setattr(bench, "budget", lambda *a: called.append(a) or [])
    assert bench.main(["fast", "--budget", "30", "--seeds", "2", "--data-dir", "d"]) == 0
    assert called == [("d", 30.0, "auto", 2, 0, 0)]


@pytest.mark.parametrize("argv, message", [
    (["inference", "--checkpoint", "x.pth", "--threads", "0"], "--threads 0 must be at least 1"),
    (["inference", "--checkpoint", "x.pth", "--calls", "-1"], "--calls -1 must be at least 1"),
    (["fast", "--seeds", "0"], "--seeds 0 must be at least 1"),
    (["budget", "--budget", "5"], "budget=5.0 must be a number of seconds >= 10"),
    (["fast", "--budget", "30", "--preset", "cpu5"], "--budget chooses the preset itself"),
])
def test_bench_refuses_bad_counts_in_one_line(argv, message, capsys):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cifar_helpers.bench: {message}") and err.count("\n") == 1


def test_modern_cli_refuses_a_budget_with_a_preset(capsys):
    with pytest.raises(SystemExit) as exit_:
        modern.main(["--budget", "60", "--preset", "cpu5", "--data-dir", "nowhere"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("cifar_helpers.modern: --budget chooses the preset itself; "
                                       "leave out --preset and --set\n")


@pytest.mark.slow
def test_a_real_clock_budget_run_from_the_command_line(monkeypatch, tiny_folder, capsys):
    """The CLI end to end with the real clock and a real probe of a tiny net."""
    monkeypatch.setattr(modern, "PRESETS", {**modern.PRESETS, "cpu5": TINY})
    monkeypatch.setitem(modern.BUDGET_CANDIDATES, "cpu", ("cpu5",))
    result = modern.main(["--budget", "10", "--data-dir", str(tiny_folder), "--device", "cpu"])
    assert result["train_seconds"] + result["probe_seconds"] <= 10 * 1.05
    assert result["train_seconds"] >= 8 and result["final_lr_factor"] == TINY.lr_end
    assert result["probe_seconds"] <= 0.5
    assert "budget 10 s: probe" in capsys.readouterr().err


def test_too_few_images_for_any_candidate_is_refused_before_the_probe(clock):
    def measure(*args, **kwargs):
        raise AssertionError("probed")
    with pytest.raises(ValueError, match=r"80 training images are fewer than one batch of every "
                       r"budget candidate \(cpu10 128, cpu5 512\); train a preset instead"):
        modern.plan_budget(60, "cpu", train_images=80, clock=clock, warm=False, measure=measure)

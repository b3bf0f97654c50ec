import math
from functools import partial

import numpy as np
import pytest
import torch

from asr import checkpoint
from asr.training import TrainConfig
from asr.errors import AsrError


@pytest.mark.parametrize("augment, optimizer", [(False, "adamw"), (True, "adamw"), (False, "muon")],
                         ids=["plain", "waveform-augment", "muon"])
def test_resume_gives_the_same_weights(ctc_corpus, tmp_path, augment, optimizer, ctc_trainer, waveform_augment):
    """N steps straight == N/2 steps, a resume (fresh process state), N/2 more."""
    transform = waveform_augment if augment else lambda: None
    # fp32: Muon on every CPU ("auto" gives AdamW where bfloat16 is slow, as on AVX2-only machines)
    make = partial(ctc_trainer, ctc_corpus, optimizer=optimizer, muon_precision="fp32")
    straight = make(tmp_path / "a", transform=transform())
    straight.run(progress=False)
    assert straight.step == 8 and straight.epoch >= 1  # the run crosses an epoch boundary

    first = make(tmp_path / "b", transform=transform())
    first.run(progress=False, stop_after=4)
    assert first.step == 4
    torch.manual_seed(12345)  # disturb the global RNG: the checkpoint must restore it
    second = make(tmp_path / "b", transform=transform())
    second.run(progress=False, resume=True)
    assert second.step == 8

    a, b = straight.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.history["loss"] == second.history["loss"]


def test_checkpoint_is_plain_data_and_atomic(ctc_corpus, tmp_path, ctc_trainer):
    trainer = ctc_trainer(ctc_corpus, tmp_path, max_steps=3)
    path = trainer.run(progress=False)
    data = torch.load(path, weights_only=True)  # raises if anything but plain data is inside
    for key in ("format", "task", "model_config", "feature_config", "tokenizer", "weights", "provenance", "training"):
        assert key in data, key
    for key in ("train_config", "optimizer", "scheduler", "scaler", "step", "epoch", "position", "rng", "history"):
        assert key in data["training"], key
    assert data["training"]["step"] == 3 and data["provenance"]["steps"] == 3
    assert not list(path.parent.glob("*.tmp"))
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoint_loader_refuses_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "x": Evil()}, path)
    from asr.errors import AsrError

    with pytest.raises(AsrError, match="not a readable asr model file"):
        checkpoint.load(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(AsrError):
        checkpoint.load(path)


def test_bf16_autocast_on_cpu_when_asked(ctc_corpus, tmp_path, ctc_trainer):
    trainer = ctc_trainer(ctc_corpus, tmp_path, max_steps=2, precision="bf16")
    assert trainer.dtype == torch.bfloat16
    trainer.run(progress=False)
    assert trainer.step == 2 and np.isfinite(trainer.history["loss"][-1])


def test_an_update_with_non_finite_gradients_is_skipped(ctc_corpus, tmp_path, ctc_trainer):
    """A NaN gradient (as oneDNN's bf16 convolution once gave) leaves the weights as they were;
    training goes on; a run of them stops it with one clear error."""
    trainer = ctc_trainer(ctc_corpus, tmp_path, max_steps=30)
    loss_fn, poisoned = trainer.loss_fn, {2}
    trainer.loss_fn = lambda out, batch: loss_fn(out, batch) * (math.nan if trainer.step in poisoned else 1.0)
    batches = trainer.batches()
    trainer.update(next(batches))
    trainer.update(next(batches))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss, grad_norm = trainer.update(next(batches))  # step 3: NaN
    assert math.isnan(loss) and math.isnan(grad_norm) and trainer.step == 3
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    loss, grad_norm = trainer.update(next(batches))
    assert math.isfinite(grad_norm) and not all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    poisoned.update(range(4, 100))
    for _ in range(5):
        trainer.update(next(batches))
    assert trainer.skipped == 5
    trainer.save_checkpoint()  # the count goes on after a resume
    resumed = ctc_trainer(ctc_corpus, tmp_path, max_steps=30)
    resumed.load_checkpoint()
    assert resumed.skipped == 5 and resumed.step == 9
    resumed.loss_fn = lambda out, batch: loss_fn(out, batch) * math.nan
    batches = resumed.batches()
    with pytest.raises(AsrError, match="training diverged: 20 updates in a row"):
        for _ in range(25):
            resumed.update(next(batches))
    assert resumed.step == 23  # 15 after the resume; the error comes before the 20th counts as a step


@pytest.mark.parametrize("max_steps, pct_start", [(10, 0.1), (2, 0.5), (4, 0.25), (1, 0.1)])
def test_schedules_with_a_one_step_warm_up_run(ctc_corpus, tmp_path, max_steps, pct_start, ctc_trainer):
    """OneCycleLR divides by zero when the warm-up is exactly one step (10 steps at the default
    pct_start of 0.1, which a tiny time budget can pick): the trainer then warms up over two."""
    trainer = ctc_trainer(ctc_corpus, tmp_path, max_steps=max_steps, pct_start=pct_start)
    trainer.run(progress=False)
    lrs = trainer.history["lr"]
    assert trainer.step == max_steps and all(np.isfinite(lrs)) and max(lrs) <= trainer.config.lr


@pytest.mark.slow
def test_time_budget_only_sets_the_length(ctc_corpus, tmp_path, ctc_trainer):
    """A time budget picks max_steps on this machine; with no re-fits the run is the same as one
    given that many steps outright (the probe leaves no trace in RNGs or weights)."""
    config = TrainConfig(max_steps=1, time_budget_minutes=0.1, budget_refits=0)
    budget = ctc_trainer(ctc_corpus, tmp_path / "a", max_steps=1, time_budget_minutes=0.1, budget_refits=0)
    budget.run(progress=False)
    steps = budget.step
    assert steps == budget.config.max_steps >= 10
    assert config.max_steps == 1  # the caller's config is not changed
    fixed = ctc_trainer(ctc_corpus, tmp_path / "b", max_steps=steps)
    fixed.run(progress=False)
    for key, value in budget.model.state_dict().items():
        assert torch.equal(value, fixed.model.state_dict()[key]), key
    _, state = checkpoint.load_training(budget.checkpoint_path)
    assert state.train_config["max_steps"] == steps


class FakeClock:
    """A clock that a test moves by hand: time passes only when a step says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_time_budget_refits_to_the_pace_it_measures(ctc_corpus, tmp_path, monkeypatch, ctc_trainer):
    """When steps turn out slower than the start-up probe said, the run shortens itself to end at its
    deadline, and its learning rate still anneals to the floor. The clock is the test's: each step
    after the probe takes 0.5 s of it, whatever this machine's speed."""
    from asr.callbacks import TimeBudget

    clock = FakeClock()
    budget = TimeBudget(1.0, refits=7, clock=clock)  # 60 s
    monkeypatch.setattr(budget, "probe", lambda trainer: 0.05)  # the probe says 0.05 s a step: 1,140 steps
    trainer = ctc_trainer(ctc_corpus, tmp_path, max_steps=1, eval_every=0, callbacks=[budget])
    fast_step = trainer.update

    def slow_step(micros):  # ten times slower than the probe said
        clock.now += 0.5
        return fast_step(micros)

    monkeypatch.setattr(trainer, "update", slow_step)
    trainer.run(progress=False)
    assert trainer.step == trainer.config.max_steps
    elapsed = clock.now - budget.begun
    assert 55 <= elapsed <= 60.5  # ends at the budget, not at the probe's 1,140 steps (570 s)
    assert 110 <= trainer.step <= 121
    # the schedule ends where a schedule planned for this length from the start ends
    c = trainer.config
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=c.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=c.lr, total_steps=trainer.step,
                                                   pct_start=c.pct_start, div_factor=c.div_factor,
                                                   final_div_factor=c.final_div_factor)
    for _ in range(trainer.step):
        reference.step()
        schedule.step()
    assert trainer.scheduler.get_last_lr() == pytest.approx(schedule.get_last_lr())
    assert trainer.scheduler.get_last_lr()[0] < c.lr / 100


def test_time_budget_cap_holds_on_a_fast_machine_and_yields_on_a_slow_one(ctc_corpus, tmp_path, monkeypatch,
                                                                          ctc_trainer):
    """With a cap, a machine whose steps are fast trains exactly the capped steps (re-fits never
    raise it), and one whose steps are slow trains fewer, ending at its deadline."""
    from asr.callbacks import TimeBudget

    for name, seconds, expected in (("fast", 0.01, (40, 40)), ("slow", 2.0, (27, 31))):
        clock = FakeClock()
        budget = TimeBudget(1.0, refits=7, clock=clock, max_steps=40)  # 60 s, at most 40 steps
        monkeypatch.setattr(budget, "probe", lambda trainer: seconds)
        trainer = ctc_trainer(ctc_corpus, tmp_path / name, max_steps=1, eval_every=0, callbacks=[budget])
        step = trainer.update

        def timed(micros, step=step, clock=clock, seconds=seconds):
            clock.now += seconds
            return step(micros)

        monkeypatch.setattr(trainer, "update", timed)
        trainer.run(progress=False)
        assert expected[0] <= trainer.step == trainer.config.max_steps <= expected[1], name
        assert clock.now - budget.begun <= 61


def test_muon_takes_the_hidden_matrices_and_follows_the_schedule(ctc_corpus, tmp_path, ctc_trainer):
    """Muon gets the 2-D hidden weights, AdamW the rest; one OneCycle schedule drives both, after a resume too."""
    # fp32: Muon on every CPU ("auto" gives AdamW where bfloat16 is slow, as on AVX2-only machines)
    trainer = ctc_trainer(ctc_corpus, tmp_path, max_steps=6, optimizer="muon", muon_precision="fp32")
    optimizer = trainer.optimizer
    muon = {id(p) for p in optimizer.muon.param_groups[0]["params"]}
    adamw = {id(p) for p in optimizer.adamw.param_groups[0]["params"]}
    named = dict(trainer.model.named_parameters())
    assert not muon & adamw and muon | adamw == {id(p) for p in named.values()}
    for name, p in named.items():
        expected = p.ndim == 2 and not name.startswith("classifier.3.")  # the output layer stays with AdamW
        assert (id(p) in muon) == expected, name
    trainer.run(progress=False, stop_after=3)
    resumed = ctc_trainer(ctc_corpus, tmp_path, max_steps=6, optimizer="muon", muon_precision="fp32")
    resumed.run(progress=False, resume=True, stop_after=2)
    for t in (trainer, resumed):
        lr = t.scheduler.get_last_lr()[0]
        assert t.optimizer.muon.param_groups[0]["lr"] == lr == t.optimizer.adamw.param_groups[0]["lr"]
    assert resumed.optimizer.muon.param_groups[0]["lr"] != trainer.optimizer.muon.param_groups[0]["lr"]
    assert resumed.optimizer.muon.state  # momentum buffers came back from the checkpoint
    with pytest.raises(AsrError, match="unknown optimizer"):
        ctc_trainer(ctc_corpus, tmp_path / "x", optimizer="sgd")


def test_muon_step_takes_a_closure():
    """As torch's optimisers do: step(closure) re-evaluates the loss with gradients on."""
    from asr.optim import MuonAdamW

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    optimizer, x = MuonAdamW(model, 1e-2, 0.0), torch.randn(5, 4)
    before = model[0].weight.detach().clone()

    def closure():
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() > 0
    assert not torch.equal(before, model[0].weight)  # the Muon matrix moved


def test_non_finite_updates_are_counted_and_limited_in_all(ctc_corpus, tmp_path, ctc_trainer):
    """Non-finite updates that never come 20 in a row still stop a run gone wrong, past max_nonfinite,
    and their count survives a resume."""
    trainer = ctc_trainer(ctc_corpus, tmp_path, max_steps=40, max_nonfinite=5)
    loss_fn = trainer.loss_fn
    trainer.loss_fn = lambda out, batch: loss_fn(out, batch) * (math.nan if trainer.step % 2 else 1.0)
    with pytest.raises(AsrError, match="6 updates had non-finite gradients .more than max_nonfinite = 5."):
        trainer.run(progress=False)
    assert trainer.nonfinite == 6 and trainer.skipped == 1

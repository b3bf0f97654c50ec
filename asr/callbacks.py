"""Trainer hooks: time budgets, early stopping, the learning-rate range test, TensorBoard and
learning curves.

A callback sees the ``Trainer`` at fixed points of its one loop (``on_train_start``,
``on_step_start``, ``on_step_end``, ``on_log``, ``on_evaluate``, ``on_train_end``) and
may change its length (``Trainer.set_max_steps``) or end it (``trainer.should_stop``).
Its ``state_dict`` is saved in the training checkpoint under its ``name``, so a resumed
run continues the callback exactly where it stopped too.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from asr import checkpoint
from asr.device import slow_step_causes
from asr.errors import AsrError
from asr.optim import describe_optimizer, make_optimizer


class Callback:
    name = ""  # the key of its state in checkpoints; "" = nothing to keep
    main_only = False  # True: runs in the first process only, under torchrun (it writes files)

    def on_train_start(self, trainer) -> None: ...

    def on_step_start(self, trainer) -> None: ...

    def on_step_end(self, trainer, loss: float, grad_norm: float) -> None: ...

    def on_log(self, trainer, metrics: dict) -> None: ...

    def on_evaluate(self, trainer, metrics: dict, samples: list[tuple[str, str]]) -> None: ...

    def on_train_end(self, trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class TimeBudget(Callback):
    """Fit the run's length to ``minutes`` of this machine's time.

    A fresh run first times ``probe_steps`` updates of a throwaway copy of the model (the
    RNG state is restored, so training itself is unchanged but for its length) and plans
    that many steps. It then re-fits the length ``refits`` times, at even fractions of the
    planned steps or of the budget, whichever comes first, to the pace measured since the
    last re-fit (dev evaluations and checkpoints included): only the pace after the last
    re-fit goes uncorrected. A probe far slower than ``expected`` (the config's (low, high)
    seconds a step) prints one line that names the likely cause. ``max_steps`` (> 0) caps every
    plan: a fast machine stops there, early, and a slow one gets fewer steps instead of a longer
    run. A resumed run keeps the length it had. ``clock`` is ``time.monotonic`` unless a test
    gives another.
    """

    SLOW_FACTOR = 1.5  # a probed step this many times the expected upper bound is "far slower"

    def __init__(self, minutes: float, refits: int = 7, expected: tuple[float, ...] = (), probe_steps: int = 6,
                 clock: Callable[[], float] = time.monotonic, max_steps: int = 0) -> None:
        self.minutes, self.refits, self.expected, self.probe_steps, self.clock, self.cap = (
            minutes, refits, tuple(expected), probe_steps, clock, max_steps)
        self.plan: list[tuple[int, float]] = []

    def on_train_start(self, trainer) -> None:
        if trainer.step > 0 or self.minutes <= 0:
            return  # a resumed run keeps its length
        budget = self.minutes * 60
        self.begun = self.clock()
        self.deadline = self.begun + budget
        per_step = self.probe(trainer)
        steps = trainer.set_max_steps(self._capped(max(10, int(budget * 0.95 / per_step))))
        capped = " (its cap)" if steps == self.cap else ""
        print(f"time budget {self.minutes:g} min: {steps} steps on this machine{capped}")
        self._check_pace(trainer, per_step)
        n = self.refits
        self.plan = [(steps * k // (n + 1), self.begun + budget * k / (n + 1)) for k in range(1, n + 1)]
        self.limit = self._capped(4 * steps)  # a disturbed probe costs little
        self.last_step, self.last_time = 0, self.clock()

    def _capped(self, steps: int) -> int:
        return min(steps, self.cap) if self.cap > 0 else steps

    def probe(self, trainer) -> float:
        """Seconds per update on typical batches (the median; the first update warms up)."""
        from asr.training import SkipUnreadable

        rng, scaler = checkpoint.rng_state(), trainer.scaler.state_dict()
        saved = trainer.model, trainer.net, trainer.optimizer, trainer.scheduler, trainer.step
        trainer.model = trainer.net = copy.deepcopy(trainer.model)  # no gradient exchange: a throwaway copy
        trainer.optimizer = make_optimizer(trainer.model, trainer.config.optimizer, 1e-5, trainer.config.weight_decay,
                                           trainer.device, trainer.config.muon_precision)
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
        times = []
        try:
            batches = trainer.sampler.batches(1)
            collate = SkipUnreadable(trainer.collate)
            for k in range(self.probe_steps + 1):
                batch, _ = collate([trainer.dataset[i] for i in batches[k % len(batches)]])
                if batch is None:
                    continue
                started = time.perf_counter()
                trainer.train_step(batch)
                times.append(time.perf_counter() - started)
        finally:
            trainer.model, trainer.net, trainer.optimizer, trainer.scheduler, trainer.step = saved
            checkpoint.set_rng_state(rng)
            trainer.scaler.load_state_dict(scaler)
        if len(times) < 2:
            raise AsrError("the time-budget probe found no readable training batch")
        return sorted(times[1:])[len(times[1:]) // 2]

    def _check_pace(self, trainer, per_step: float) -> None:
        if len(self.expected) != 2 or per_step <= self.SLOW_FACTOR * self.expected[1]:
            return
        causes = slow_step_causes(trainer.device, trainer.dtype, describe_optimizer(trainer.optimizer))
        print(f"warning: {per_step:.2f} s a step, far slower than the {self.expected[0]:g}-{self.expected[1]:g} s "
              f"this config expects, so the time budget buys {trainer.config.max_steps} steps; likely cause: "
              f"{causes}", file=sys.stderr)

    def on_step_end(self, trainer, loss: float, grad_norm: float) -> None:
        if not self.plan or trainer.step >= trainer.config.max_steps:
            return
        if trainer.step < self.plan[0][0] and self.clock() < self.plan[0][1]:
            return
        self.plan.pop(0)
        pace = (self.clock() - self.last_time) / max(1, trainer.step - self.last_step)
        remaining = max(0.0, self.deadline - self.clock())
        steps = trainer.set_max_steps(min(self.limit, trainer.step + max(1, int(remaining / pace))))
        self.last_step, self.last_time = trainer.step, self.clock()
        trainer.write(f"time budget: {pace:.2f} s per step so far; {steps} steps in all")


class EarlyStopping(Callback):
    """Keep the model of the best dev ``metric`` (higher is better) as ``best_path``; stop after
    ``patience`` evaluations without an improvement of more than ``min_delta`` (0: never).
    A summary is also written to ``record`` (JSON) after each evaluation."""

    name = "early_stopping"
    main_only = True  # dev evaluations run on rank 0; its decision to stop reaches every rank

    def __init__(self, best_path, patience: int = 5, min_delta: float = 0.0, metric: str = "accuracy",
                 record=None) -> None:
        self.best_path, self.patience, self.min_delta, self.metric = Path(best_path), patience, min_delta, metric
        self.record = Path(record) if record else None
        self.state = {"best_step": None, "best": -math.inf, "evals": [], "stopped": False}

    def on_train_start(self, trainer) -> None:
        if self.state["stopped"]:
            trainer.should_stop = True

    def on_evaluate(self, trainer, metrics: dict, samples) -> None:
        s = self.state
        value = metrics[self.metric]
        s["evals"].append({"step": trainer.step, **metrics})
        if value > s["best"] + self.min_delta or s["best_step"] is None:
            s["best_step"], s["best"] = trainer.step, value
            trainer.export(self.best_path)
        since = sum(1 for e in s["evals"] if e["step"] > s["best_step"])
        if self.patience and since >= self.patience:
            s["stopped"] = trainer.should_stop = True
        trainer.write(f"step {trainer.step}: dev {self.metric} {100 * value:.2f}% "
                      f"(best {100 * s['best']:.2f}% at step {s['best_step']})"
                      + (f"; no improvement for {since} evaluations: stopping" if s["stopped"] else ""))
        if self.record:
            from asr.reports import write_json

            write_json(s, self.record)

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)


class LRRangeTest(Callback):
    """The learning-rate range test (Smith, 2017): the rate rises exponentially from ``min_lr`` to
    ``max_lr`` over ``steps`` updates; the run stops once the smoothed loss exceeds ``diverge``
    times its minimum. ``lrs`` and ``losses`` (smoothed) are the result."""

    def __init__(self, min_lr: float, max_lr: float, steps: int, diverge: float = 4.0, beta: float = 0.98) -> None:
        self.min_lr, self.steps, self.diverge, self.beta = min_lr, steps, diverge, beta
        self.gamma = (max_lr / min_lr) ** (1 / max(1, steps - 1))
        self.lrs, self.losses, self.average, self.best = [], [], 0.0, math.inf

    def on_step_start(self, trainer) -> None:
        self.lr = self.min_lr * self.gamma ** len(self.lrs)
        for group in trainer.optimizer.param_groups:
            group["lr"] = self.lr

    def on_step_end(self, trainer, loss: float, grad_norm: float) -> None:
        if not math.isfinite(loss):
            trainer.should_stop = True
            return
        i = len(self.lrs)
        self.average = self.beta * self.average + (1 - self.beta) * loss
        smoothed = self.average / (1 - self.beta ** (i + 1))
        self.lrs.append(self.lr)
        self.losses.append(smoothed)
        self.best = min(self.best, smoothed)
        if len(self.lrs) >= self.steps or (smoothed > self.diverge * self.best and i > self.steps // 10):
            trainer.should_stop = True


class TensorBoardLogger(Callback):
    """Training loss, learning rate and gradient norm, dev metrics, sample transcripts and a
    log-mel picture, in ``folder`` for ``tensorboard --logdir``."""

    main_only = True

    def __init__(self, folder) -> None:
        self.folder = Path(folder)
        self.writer = None

    def on_train_start(self, trainer) -> None:
        from asr.reports import tensorboard_writer

        self.writer = tensorboard_writer(self.folder, purge_step=trainer.step)

    def on_log(self, trainer, metrics: dict) -> None:
        if self.writer:
            for name, value in metrics.items():
                self.writer.add_scalar(f"train/{name}", value, trainer.step)

    def on_evaluate(self, trainer, metrics: dict, samples) -> None:
        if not self.writer:
            return
        for name, value in metrics.items():
            self.writer.add_scalar(f"dev/{name}", value, trainer.step)
        if samples:
            self.writer.add_text("dev/samples", "\n\n".join(f"REF: {r}  \nHYP: {h}" for r, h in samples[:5]),
                                 trainer.step)
        batch = trainer.last_batch
        if batch is not None and trainer.feature_config.kind == "logmel":
            with torch.no_grad():
                feats, frames = trainer.features(batch.audio[:1].to(trainer.device),
                                                 batch.audio_lengths[:1].to(trainer.device))
            image = feats[0, :, : int(frames[0])].flip(0)
            image = (image - image.min()) / (image.max() - image.min() + 1e-9)
            self.writer.add_image("train/log_mel", image[None].cpu(), trainer.step)
        self.writer.flush()

    def on_train_end(self, trainer) -> None:
        if self.writer:
            self.writer.close()
            self.writer = None


class LearningCurve(Callback):
    """The training loss and dev metrics against steps, as a PNG, at the end of every run."""

    main_only = True

    def __init__(self, path, ylabel: str = "loss") -> None:
        self.path, self.ylabel = Path(path), ylabel

    def on_train_end(self, trainer) -> None:
        from asr.reports import plot_learning_curve

        evals = [{"step": s, **m} for s, m in zip(trainer.history["eval_step"], trainer.history["eval"])]
        plot_learning_curve(trainer.history, self.path, self.ylabel, evals)


def standard(config, exp_dir, ylabel: str = "loss") -> list[Callback]:
    """What every experiment folder gets: the time budget (when the config has one), TensorBoard
    logs in ``<exp>/tensorboard`` and ``<exp>/learning_curve.png``."""
    exp_dir = Path(exp_dir)
    callbacks: list[Callback] = []
    if config.time_budget_minutes > 0:
        callbacks.append(TimeBudget(config.time_budget_minutes, config.budget_refits, config.expected_step_seconds,
                                    max_steps=config.budget_max_steps))
    return callbacks + [TensorBoardLogger(exp_dir / "tensorboard"), LearningCurve(exp_dir / "learning_curve.png",
                                                                                   ylabel)]

"""The training loop: one loop for every task, with hooks.

``Trainer.run()`` trains until ``max_steps`` updates are done (or a callback stops it):
features and SpecAugment on the training device, autocast and a GradScaler, gradient
clipping, the optimiser (``asr.optim``) and its OneCycle schedule, dev evaluations and
atomic checkpoints. A checkpoint (``<exp>/checkpoints/last.pt``) holds everything needed
to continue exactly: weights, optimiser, scheduler, scaler, step, epoch, sampler
position, RNG states and each callback's state. ``resume=True`` picks it up; N steps
straight give the same weights as N/2 steps, a resume and N/2 more.

Under ``torchrun`` it trains data-parallel (``asr.distributed``): every rank takes its
piece of the batches one process would take with the whole budget (``ShardedBatchSampler``),
gradients are averaged, and rank 0 alone writes checkpoints, model files and logs.
``accumulate`` makes each update sum several micro-batches, so that the global batch does not
depend on the number of processes. A file that cannot be read is skipped, counted and named;
updates with non-finite gradients are skipped too, up to a limit.

Time budgets, early stopping, the learning-rate range test, TensorBoard and plots are
callbacks (``asr.callbacks``), not part of the loop.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch.nn import functional as F

from asr import checkpoint
from asr.checkpoint import ModelFile, TrainingState
from asr.config import from_dict, to_dict
from asr.data import Batch, BucketingBatchSampler, ShardedBatchSampler, SpeechDataset, Unreadable, collate
from asr.device import autocast_dtype, bf16_is_fast, describe, resolve_device
from asr.distributed import World
from asr.errors import AsrError
from asr.features import FeatureConfig, FeatureExtractor, SpecAugment, SpecAugmentConfig
from asr.optim import describe_optimizer, make_optimizer, one_cycle


@dataclass
class TrainConfig:
    max_steps: int = 1000
    time_budget_minutes: float = 0.0  # > 0: choose max_steps so that training takes about this long
    budget_max_steps: int = 0  # with a time budget: never plan more steps than this (0: no cap)
    budget_refits: int = 7  # with a time budget: re-fit the length to the measured pace this many times
    # (low, high) seconds a step took on the machines this config was timed on; with a time budget, a
    # probe far slower than high prints one line naming the likely cause. () = no expectation
    expected_step_seconds: tuple[float, ...] = ()
    lr: float = 1e-3  # peak learning rate of the OneCycle schedule
    pct_start: float = 0.1  # share of the steps spent warming up
    div_factor: float = 25.0  # initial lr = lr / div_factor
    final_div_factor: float = 1e3
    weight_decay: float = 1e-2
    # muon: Muon for the hidden weight matrices (input projection, GRU, hidden classifier layer), AdamW for the rest
    optimizer: Literal["adamw", "muon"] = "adamw"
    # muon's products: "auto" = bfloat16 where it is fast, AdamW instead elsewhere; "bf16"; "fp32"
    muon_precision: Literal["auto", "bf16", "fp32"] = "auto"
    grad_clip: float = 5.0
    max_frames: int = 20000  # padded feature frames per batch (per process, per accumulated micro-batch)
    max_batch_size: int = 0  # 0: no limit beyond max_frames
    accumulate: int = 1  # micro-batches per update: the global batch is max_frames x processes x accumulate
    sortagrad: bool = True  # first epoch shortest-first
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: fp16 on CUDA, fp32 on a CPU
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0  # DataLoader workers; 0 keeps everything in one process
    prefetch: int = 4  # batches each worker prepares ahead
    cache_audio: bool = False  # keep decoded waveforms in memory after the first epoch
    specaugment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    log_every: int = 10
    eval_every: int = 0  # steps between dev evaluations; 0 = only at the end
    checkpoint_every: int = 200
    max_eval_utterances: int = 200
    max_nonfinite: int = 100  # updates skipped for non-finite gradients, in all, before the run stops


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ctc_loss(log_probs: torch.Tensor, lengths: torch.Tensor, batch: Batch, blank: int) -> torch.Tensor:
    """Mean CTC loss; impossible alignments contribute zero instead of inf."""
    return F.ctc_loss(log_probs.transpose(0, 1).float(), batch.targets, lengths, batch.target_lengths,
                      blank=blank, reduction="mean", zero_infinity=True)


class Trainer:
    """Owns the model, optimiser and data for one experiment folder.

    The task enters through ``dataset`` (items for ``collate_fn``, with a ``durations``
    list for batching), ``loss_fn(outputs, batch)`` where ``outputs = model(feats,
    frames)``, ``meta`` (what a ``ModelFile`` holds besides configs and weights:
    ``{"task": "ctc", "tokenizer": ...}`` or ``{"task": "classify", "labels": [...]}``)
    and ``evaluate(trainer, dev_entries) -> (metrics, [(ref, hyp), ...])``.
    ``Trainer.for_ctc`` builds the speech recognition case. The config is copied:
    a time budget changes this trainer's ``max_steps``, never the caller's.
    """

    MAX_SKIPPED = 20  # updates with non-finite gradients in a row before training stops

    def __init__(self, model, dataset, loss_fn: Callable, meta: dict, feature_config: FeatureConfig,
                 config: TrainConfig, exp_dir, dev_entries: list[dict] | None = None,
                 evaluate: Callable | None = None, collate_fn: Callable = collate, callbacks=()) -> None:
        self.config = replace(config)
        self.exp_dir = Path(exp_dir)
        self.world = World.init(config.device)
        self.device = resolve_device(self.world.device(config.device))
        self.dtype = autocast_dtype(config.precision, self.device)
        if config.accumulate < 1:
            raise AsrError(f"accumulate must be 1 or more, got {config.accumulate}")
        seed_everything(config.seed + self.world.rank)  # each rank its own augmentation draws
        self.model = model.to(self.device)
        self.net = self.model  # what the forward pass runs: the model, or its DDP wrapper
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.loss_fn, self.meta, self.feature_config = loss_fn, meta, feature_config
        self.features = FeatureExtractor(feature_config).to(self.device)
        self.augment = SpecAugment(config.specaugment).to(self.device) if config.specaugment else None
        self.dataset, self.collate = dataset, collate_fn
        dataset.skip_unreadable = True
        cut = self.world.size * config.accumulate
        self.sampler = BucketingBatchSampler(
            dataset.durations, config.max_frames * cut, feature_config.frame_shift, seed=config.seed,
            sortagrad=config.sortagrad, max_batch_size=config.max_batch_size * cut or None)
        if cut > 1:
            self.sampler = ShardedBatchSampler(self.sampler, self.world.size, self.world.rank, config.accumulate)
        self.dev_entries = dev_entries or []
        self.evaluate = evaluate
        self.callbacks = [c for c in callbacks if self.world.main or not getattr(c, "main_only", False)]
        self.optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay, self.device,
                                        config.muon_precision)
        if self.dtype == torch.bfloat16 and self.device.type == "cpu" and not bf16_is_fast(self.device):
            print(f"warning: precision bf16 on a CPU without fast bfloat16 ({describe(self.device)}): "
                  f"training will be slow; precision = \"fp32\" avoids it", file=sys.stderr)
        self.scheduler = self._one_cycle(self.config.max_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.step = self.epoch = self.position = 0
        self.skipped = 0  # updates skipped in a row for non-finite gradients
        self.nonfinite = 0  # updates skipped for non-finite gradients, in all
        self.unreadable: dict[str, str] = {}  # training files that could not be read: path -> why
        self.should_stop = False  # a callback ends the run by setting it
        self.last_batch: Batch | None = None
        self.history: dict[str, list] = {"step": [], "loss": [], "lr": [], "eval_step": [], "eval": []}
        self._bar = None

    def _one_cycle(self, total_steps: int):
        c = self.config
        return one_cycle(self.optimizer, c.lr, total_steps, c.pct_start, c.div_factor, c.final_div_factor)

    def set_max_steps(self, steps: int) -> int:
        """Change the run's length; the OneCycle schedule is rebuilt for it at the current step, so the
        learning rate moves on from where it is and still anneals to its floor at the last step."""
        if steps != self.config.max_steps:
            self.config.max_steps = steps
            self.scheduler = self._one_cycle(steps)
            if self.step:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the fast-forward step below is not an optimiser step
                    self.scheduler.last_epoch = self.step - 1
                    self.scheduler.step()
            if self._bar is not None:
                self._bar.total = steps
                self._bar.refresh()
        return steps

    def write(self, line: str) -> None:
        """Print a line without breaking the progress bar."""
        if self._bar is not None and not self._bar.disable:
            self._bar.write(line)
        else:
            print(line, flush=True)

    @classmethod
    def for_ctc(cls, model, tokenizer, feature_config: FeatureConfig, train_entries: list[dict],
                config: TrainConfig, exp_dir, dev_entries: list[dict] | None = None,
                transform: Callable | None = None, callbacks=()):
        """Speech recognition: manifest entries with text, CTC loss, greedy dev WER/CER.
        ``transform`` changes each training waveform (``asr.augment.WaveformAugment``)."""
        dataset = SpeechDataset(train_entries, tokenizer, cache_audio=config.cache_audio, transform=transform,
                                sample_rate=feature_config.sample_rate)
        trainer = cls(model, dataset, _CTCLoss(tokenizer.blank), {"task": "ctc", "tokenizer": tokenizer.to_dict()},
                      feature_config, config, exp_dir, dev_entries, evaluate_ctc, callbacks=callbacks)
        trainer.tokenizer = tokenizer
        return trainer

    # ----------------------------------------------------------------- checkpoints

    @property
    def checkpoint_path(self) -> Path:
        return self.exp_dir / "checkpoints" / "last.pt"

    def describe(self) -> dict:
        """How this model is trained, as its model file records it (``provenance``)."""
        names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        return {"machine": describe(self.device), "optimizer": describe_optimizer(self.optimizer),
                "precision": names[self.dtype], "steps": self.step, "processes": self.world.size,
                "torch": str(torch.__version__)}

    def model_file(self) -> ModelFile:
        """What inference needs: configs, tokenizer or labels, weights; and how it was trained."""
        return ModelFile(task=self.meta["task"], model_config=self.model.config, feature_config=self.feature_config,
                         weights=self.model.state_dict(), tokenizer=self.meta.get("tokenizer"),
                         labels=tuple(self.meta.get("labels", ())), provenance=self.describe())

    def save_checkpoint(self) -> Path:
        """Rank 0 writes the checkpoint (every rank's RNG state in it); every rank must call this."""
        rng = self.world.gather(checkpoint.rng_state())
        if self.world.main:
            state = TrainingState(
                train_config=to_dict(self.config), optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), step=self.step,
                epoch=self.epoch, position=self.position, rng=rng[0] if self.world.size == 1 else {"ranks": rng},
                history=self.history, skipped=self.skipped,
                callbacks={c.name: c.state_dict() for c in self.callbacks if c.name},
                counts={"nonfinite": self.nonfinite, "unreadable": dict(self.unreadable)})
            checkpoint.save_training(self.model_file(), state, self.checkpoint_path)
        self.world.barrier()
        return self.checkpoint_path

    def load_checkpoint(self, path=None) -> None:
        model, state = checkpoint.load_training(path or self.checkpoint_path, map_location=self.device)
        if model.model_config != self.model.config:
            raise AsrError("the checkpoint's model config differs from this experiment's; use another --exp-dir")
        self.model.load_state_dict(model.weights)
        saved = from_dict(TrainConfig, state.train_config, "checkpoint")
        self.config.max_steps = saved.max_steps  # a time budget may have set it
        self.scheduler = self._one_cycle(self.config.max_steps)
        try:
            self.optimizer.load_state_dict(state.optimizer)  # after the schedule: it restores lr and betas
        except (KeyError, ValueError):
            raise AsrError(f"the checkpoint's optimizer state does not fit {describe_optimizer(self.optimizer)}: "
                           f"was it written where muon_precision = \"auto\" chose otherwise (bfloat16 fast or slow)? "
                           f"Set [train] muon_precision as it was, or use another --exp-dir") from None
        self.scheduler.load_state_dict(state.scheduler)
        self.scaler.load_state_dict(state.scaler)
        self.step, self.epoch, self.position, self.skipped = state.step, state.epoch, state.position, state.skipped
        self.history = state.history
        self.nonfinite = state.counts.get("nonfinite", 0)
        self.unreadable = dict(state.counts.get("unreadable", {}))
        for c in self.callbacks:
            if c.name in state.callbacks:
                c.load_state_dict(state.callbacks[c.name])
        ranks = state.rng.get("ranks") if "ranks" in state.rng else [state.rng]
        if len(ranks) != self.world.size:
            raise AsrError(f"the checkpoint was written by {len(ranks)} processes, and {self.world.size} resume it; "
                           f"resume with as many (their random states differ)")
        checkpoint.set_rng_state(ranks[self.world.rank])

    def export(self, path) -> Path:
        """A model file for inference, no optimiser state (written by rank 0 only)."""
        return self.model_file().save(path) if self.world.main else Path(path)

    # ----------------------------------------------------------------- loop

    def train_step(self, batch: Batch) -> tuple[float, float]:
        """One update on one batch."""
        return self.update([(batch, 1.0)])

    def update(self, micros: list[tuple[Batch, float]]) -> tuple[float, float]:
        """One update: each micro-batch's mean loss, times its weight (its share of the global
        batch), backpropagated in turn; gradients averaged over ranks at the last; then clipping,
        the optimiser and the schedule. Returns the weighted loss and the gradient norm."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k, (batch, weight) in enumerate(micros):
            last = k == len(micros) - 1
            with self.net.no_sync() if self.world.size > 1 and not last else contextlib.nullcontext():
                batch = batch.to(self.device)
                feats, frames = self.features(batch.audio, batch.audio_lengths)
                if self.augment is not None:
                    feats = self.augment.train()(feats)
                with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                    enabled=self.dtype is not None):
                    outputs = self.net(feats, frames)
                loss = self.loss_fn(outputs, batch)
                self.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
            total += loss.item() * weight
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler.is_enabled() or torch.isfinite(grad_norm):
            self.scaler.step(self.optimizer)  # fp16's GradScaler skips non-finite steps itself
            self.skipped = 0
        else:  # the weights stay as they were; the schedule moves on
            self.skipped += 1
            self.nonfinite += 1
            if self.skipped >= self.MAX_SKIPPED:
                raise AsrError(f"training diverged: {self.skipped} updates in a row had non-finite gradients "
                               f"(step {self.step + 1}); lower the learning rate, or train in fp32")
            if self.nonfinite > self.config.max_nonfinite:
                raise AsrError(f"training went wrong: {self.nonfinite} updates had non-finite gradients "
                               f"(more than max_nonfinite = {self.config.max_nonfinite}) by step {self.step + 1}; "
                               f"lower the learning rate, or train in fp32")
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return self.world.mean(total), float(grad_norm)  # each rank's weighted loss is its share of the mean

    def batches(self):
        """The micro-batches of each update, as (batch, weight) lists, from the saved position on,
        across epochs, forever.

        ``self.position`` counts the micro-batches of the current epoch handed out (and, since
        one is fetched only when it is about to be trained on, trained on), so prefetching
        workers do not shift the resume point. Workers give each item a generator of its own
        (``AudioDataset.item_seed``), so their augmentation too resumes exactly. Files that
        cannot be read are left out of their batch, counted and named.
        """
        workers = self.config.num_workers
        self.dataset.item_seed = self.config.seed + 7919 * self.world.rank if workers else None
        group: list[tuple[Batch, float]] = []
        while True:
            self.sampler.epoch, self.sampler.position = self.epoch, self.position
            self.dataset.epoch = self.epoch
            collate_fn = SkipUnreadable(self.collate)
            if workers:
                source = torch.utils.data.DataLoader(
                    self.dataset, batch_sampler=self.sampler, collate_fn=collate_fn, num_workers=workers,
                    prefetch_factor=self.config.prefetch, pin_memory=self.device.type == "cuda",
                    generator=torch.Generator().manual_seed(self.config.seed))  # keeps off the global generator
            else:
                source = (collate_fn([self.dataset[i] for i in indices]) for indices in self.sampler)
            for batch, bad in source:
                weight = self.sampler.weight(self.epoch, self.position)
                self.position += 1
                for item in bad:
                    self._unreadable(item)
                if batch is None and self.world.size > 1:  # no readable file: still take part in the average
                    if self.last_batch is None:
                        raise AsrError("the first batch of this process holds no readable file")
                    batch, weight = self.last_batch, 0.0
                if batch is not None:
                    group.append((batch, weight))
                if self.position % self.config.accumulate == 0 and group:
                    yield group
                    group = []
            self.epoch += 1
            self.position = 0
            group = []

    def _unreadable(self, item: Unreadable) -> None:
        if item.path not in self.unreadable:
            self.unreadable[item.path] = item.reason
            self.write(f"warning: skipped an unreadable training file ({len(self.unreadable)} so far): {item.reason}")

    def _evaluate(self) -> None:
        if not (self.evaluate and self.dev_entries and self.world.main):
            return
        self.model.eval()
        metrics, samples = self.evaluate(self, self.dev_entries[: self.config.max_eval_utterances])
        self.history["eval_step"].append(self.step)
        self.history["eval"].append(metrics)
        for c in self.callbacks:
            c.on_evaluate(self, metrics, samples)

    def run(self, resume: bool = False, stop_after: int | None = None, progress: bool = True,
            save_checkpoints: bool = True) -> Path | None:
        """Train to ``max_steps`` (or ``stop_after`` more steps, or until a callback stops it),
        checkpointing on the way. Returns the path of the last checkpoint."""
        from tqdm import tqdm

        if self.world.main:  # a checkpoint half-written when the last run was killed
            for stale in self.checkpoint_path.parent.glob(f".{self.checkpoint_path.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        if resume and self.checkpoint_path.exists():
            self.load_checkpoint()  # a resumed run keeps the length it had
        if self.world.main:
            world = f"; {self.world.size} processes ({self.world.backend})" if self.world.size > 1 else ""
            print(f"training on {describe(self.device)}: optimizer {describe_optimizer(self.optimizer)}, "
                  f"precision {self.describe()['precision']}{world}", flush=True)
        self._bar = tqdm(total=self.config.max_steps, initial=self.step, desc="training", unit="step",
                         disable=not progress or not self.world.main, dynamic_ncols=True)
        for c in self.callbacks:
            c.on_train_start(self)
        self._agree()
        stop_at = None if stop_after is None else self.step + stop_after
        losses: list[float] = []
        batches = self.batches()
        path = None
        try:
            while (self.step < self.config.max_steps and not self.should_stop
                   and (stop_at is None or self.step < stop_at)):
                for c in self.callbacks:
                    c.on_step_start(self)
                micros = next(batches)
                self.last_batch = micros[-1][0]
                loss, grad_norm = self.update(micros)
                losses.append(loss)
                self._bar.update(1)
                for c in self.callbacks:
                    c.on_step_end(self, loss, grad_norm)
                self._agree()
                last = self.step >= self.config.max_steps or self.should_stop or self.step == stop_at
                if self.step % self.config.log_every == 0 or last:
                    self._log(losses, grad_norm)
                if self.config.eval_every and self.step % self.config.eval_every == 0 and not last:
                    self._evaluate()
                if save_checkpoints and self.step % self.config.checkpoint_every == 0 and not last:
                    self.save_checkpoint()
            if self.step >= self.config.max_steps and self.last_batch is not None:
                self._evaluate()
            if save_checkpoints:
                path = self.save_checkpoint()
        except KeyboardInterrupt:
            self._bar.close()
            path = self.save_checkpoint()
            raise AsrError(f"interrupted at step {self.step}; resume with --resume (checkpoint {path})") from None
        finally:
            self._bar.close()
            self._bar = None
        for c in self.callbacks:
            c.on_train_end(self)
        return path

    def _agree(self) -> None:
        """Under torchrun, rank 0's length (a time budget) and decision to stop (early stopping) hold
        for every rank."""
        if self.world.size > 1:
            steps, self.should_stop = self.world.broadcast((self.config.max_steps, self.should_stop))
            self.set_max_steps(steps)

    def _log(self, losses: list[float], grad_norm: float) -> None:
        if not losses:
            return
        lr = self.scheduler.get_last_lr()[0]
        mean = sum(losses) / len(losses)
        losses.clear()
        self.history["step"].append(self.step)
        self.history["loss"].append(mean)
        self.history["lr"].append(lr)
        self._bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.2e}")
        for c in self.callbacks:
            c.on_log(self, {"loss": mean, "lr": lr, "grad_norm": grad_norm})


class SkipUnreadable:
    """A picklable collate for the loader: ``(batch or None, [Unreadable, ...])``."""

    def __init__(self, collate_fn: Callable) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items):
        good = [i for i in items if not isinstance(i, Unreadable)]
        return (self.collate_fn(good) if good else None), [i for i in items if isinstance(i, Unreadable)]


class _CTCLoss:
    """A picklable ``loss_fn(outputs, batch)`` for the Trainer."""

    def __init__(self, blank: int) -> None:
        self.blank = blank

    def __call__(self, outputs, batch):
        return ctc_loss(*outputs, batch, self.blank)


def evaluate_ctc(trainer: Trainer, entries: list[dict]) -> tuple[dict, list[tuple[str, str]]]:
    """Greedy WER/CER of the current model on ``entries``; used for dev monitoring."""
    from asr.inference import Recognizer, recognize_entries
    from asr.scoring import score

    recognizer = Recognizer(trainer.model, trainer.features, trainer.tokenizer, trainer.device)
    hyps = recognize_entries(recognizer, entries, max_frames=trainer.config.max_frames)
    refs = {e["id"]: e["text"] for e in entries}
    result = score(refs, hyps)
    return {"wer": result.wer.rate, "cer": result.cer.rate}, [(refs[k], hyps[k]) for k in list(refs)[:10]]


def steps_for_epochs(durations: list[float], max_frames: int, epochs: float, frame_shift: float = 0.01) -> int:
    """How many updates ``epochs`` passes over the data take with this batching."""
    sampler = BucketingBatchSampler(durations, max_frames, frame_shift)
    return max(1, math.ceil(len(sampler) * epochs))

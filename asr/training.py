"""The training loop: CTC loss, AdamW, OneCycle, mixed precision, TensorBoard,
atomic checkpoints and exact resume.

``train(...)`` runs until ``config.max_steps`` updates are done. A checkpoint
(``<exp>/checkpoints/last.pt``) holds everything needed to continue exactly:
weights, optimizer, scheduler, scaler, step, epoch, sampler position and RNG
states. ``resume=True`` picks it up; N steps straight give the same weights as
N/2 steps, a resume and N/2 more.
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from asr import checkpoint
from asr.device import autocast_dtype, bf16_is_fast, describe, resolve_device, slow_step_causes
from asr.data import Batch, BucketingBatchSampler, SpeechDataset, collate
from asr.errors import AsrError
from asr.features import FeatureConfig, FeatureExtractor, SpecAugment, SpecAugmentConfig
from asr.optim import describe_optimizer, make_optimizer, one_cycle


@dataclass
class TrainConfig:
    max_steps: int = 1000
    time_budget_minutes: float = 0.0  # > 0: choose max_steps so that training takes about this long
    # With a time budget: re-fit max_steps to the measured pace this many times, at even
    # fractions of the run. Only the pace after the last re-fit goes uncorrected, so more re-fits
    # end nearer the budget: 7 ended 0.1 min past 23 minutes on the demo, 3 ended 0.8 min past.
    budget_refits: int = 7
    # (low, high) seconds a step took on the machines this config was timed on; with a time budget, a
    # probe far slower than high prints one line naming the likely cause. () = no expectation
    expected_step_seconds: tuple[float, ...] = ()
    lr: float = 1e-3  # peak learning rate of the OneCycle schedule
    pct_start: float = 0.1  # share of the steps spent warming up
    div_factor: float = 25.0  # initial lr = lr / div_factor
    final_div_factor: float = 1e3
    weight_decay: float = 1e-2
    # "adamw", or "muon": Muon (orthogonalised momentum, torch.optim.Muon) for the hidden weight
    # matrices (input projection, GRU, hidden classifier layer) and AdamW for the rest
    optimizer: str = "adamw"
    grad_clip: float = 5.0
    max_frames: int = 20000  # padded feature frames per batch
    max_batch_size: int = 0  # 0: no limit beyond max_frames
    sortagrad: bool = True  # first epoch shortest-first
    precision: str = "auto"  # "auto" (fp16 on CUDA, fp32 on CPU), "fp32", "bf16", "fp16"
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0  # DataLoader workers; 0 keeps everything in one process
    cache_audio: bool = False  # keep decoded waveforms in memory after the first epoch
    specaugment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    log_every: int = 10
    eval_every: int = 0  # steps between dev evaluations; 0 = only at the end
    checkpoint_every: int = 200
    max_eval_utterances: int = 200

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        spec = data.pop("specaugment", {})
        return cls(**data, specaugment=None if spec is None else SpecAugmentConfig(**spec))


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

    The task enters through three arguments: ``dataset`` (items for ``collate``,
    with a ``durations`` list for batching), ``loss_fn(outputs, batch)`` where
    ``outputs = model(feats, frames)``, and ``meta``, the plain data a model file
    needs besides weights and configs (``{"task": "ctc", "tokenizer": ...}`` or
    ``{"task": "classify", "labels": [...]}``). ``Trainer.for_ctc`` builds the
    speech recognition case.
    """

    MAX_SKIPPED = 20  # updates with non-finite gradients in a row before training stops

    def __init__(self, model, dataset, loss_fn: Callable, meta: dict, feature_config: FeatureConfig,
                 config: TrainConfig, exp_dir, dev_entries: list[dict] | None = None,
                 evaluate: Callable | None = None, collate_fn: Callable = collate) -> None:
        self.config = config
        self.exp_dir = Path(exp_dir)
        self.device = resolve_device(config.device)
        self.dtype = autocast_dtype(config.precision, self.device)
        seed_everything(config.seed)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.meta = meta
        self.feature_config = feature_config
        self.features = FeatureExtractor(feature_config).to(self.device)
        self.augment = SpecAugment(config.specaugment).to(self.device) if config.specaugment else None
        self.dataset = dataset
        self.collate = collate_fn
        self.sampler = BucketingBatchSampler(
            dataset.durations, config.max_frames, feature_config.frame_shift, seed=config.seed,
            sortagrad=config.sortagrad, max_batch_size=config.max_batch_size or None)
        self.dev_entries = dev_entries or []
        self.evaluate = evaluate
        self.optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay, self.device)
        if self.dtype == torch.bfloat16 and self.device.type == "cpu" and not bf16_is_fast(self.device):
            print(f"warning: precision bf16 on a CPU without fast bfloat16 ({describe(self.device)}): "
                  f"training will be slow; precision = \"fp32\" avoids it", file=sys.stderr)
        self.scheduler = self._one_cycle(config.max_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.skipped = 0  # updates skipped in a row for non-finite gradients
        self._announced = False  # the first run() names the machine, optimiser and precision
        self.history: dict[str, list] = {"step": [], "loss": [], "lr": [], "eval_step": [], "eval": []}

    def _one_cycle(self, total_steps: int):
        c = self.config
        return one_cycle(self.optimizer, c.lr, total_steps, c.pct_start, c.div_factor, c.final_div_factor)

    def fit_to_time_budget(self, minutes: float, probe_steps: int = 6) -> int:
        """Set ``max_steps`` so that training takes about ``minutes`` on this machine.

        Times ``probe_steps`` updates of a throwaway copy of the model on shuffled
        (typical-length) batches, then rebuilds the OneCycle schedule for the number
        of steps that fit. The RNG state is restored, so training itself is unchanged
        but for its length; the chosen length is saved in checkpoints.
        """
        import copy

        rng, scaler_state = checkpoint.rng_state(), self.scaler.state_dict()
        model = self.model
        self.model = copy.deepcopy(model)
        optimizer, self.optimizer = self.optimizer, make_optimizer(self.model, self.config.optimizer, 1e-5, self.config.weight_decay,
                                                                self.device)
        scheduler, self.scheduler = self.scheduler, torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        step, times = self.step, []
        try:
            batches = self.sampler.batches(1)
            for k in range(probe_steps + 1):
                indices = batches[k % len(batches)]
                started = time.perf_counter()
                self.train_step(self.collate([self.dataset[i] for i in indices]))
                times.append(time.perf_counter() - started)
        finally:
            self.model, self.optimizer, self.scheduler, self.step = model, optimizer, scheduler, step
            checkpoint.set_rng_state(rng)
            self.scaler.load_state_dict(scaler_state)
        per_step = sorted(times[1:])[len(times[1:]) // 2]  # median; the first step warms up
        self.config.max_steps = max(10, int(minutes * 60 * 0.95 / per_step))
        self.scheduler = self._one_cycle(self.config.max_steps)
        self._check_pace(per_step)
        return self.config.max_steps

    SLOW_FACTOR = 1.5  # a probed step this many times the config's expected upper bound is "far slower"

    def _check_pace(self, per_step: float) -> None:
        """One line when a step is far slower than ``expected_step_seconds`` says, naming the likely cause."""
        expected = self.config.expected_step_seconds
        if len(expected) != 2 or per_step <= self.SLOW_FACTOR * expected[1]:
            return
        causes = slow_step_causes(self.device, self.dtype, describe_optimizer(self.optimizer))
        print(f"warning: {per_step:.2f} s a step, far slower than the {expected[0]:g}-{expected[1]:g} s this config "
              f"expects, so the time budget buys {self.config.max_steps} steps; likely cause: {causes}",
              file=sys.stderr)

    def describe(self) -> dict:
        """How this model is trained, as the model file records it (``provenance``)."""
        names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        return {"machine": describe(self.device), "optimizer": describe_optimizer(self.optimizer),
                "precision": names[self.dtype], "steps": self.step, "torch": str(torch.__version__)}

    def refit_to_deadline(self, deadline: float, seconds_per_step: float, limit: int) -> int:
        """Mid-run: set ``max_steps`` so that the remaining steps, at ``seconds_per_step``
        (measured, dev evaluations and checkpoints included), end at ``deadline``
        (``time.monotonic()``), but at most ``limit``. The OneCycle schedule is rebuilt
        for the new length at the current step, so the learning rate moves on from
        where it is and still anneals to its floor at the last step."""
        remaining = max(0.0, deadline - time.monotonic())
        steps = min(limit, self.step + max(1, int(remaining / seconds_per_step)))
        if steps != self.config.max_steps:
            self.config.max_steps = steps
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the fast-forward step below is not an optimiser step
                self.scheduler = self._one_cycle(steps)
                self.scheduler.last_epoch = self.step - 1
                self.scheduler.step()
        return steps

    @classmethod
    def for_ctc(cls, model, tokenizer, feature_config: FeatureConfig, train_entries: list[dict],
                config: TrainConfig, exp_dir, dev_entries: list[dict] | None = None, extra: dict | None = None,
                transform: Callable | None = None):
        """Speech recognition: manifest entries with text, CTC loss, greedy dev WER/CER.
        ``transform`` changes each training waveform (``asr.augment.WaveformAugment``)."""
        dataset = SpeechDataset(train_entries, tokenizer, cache_audio=config.cache_audio, transform=transform)
        trainer = cls(model, dataset, lambda out, batch: ctc_loss(*out, batch, tokenizer.blank),
                      {"task": "ctc", "tokenizer": tokenizer.to_dict(), "extra": extra or {}},
                      feature_config, config, exp_dir, dev_entries, evaluate_ctc)
        trainer.tokenizer = tokenizer
        return trainer

    # ----------------------------------------------------------------- checkpoints

    @property
    def checkpoint_path(self) -> Path:
        return self.exp_dir / "checkpoints" / "last.pt"

    def model_state(self) -> dict:
        """What inference needs: configs, tokenizer, weights; and how it was trained."""
        return {
            **self.meta,
            "provenance": self.describe(),
            "model_config": asdict(self.model.config),
            "feature_config": asdict(self.feature_config),
            "model": self.model.state_dict(),
        }

    def save_checkpoint(self) -> Path:
        return checkpoint.save_atomic({
            **self.model_state(),
            "train_config": asdict(self.config),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "sampler": {"epoch": self.epoch, "position": self.position},
            "skipped": self.skipped,
            "rng": checkpoint.rng_state(),
            "history": self.history,
        }, self.checkpoint_path)

    def load_checkpoint(self, path=None) -> None:
        data = checkpoint.load(path or self.checkpoint_path, map_location=self.device)
        if data.get("model_config") != asdict(self.model.config):
            raise AsrError("the checkpoint's model config differs from this experiment's; use another --exp-dir")
        self.model.load_state_dict(data["model"])
        self.config.max_steps = int(data["train_config"]["max_steps"])  # a time budget may have set it
        self.scheduler = self._one_cycle(self.config.max_steps)
        self.optimizer.load_state_dict(data["optimizer"])  # after the schedule: it restores lr and betas
        self.scheduler.load_state_dict(data["scheduler"])
        self.scaler.load_state_dict(data["scaler"])
        self.step = int(data["step"])
        self.epoch, self.position = int(data["sampler"]["epoch"]), int(data["sampler"]["position"])
        self.skipped = int(data.get("skipped", 0))  # checkpoints from before it was kept: none in a row
        self.history = data["history"]
        checkpoint.set_rng_state(data["rng"])

    def export(self, path) -> Path:
        """A model file for inference: no optimiser state."""
        return checkpoint.save_atomic(self.model_state(), path)

    # ----------------------------------------------------------------- loop

    def train_step(self, batch: Batch) -> tuple[float, float]:
        self.model.train()
        batch = batch.to(self.device)
        feats, frames = self.features(batch.audio, batch.audio_lengths)
        if self.augment is not None:
            feats = self.augment.train()(feats)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            outputs = self.model(feats, frames)
        loss = self.loss_fn(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler.is_enabled() or torch.isfinite(grad_norm):
            self.scaler.step(self.optimizer)  # fp16's GradScaler skips non-finite steps itself
            self.skipped = 0
        else:  # the weights stay as they were; the schedule moves on
            self.skipped += 1
            if self.skipped >= self.MAX_SKIPPED:
                raise AsrError(f"training diverged: {self.skipped} updates in a row had non-finite gradients "
                               f"(step {self.step + 1}); lower the learning rate, or train in fp32")
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return loss.item(), float(grad_norm)

    def batches(self):
        """Batches from the saved position on, across epochs, forever.

        ``self.position`` counts the batches of the current epoch handed out (and,
        since one is fetched only when it is about to be trained on, trained on),
        so prefetching workers do not shift the resume point.
        """
        while True:
            self.sampler.epoch, self.sampler.position = self.epoch, self.position
            if self.config.num_workers:
                source = torch.utils.data.DataLoader(
                    self.dataset, batch_sampler=self.sampler, collate_fn=self.collate,
                    num_workers=self.config.num_workers)
            else:
                source = (self.collate([self.dataset[i] for i in indices]) for indices in self.sampler)
            for batch in source:
                self.position += 1
                yield batch
            self.epoch += 1
            self.position = 0

    def run(self, resume: bool = False, stop_after: int | None = None, progress: bool = True) -> Path:
        """Train to ``max_steps`` (or ``stop_after`` more steps), checkpointing on the way.

        Returns the path of the last checkpoint.
        """
        from tqdm import tqdm

        deadline, refits = None, []
        if resume and self.checkpoint_path.exists():
            self.load_checkpoint()  # a resumed run keeps the length it had
        elif self.config.time_budget_minutes > 0 and self.step == 0:
            budget = self.config.time_budget_minutes * 60
            begun = time.monotonic()
            deadline = begun + budget
            steps = self.fit_to_time_budget(self.config.time_budget_minutes)
            print(f"time budget {self.config.time_budget_minutes:g} min: {steps} steps on this machine")
            # re-fit the length at even fractions of the planned steps or of the budget, whichever
            # comes first (steps far slower than the probe's reach a step fraction too late),
            # on the pace since the last re-fit
            n = self.config.budget_refits
            refits = [(steps * k // (n + 1), begun + budget * k / (n + 1)) for k in range(1, n + 1)]
            last_step, last_time, limit = 0, time.monotonic(), 2 * steps
        if not self._announced:
            self._announced = True
            print(f"training on {describe(self.device)}: optimizer {describe_optimizer(self.optimizer)}, "
                  f"precision {self.describe()['precision']}", flush=True)
        writer = self._writer()
        target = self.config.max_steps if stop_after is None else min(self.config.max_steps, self.step + stop_after)
        bar = tqdm(total=self.config.max_steps, initial=self.step, desc="training", unit="step",
                   disable=not progress, dynamic_ncols=True)
        losses: list[float] = []
        batches = self.batches()
        batch = None
        try:
            while self.step < target:
                batch = next(batches)
                loss, grad_norm = self.train_step(batch)
                losses.append(loss)
                bar.update(1)
                if self.step % self.config.log_every == 0 or self.step == target:
                    lr = self.scheduler.get_last_lr()[0]
                    mean = sum(losses) / len(losses)
                    losses.clear()
                    self.history["step"].append(self.step)
                    self.history["loss"].append(mean)
                    self.history["lr"].append(lr)
                    bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.2e}")
                    if writer:
                        writer.add_scalar("train/loss", mean, self.step)
                        writer.add_scalar("train/lr", lr, self.step)
                        writer.add_scalar("train/grad_norm", grad_norm, self.step)
                if self.config.eval_every and self.step % self.config.eval_every == 0 and self.step < target:
                    self._evaluate(writer, batch)
                if self.step % self.config.checkpoint_every == 0 and self.step < target:
                    self.save_checkpoint()
                if (refits and self.step < target
                        and (self.step >= refits[0][0] or time.monotonic() >= refits[0][1])):
                    refits.pop(0)
                    pace = (time.monotonic() - last_time) / (self.step - last_step)
                    steps = self.refit_to_deadline(deadline, pace, limit)
                    last_step, last_time = self.step, time.monotonic()
                    target = steps if stop_after is None else min(steps, target)
                    bar.total = steps
                    bar.refresh()
                    bar.write(f"time budget: {pace:.2f} s per step so far; {steps} steps in all")
            if self.step >= self.config.max_steps and batch is not None:
                self._evaluate(writer, batch)
            path = self.save_checkpoint()
        except KeyboardInterrupt:
            bar.close()
            path = self.save_checkpoint()
            raise AsrError(f"interrupted at step {self.step}; resume with --resume (checkpoint {path})") from None
        finally:
            bar.close()
            if writer:
                writer.close()
        self.plot_learning_curve()
        return path

    # ----------------------------------------------------------------- monitoring

    def _writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a declared dependency
            return None
        return SummaryWriter(str(self.exp_dir / "tensorboard"), purge_step=self.step or None)

    def _evaluate(self, writer, batch: Batch) -> None:
        if not (self.evaluate and self.dev_entries):
            return
        self.model.eval()
        entries = self.dev_entries[: self.config.max_eval_utterances]
        metrics, pairs = self.evaluate(self, entries)
        self.history["eval_step"].append(self.step)
        self.history["eval"].append(metrics)
        if writer:
            for name, value in metrics.items():
                writer.add_scalar(f"dev/{name}", value, self.step)
            table = "\n\n".join(f"REF: {r}  \nHYP: {h}" for r, h in pairs[:5])
            writer.add_text("dev/samples", table, self.step)
            with torch.no_grad():
                feats, frames = self.features(batch.audio[:1].to(self.device), batch.audio_lengths[:1].to(self.device))
            image = feats[0, :, : int(frames[0])].flip(0)
            image = (image - image.min()) / (image.max() - image.min() + 1e-9)
            writer.add_image("train/log_mel", image[None].cpu(), self.step)

    def plot_learning_curve(self) -> Path | None:
        """Save the loss (and dev metrics) against steps as a PNG in the experiment folder."""
        if not self.history["step"]:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(self.history["step"], self.history["loss"], label="train loss")
        ax.set_xlabel("step")
        ax.set_ylabel("CTC loss")
        ax.set_yscale("log")
        if self.history["eval"]:
            ax2 = ax.twinx()
            for name in self.history["eval"][0]:
                ax2.plot(self.history["eval_step"], [m[name] for m in self.history["eval"]], "o-", label=f"dev {name}")
            ax2.set_ylabel("dev error rate")
            ax2.legend(loc="upper center")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.exp_dir / "learning_curve.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def evaluate_ctc(trainer: Trainer, entries: list[dict]) -> tuple[dict, list[tuple[str, str]]]:
    """Greedy WER/CER of the current model on ``entries``; used for dev monitoring."""
    from asr.scoring import score
    from asr.inference import Recognizer, recognize_entries

    recognizer = Recognizer(trainer.model, trainer.features, trainer.tokenizer, trainer.device)
    hyps = recognize_entries(recognizer, entries, max_frames=trainer.config.max_frames)
    refs = {e["id"]: e["text"] for e in entries}
    result = score(refs, hyps)
    return {"wer": result.wer.rate, "cer": result.cer.rate}, [(refs[k], hyps[k]) for k in list(refs)[:10]]


def steps_for_epochs(durations: list[float], max_frames: int, epochs: float, frame_shift: float = 0.01) -> int:
    """How many updates ``epochs`` passes over the data take with this batching."""
    sampler = BucketingBatchSampler(durations, max_frames, frame_shift)
    return max(1, math.ceil(len(sampler) * epochs))

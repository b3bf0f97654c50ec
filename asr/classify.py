"""Clip classification (keywords, sounds) over the toolkit's front ends and encoder.

What the recipes ``speech_commands``, ``esc50`` and ``fsdd`` share:

* configs: ``ClassifyConfig`` (features, model, training, augmentation, early
  stopping, the learning-rate range test), which each recipe extends with its
  ``data`` table;
* waveform augmentation (``asr.augment``: time shift, speed, noise at a random
  SNR) of the training clips; SpecAugment on log-mels runs in the ``Trainer``;
* the task folder: ``prepare`` stages write ``<exp>/manifests/{train,dev,test}.jsonl``
  and ``<exp>/task.json`` (labels, noise recordings), and the stages below read them;
* ``train_stage`` (the generic ``Trainer`` in chunks, early stopping on dev
  accuracy, the best model kept as ``<exp>/model.pt``), ``lr_find_stage`` and
  ``evaluate_stage`` (accuracy, a per-class table, the most-confused pairs and
  a confusion-matrix PNG under ``<exp>/results/<set>/``);
* inference: ``load_classifier`` and ``classify``, which ``asr classify`` calls.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from asr import checkpoint
from asr.augment import AugmentConfig, WaveformAugment
from asr.data import (Batch, BucketingBatchSampler, ClassificationDataset, collate, load_entry_audio, read_manifest,
                      write_manifest)
from asr.errors import AsrError
from asr.features import FeatureConfig, FeatureExtractor, SpecAugmentConfig
from asr.model import (FEATURE_KIND_OF, Classifier, ClassifierConfig, Ensemble, build_model, count_parameters,
                       named_config)
from asr.training import TrainConfig

SPLITS = ("train", "dev", "test")


# --------------------------------------------------------------------------- configs

@dataclass
class ModelSection:
    """The ``[model]`` table of a classification recipe."""

    kind: str = "cnn2d"  # "encoder", "cnn2d", "complex_cnn" or "m5"
    pooling: str = "mean"  # "mean" or "attention"
    encoder_name: str = "small"  # kind "encoder": the named encoder config (asr.model.NAMED_CONFIGS)
    encoder: dict = field(default_factory=dict)  # overrides of the named encoder config
    channels: tuple[int, ...] = ()  # baselines: convolution widths (() = the kind's default)
    dropout: float = 0.1
    init_from: str = ""  # a model file whose body weights start training: an ASR model (kind "encoder"),
    # or a classifier of the same kind, trained on other labels (transfer learning)
    freeze_encoder: bool = False  # train the pooling head only (with init_from: that body as it is)


@dataclass
class EarlyStoppingConfig:
    eval_every: int = 100  # steps between dev evaluations
    patience: int = 5  # evaluations without improvement before training stops; 0 = never stop early
    min_delta: float = 0.0  # an improvement must raise dev accuracy by more than this


@dataclass
class LRFindConfig:
    min_lr: float = 1e-6
    max_lr: float = 1.0
    steps: int = 100
    diverge: float = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum


def default_train_config() -> TrainConfig:
    return TrainConfig(max_steps=2000, lr=3e-3, pct_start=0.2, max_frames=6400, max_batch_size=64, sortagrad=False,
                       log_every=10, checkpoint_every=100, cache_audio=True,
                       specaugment=SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=10,
                                                     time_ratio=0.15))


@dataclass
class SelfTrainConfig:
    """Unsupervised adaptation to new recordings (a new speaker) by self-training: the model labels
    the unlabelled clips, and each member is fine-tuned on the training set plus the clips it is
    sure of; repeated ``rounds`` times, each round labelling with the model of the one before."""

    rounds: int = 0  # 0 = off
    threshold: float = 0.9  # a clip is used once the model gives its label at least this probability
    repeat: int = 3  # each such clip is seen this many times per pass over the training set
    steps: int = 300  # fine-tuning steps of each member, each round (a one-cycle schedule of their own)
    lr: float = 5e-4  # their peak learning rate
    # rescale the model's probabilities on the clips so that the classes take the shares they have in
    # the training set (balance_to_prior) before the sure ones are picked: a class that the new
    # recordings pull others into cannot take them all
    balance: bool = False


@dataclass
class ClassifyConfig:
    """What every classification recipe configures; recipes add ``data`` (and ``download``)."""

    exp_dir: str = "exp/classify"
    features: FeatureConfig = field(default_factory=lambda: FeatureConfig(n_mels=80))
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=default_train_config)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0 = off
    ensemble: int = 1  # models trained from seeds train.seed, train.seed + 1, ...; their probabilities averaged
    # evaluate: also score each set with BatchNorm statistics re-estimated on its own clips (unlabelled),
    # under results/<set>-adapted/ (see adapt_batchnorm)
    adapt_batchnorm: bool = False
    self_train: SelfTrainConfig = field(default_factory=SelfTrainConfig)

    @property
    def exp(self) -> Path:
        return Path(self.exp_dir)


# --------------------------------------------------------------------------- the task folder

def write_task(exp, labels: list[str], splits: dict[str, list[dict]], noise_files: list[str] = ()) -> None:
    """Write ``<exp>/manifests/<split>.jsonl`` and ``<exp>/task.json`` (labels, noise recordings)."""
    exp = Path(exp)
    for name, entries in splits.items():
        write_manifest(entries, exp / "manifests" / f"{name}.jsonl")
    (exp / "task.json").write_text(json.dumps({"labels": list(labels), "noise_files": list(noise_files)},
                                              indent=2) + "\n")


def read_task(exp) -> tuple[list[str], dict[str, list[dict]], list[str]]:
    """(labels, {split: entries}, noise files) as ``write_task`` left them."""
    exp = Path(exp)
    if not (exp / "task.json").exists():
        raise AsrError(f"{exp}: no task.json; run the prepare stage first")
    task = json.loads((exp / "task.json").read_text())
    splits = {name: read_manifest(exp / "manifests" / f"{name}.jsonl") for name in SPLITS
              if (exp / "manifests" / f"{name}.jsonl").exists()}
    return task["labels"], splits, task.get("noise_files", [])


def describe_splits(labels: list[str], splits: dict[str, list[dict]]) -> str:
    parts = [f"{name} {len(entries)} clips ({sum(e['duration'] for e in entries) / 60:.1f} min)"
             for name, entries in splits.items()]
    return f"{len(labels)} classes; " + ", ".join(parts)


# --------------------------------------------------------------------------- model and training

def build_classifier(section: ModelSection, features: FeatureConfig, n_classes: int,
                     verbose: bool = True) -> tuple[Classifier, FeatureConfig]:
    """The classifier a recipe's ``[model]`` table describes, and the features it reads.

    The feature kind follows the model kind (log-mels, complex spectrograms or
    waveforms); a ``features.kind`` set to something else is an error. With
    ``init_from`` the body and the front end are those of the given model file (its
    checkpoint carries both configs), so its weights always fit: an ASR model's encoder
    and log-mels, or the body and features of a classifier of the same kind trained on
    other labels (a Speech Commands model, say); the pooling head starts afresh.
    """
    from asr.model import ModelConfig, load_encoder_weights

    try:
        kind = FEATURE_KIND_OF[section.kind]
    except KeyError:
        raise AsrError(f"unknown model kind {section.kind!r}; choose from {', '.join(FEATURE_KIND_OF)}") from None
    if features.kind not in ("logmel", kind):
        raise AsrError(f"model kind {section.kind!r} reads {kind!r} features, but features.kind is {features.kind!r}")
    features = replace(features, kind=kind)
    source = checkpoint.load(section.init_from) if section.init_from else None
    task = source.get("task", "ctc") if source is not None else None
    if task == "ctc" and section.kind != "encoder":
        raise AsrError(f"{section.init_from}: an ASR model; its encoder can start model.kind = \"encoder\" only "
                       f"(not {section.kind!r})")
    if task not in (None, "ctc", "classify"):
        raise AsrError(f"{section.init_from}: a {task!r} model, not a speech recognition model or a classifier")
    channels = tuple(section.channels)
    try:
        if source is not None:
            theirs = FeatureConfig(**source["feature_config"])
            if theirs != features and verbose:
                print(f"features: those of {section.init_from} ({theirs.kind}, n_mels={theirs.n_mels}, "
                      f"hop_length={theirs.hop_length}), not the recipe's")
            features = theirs
        if task == "classify":
            body = ClassifierConfig.from_dict(source["model_config"])
            if body.kind != section.kind:
                raise AsrError(f"{section.init_from}: a {body.kind!r} classifier, but model.kind is {section.kind!r}")
            channels = body.channels
            encoder = replace(body.encoder, dropout=section.dropout, **section.encoder) if body.encoder else None
        elif task == "ctc":
            encoder = replace(ModelConfig.from_dict(source["model_config"]), dropout=section.dropout, **section.encoder)
        elif section.kind == "encoder":
            encoder = named_config(section.encoder_name, n_mels=features.n_mels, **section.encoder)
        else:
            encoder = None
        config = ClassifierConfig(kind=section.kind, n_classes=n_classes, pooling=section.pooling,
                                  n_feats=features.feature_dim, channels=channels,
                                  dropout=section.dropout, encoder=encoder)
    except (KeyError, TypeError, ValueError) as exc:
        raise AsrError(f"bad model config: {exc}") from None
    model = Classifier(config)
    if source is not None:
        n = load_encoder_weights(model, source)
        if verbose:
            print(f"encoder initialised from {section.init_from} ({n} tensors)")
    if section.freeze_encoder:
        model.encoder.requires_grad_(False)
    return model, features


def classification_loss(log_probs: torch.Tensor, batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of (batch, n_classes) log-probs against ``batch.targets[:, 0]``
    (mixed with ``targets[:, 1]`` by the weights ``batch.mix`` of a mixup batch)."""
    log_probs = log_probs.float()
    loss = F.cross_entropy(log_probs, batch.targets[:, 0], label_smoothing=label_smoothing, reduction="none")
    if batch.mix is not None:
        other = F.cross_entropy(log_probs, batch.targets[:, 1], label_smoothing=label_smoothing, reduction="none")
        loss = batch.mix * loss + (1 - batch.mix) * other
    return loss.mean()


class MixupCollate:
    """``collate``, then mixup (Zhang et al. 2018): each clip of the batch is mixed with
    another clip of the same batch, ``w * a + (1 - w) * b`` with ``w`` drawn from
    Beta(alpha, alpha) and folded to at least 0.5, and the loss weighs both labels
    by ``w`` and ``1 - w``. Draws from torch's global generator, so resume is exact."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def __call__(self, items):
        batch = collate(items)
        n = batch.audio.shape[0]
        if n < 2:
            return batch
        beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))
        w = beta.sample((n,))
        w = torch.maximum(w, 1 - w)
        partner = torch.randperm(n)
        audio = w[:, None] * batch.audio + (1 - w[:, None]) * batch.audio[partner]
        targets = torch.stack([batch.targets[:, 0], batch.targets[partner, 0]], dim=1)
        return Batch(audio, torch.maximum(batch.audio_lengths, batch.audio_lengths[partner]), targets,
                     torch.full((n,), 2, dtype=torch.long), batch.indices, w)


class _Loss:
    """A picklable ``loss_fn(outputs, batch)`` for the Trainer."""

    def __init__(self, label_smoothing: float) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, log_probs, batch):
        return classification_loss(log_probs, batch, self.label_smoothing)


def make_trainer(config: ClassifyConfig, labels: list[str], train_entries: list[dict], noise_files: list[str],
                 exp, train: TrainConfig | None = None, verbose: bool = True):
    """A ``Trainer`` for a classifier: the dataset with augmentation, cross-entropy, classify meta."""
    from asr.training import Trainer, seed_everything

    train = train or config.train
    seed_everything(train.seed)  # the initial weights too come from the seed
    model, features = build_classifier(config.model, config.features, len(labels), verbose=verbose)
    if features.kind != "logmel" and train.specaugment is not None:
        train = replace(train, specaugment=None)  # SpecAugment masks mel bands and frames: log-mels only
    augment = WaveformAugment(config.augment, noise_files, seed=train.seed)
    dataset = ClassificationDataset(train_entries, labels, transform=augment, cache_audio=train.cache_audio)
    meta = {"task": "classify", "labels": list(labels)}
    batches = MixupCollate(config.mixup) if config.mixup > 0 else collate
    return Trainer(model, dataset, _Loss(config.label_smoothing), meta, features, train, exp, collate_fn=batches)


@torch.no_grad()
def predict(net: Classifier, features: FeatureExtractor, entries: list[dict], device="cpu",
            max_frames: int = 20000, progress: bool = False) -> torch.Tensor:
    """Log-probs (len(entries), n_classes) for manifest entries, in their order (no augmentation)."""
    net.eval()
    out = torch.zeros(len(entries), net.config.n_classes)
    for indices, log_probs in _run_batches(net, features, entries, device, max_frames, progress):
        out[indices] = log_probs.float().cpu()
    return out


@torch.no_grad()
def adapt_batchnorm(net, features: FeatureExtractor, entries: list[dict], device="cpu",
                    max_frames: int = 20000) -> int:
    """Re-estimate every BatchNorm layer's statistics on ``entries`` (no labels), in place.

    Test-time normalisation to a new speaker or recording condition: the running means
    and variances learnt on the training speakers are replaced by the average over these
    clips, batched as ``predict`` batches them; weights and everything else stay as they
    are. Returns the number of layers adapted; raises ``AsrError`` if there is none (the
    shared encoder normalises with LayerNorm, per frame, and has nothing to adapt).
    """
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise AsrError("this model has no BatchNorm layers to adapt")
    if not entries:
        raise AsrError("no clips to adapt the BatchNorm statistics on")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    net.eval()
    for m in norms:
        m.train()
    try:
        for _ in _run_batches(net, features, entries, device, max_frames):
            pass
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.eval()
    return len(norms)


def _run_batches(net, features: FeatureExtractor, entries: list[dict], device, max_frames: int,
                 progress: bool = False):
    """Run ``net`` over ``entries`` (no augmentation) in length-bucketed batches, in a fixed
    order; yields (indices into entries, the net's output), leaving the net's modes as they are."""
    frame_shift = features.config.frame_shift
    longest = max(math.ceil(e["duration"] / frame_shift) for e in entries)
    sampler = BucketingBatchSampler([e["duration"] for e in entries], max(max_frames, longest + 1), frame_shift,
                                    shuffle=False)
    batches = sampler.batches(0)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="classifying", unit="batch", leave=False)
    for indices in batches:
        audio, lengths = _pad([load_entry_audio(entries[i]) for i in indices])
        feats, frames = features(audio.to(device), lengths.to(device))
        yield indices, net(feats, frames)


def _pad(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = collate([(a, torch.zeros(1, dtype=torch.long)) for a in items])
    return batch.audio, batch.audio_lengths


def _dev_metrics(net, features: FeatureExtractor, entries: list[dict], labels: list[str], device="cpu",
                 max_frames: int = 20000) -> dict:
    log_probs = predict(net, features, entries, device, max_frames)
    index = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([index[e["label"]] for e in entries])
    return {"accuracy": float((log_probs.argmax(-1) == targets).float().mean()),
            "loss": float(F.nll_loss(log_probs, targets))}


def train_classifier(config: ClassifyConfig, labels: list[str], splits: dict[str, list[dict]],
                     noise_files: list[str], exp=None, resume: bool = False, progress: bool = True) -> dict:
    """Train with early stopping on dev accuracy; the best model is ``<exp>/model.pt``.

    Training runs in chunks of ``early_stopping.eval_every`` steps; after each the
    dev set is scored, TensorBoard gets ``dev/accuracy`` and ``dev/loss``, and the
    model is exported when dev accuracy improved. ``patience`` evaluations without
    improvement end training before ``train.max_steps``. The early-stopping state
    lives in ``<exp>/early_stopping.json`` beside the Trainer's checkpoint, so
    ``resume`` continues both. Returns a summary dict.
    """
    exp = Path(exp or config.exp)
    exp.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(config, labels, splits["train"], noise_files, exp)
    dev = splits.get("dev") or []
    stop = config.early_stopping
    state_path = exp / "early_stopping.json"
    state = {"best_step": None, "best_accuracy": -1.0, "evals": [], "stopped": False, "seconds": 0.0}
    if resume and state_path.exists() and trainer.checkpoint_path.exists():
        state = json.loads(state_path.read_text())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    frozen = f" ({trainable:,} trained)" if trainable < count_parameters(trainer.model) else ""
    print(f"{config.model.kind} classifier: {count_parameters(trainer.model):,} parameters{frozen}; "
          f"{trainer.feature_config.kind} features; " + describe_splits(labels, splits))
    (exp / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str) + "\n")
    writer = _dev_writer(exp)
    started = time.perf_counter() - state["seconds"]
    first = True
    try:
        while not state["stopped"] and (first or trainer.step < trainer.config.max_steps):
            every = stop.eval_every if dev else trainer.config.max_steps
            chunk = every - trainer.step % every
            trainer.run(resume=resume and first, stop_after=chunk, progress=progress)
            first = False
            if state["stopped"] or not dev:
                break
            metrics = _dev_metrics(trainer.model, trainer.features, dev, labels, trainer.device, trainer.config.max_frames)
            state["evals"].append({"step": trainer.step, **metrics})
            if writer:
                for name, value in metrics.items():
                    writer.add_scalar(f"dev/{name}", value, trainer.step)
                writer.flush()
            improved = metrics["accuracy"] > state["best_accuracy"] + stop.min_delta
            if improved or state["best_step"] is None:
                state["best_step"], state["best_accuracy"] = trainer.step, metrics["accuracy"]
                trainer.export(exp / "model.pt")
            since = sum(1 for e in state["evals"] if e["step"] > state["best_step"])
            if stop.patience and since >= stop.patience:
                state["stopped"] = True
            print(f"step {trainer.step}: dev accuracy {100 * metrics['accuracy']:.2f}% "
                  f"(best {100 * state['best_accuracy']:.2f}% at step {state['best_step']})"
                  + (f"; no improvement for {since} evaluations: stopping" if state["stopped"] else ""), flush=True)
            state["seconds"] = time.perf_counter() - started
            _write_json(state, state_path)
    finally:
        if writer:
            writer.close()
    if not dev:
        trainer.export(exp / "model.pt")
        state["best_step"] = trainer.step
    state["seconds"] = time.perf_counter() - started
    _write_json(state, state_path)
    plot_learning_curve(trainer.history, state["evals"], exp / "learning_curve.png")
    summary = {"model": str(exp / "model.pt"), "parameters": count_parameters(trainer.model),
               "steps": trainer.step, "best_step": state["best_step"],
               "dev_accuracy": state["best_accuracy"] if dev else None, "train_seconds": round(state["seconds"], 1)}
    print(f"trained {trainer.step} steps in {state['seconds'] / 60:.1f} min; best dev accuracy "
          + (f"{100 * state['best_accuracy']:.2f}% at step {state['best_step']}" if dev else "n/a")
          + f"; model saved to {exp / 'model.pt'}")
    return summary


def _dev_writer(exp: Path):
    """TensorBoard writer for dev metrics: a run of its own (``tensorboard/dev``) beside the Trainer's."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a declared dependency
        return None
    return SummaryWriter(str(exp / "tensorboard" / "dev"))


def _write_json(data, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def plot_learning_curve(history: dict, evals: list[dict], path) -> Path | None:
    """Training loss and dev accuracy against steps, as a PNG."""
    if not history.get("step"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history["step"], history["loss"], label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    if evals:
        ax2 = ax.twinx()
        ax2.plot([e["step"] for e in evals], [100 * e["accuracy"] for e in evals], "o-", color="C1",
                 label="dev accuracy")
        ax2.set_ylabel("dev accuracy (%)")
        ax2.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- learning-rate range test

def find_lr(trainer, min_lr: float, max_lr: float, steps: int, diverge: float = 4.0,
            beta: float = 0.98, progress: bool = True) -> tuple[list[float], list[float]]:
    """Train ``steps`` updates with the learning rate rising exponentially from ``min_lr``
    to ``max_lr`` (Smith, 2017); returns (learning rates, smoothed losses).

    Stops early once the smoothed loss exceeds ``diverge`` times its minimum.
    """
    from tqdm import tqdm

    gamma = (max_lr / min_lr) ** (1 / max(1, steps - 1))
    batches = trainer.batches()
    lrs, losses, average, best = [], [], 0.0, math.inf
    for i in tqdm(range(steps), desc="lr range test", unit="step", disable=not progress):
        lr = min_lr * gamma ** i
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        loss, _ = trainer.train_step(next(batches))
        if not math.isfinite(loss):
            break
        average = beta * average + (1 - beta) * loss
        smoothed = average / (1 - beta ** (i + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > diverge * best and i > steps // 10:
            break
    return lrs, losses


def suggest_lr(lrs: list[float], losses: list[float]) -> dict:
    """``min_loss_lr / 10`` (the usual pick for a one-cycle peak) and the steepest-descent point."""
    if len(lrs) < 3:
        raise AsrError("the learning-rate range test stopped too early to suggest anything")
    lo = np.log10(np.array(lrs))
    loss = np.array(losses)
    best = int(loss.argmin())
    grad = np.gradient(loss, lo)
    start = max(1, len(lrs) // 10)
    steepest = start + int(grad[start:max(best, start + 1)].argmin()) if best > start else best
    return {"min_loss_lr": lrs[best], "suggested_lr": lrs[best] / 10, "steepest_lr": lrs[steepest]}


def plot_lr_find(lrs: list[float], losses: list[float], suggestion: dict, path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    top = min(max(losses), 4 * min(losses)) if losses else 1
    ax.set_ylim(min(losses) * 0.9, max(top, losses[0]) * 1.05)
    for key, style in (("suggested_lr", "C2"), ("steepest_lr", "C3")):
        ax.axvline(suggestion[key], color=style, linestyle="--", label=f"{key.replace('_', ' ')} {suggestion[key]:.1e}")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    ax.set_title("learning-rate range test")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def lr_find_stage(config: ClassifyConfig, progress: bool = True, **_) -> dict:
    """Run the range test on the training set (from fresh weights); write ``<exp>/lr_find/lr_find.png``."""
    labels, splits, noise = read_task(config.exp)
    out = config.exp / "lr_find"
    lf = config.lr_find
    if not (0 < lf.min_lr < lf.max_lr) or lf.steps < 3:
        raise AsrError("lr_find needs 0 < min_lr < max_lr and at least 3 steps")
    train = replace(config.train, max_steps=lf.steps + 1)
    trainer = make_trainer(config, labels, splits["train"], noise, out, train=train)
    lrs, losses = find_lr(trainer, lf.min_lr, lf.max_lr, lf.steps, lf.diverge, progress=progress)
    suggestion = suggest_lr(lrs, losses)
    out.mkdir(parents=True, exist_ok=True)
    path = plot_lr_find(lrs, losses, suggestion, out / "lr_find.png")
    _write_json({**suggestion, "lrs": lrs, "losses": losses}, out / "lr_find.json")
    print(f"lowest loss at lr {suggestion['min_loss_lr']:.2e}; suggested peak lr (train.lr) "
          f"{suggestion['suggested_lr']:.2e}, steepest descent at {suggestion['steepest_lr']:.2e}; plot: {path}")
    return suggestion


# --------------------------------------------------------------------------- reports

@dataclass
class Report:
    """Counts of a classification run: ``confusion[ref, hyp]``."""

    labels: list[str]
    confusion: np.ndarray

    @classmethod
    def from_predictions(cls, labels: list[str], refs, hyps) -> "Report":
        confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
        np.add.at(confusion, (np.asarray(refs, dtype=np.int64), np.asarray(hyps, dtype=np.int64)), 1)
        return cls(list(labels), confusion)

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(1, self.total))

    def per_class(self) -> list[dict]:
        rows = []
        for i, label in enumerate(self.labels):
            support, predicted, correct = self.confusion[i].sum(), self.confusion[:, i].sum(), self.confusion[i, i]
            recall = correct / support if support else float("nan")
            precision = correct / predicted if predicted else float("nan")
            f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
            rows.append({"label": label, "clips": int(support), "correct": int(correct), "recall": float(recall),
                         "precision": float(precision), "f1": float(f1)})
        return rows

    def confused_pairs(self, n: int = 10) -> list[tuple[str, str, int, float]]:
        """The ``n`` most frequent errors: (reference, hypothesis, count, share of the reference's clips)."""
        pairs = []
        for i in range(len(self.labels)):
            for j in range(len(self.labels)):
                if i != j and self.confusion[i, j]:
                    pairs.append((self.labels[i], self.labels[j], int(self.confusion[i, j]),
                                  float(self.confusion[i, j] / self.confusion[i].sum())))
        return sorted(pairs, key=lambda p: (-p[2], -p[3], p[0], p[1]))[:n]

    def text(self, title: str = "") -> str:
        width = max(8, *(len(label) for label in self.labels))
        lines = [f"{title}: " if title else "", ""]
        lines[0] += f"accuracy {100 * self.accuracy:.2f}% ({int(np.trace(self.confusion))} / {self.total} clips)"
        head = f"{'class':<{width}} {'clips':>6} {'correct':>7} {'recall %':>8} {'precision %':>11} {'F1 %':>6}"
        lines += [head, "-" * len(head)]
        for row in self.per_class():
            lines.append(f"{row['label']:<{width}} {row['clips']:>6} {row['correct']:>7} {_pct(row['recall']):>8} "
                         f"{_pct(row['precision']):>11} {_pct(row['f1']):>6}")
        lines += ["", "most confused (reference -> hypothesis):"]
        pairs = self.confused_pairs()
        lines += [f"  {ref} -> {hyp}: {count} ({100 * share:.1f}% of {ref})" for ref, hyp, count, share in pairs]
        if not pairs:
            lines.append("  none")
        return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}"


def plot_confusion(report: Report, path, title: str = "") -> Path:
    """A confusion matrix: colour = share of the reference class, numbers = clip counts."""
    plt = _pyplot()
    n = len(report.labels)
    rows = report.confusion.sum(1, keepdims=True)
    share = report.confusion / np.maximum(rows, 1)
    size = max(5.0, 0.42 * n + 2.5)
    fontsize = 10 if n <= 12 else 8 if n <= 36 else 6
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), report.labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), report.labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(n):
        for j in range(n):
            count = report.confusion[i, j]
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize - 1,
                        color="white" if share[i, j] > 0.55 else "black")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the reference class")
    ax.set_title(f"{title + ': ' if title else ''}accuracy {100 * report.accuracy:.1f}% ({report.total} clips)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def write_report(report: Report, out_dir, title: str, entries: list[dict] | None = None,
                 log_probs: torch.Tensor | None = None) -> Path:
    """``report.txt``, ``confusion.png``, ``metrics.json`` and (given entries) ``predictions.tsv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.txt").write_text(report.text(title))
    plot_confusion(report, out / "confusion.png", title)
    _write_json({"accuracy": report.accuracy, "clips": report.total, "per_class": report.per_class(),
                 "confused_pairs": report.confused_pairs(), "labels": report.labels,
                 "confusion": report.confusion.tolist()}, out / "metrics.json")
    if entries is not None and log_probs is not None:
        probs, hyps = log_probs.exp().max(-1)
        with open(out / "predictions.tsv", "w", encoding="utf-8") as f:
            f.write("id\treference\thypothesis\tprobability\n")
            for e, h, p in zip(entries, hyps.tolist(), probs.tolist()):
                f.write(f"{e.get('id', e['audio_filepath'])}\t{e['label']}\t{report.labels[h]}\t{p:.4f}\n")
    return out


def score_set(model: ClipClassifier, entries: list[dict], title: str, out_dir, progress: bool = True) -> Report:
    """Score labelled clips; ``write_report`` under ``out_dir``, and the accuracy line printed."""
    index = {label: i for i, label in enumerate(model.labels)}
    log_probs = predict(model.net, model.features, entries, model.device, progress=progress)
    report = Report.from_predictions(model.labels, [index[e["label"]] for e in entries], log_probs.argmax(-1).tolist())
    folder = write_report(report, out_dir, title, entries, log_probs)
    print(report.text(title).split("\n", 1)[0] + f"; report: {folder / 'report.txt'}")
    return report


def evaluate_stage(config: ClassifyConfig, progress: bool = True, sets: tuple[str, ...] = ("test",),
                   **_) -> dict[str, Report]:
    """Score ``<exp>/model.pt`` on the prepared sets; reports under ``<exp>/results/<set>/``."""
    model = load_classifier(config.exp / "model.pt")
    labels, splits, _ = read_task(config.exp)
    if model.labels != labels:
        raise AsrError(f"{config.exp / 'model.pt'} was trained for other labels than {config.exp / 'task.json'}")

    def score(name: str, entries: list[dict]) -> Report:
        return score_set(model, entries, name, config.exp / "results" / name, progress)

    reports = {}
    for name in sets:
        entries = splits.get(name) or []
        if entries:
            reports[name] = score(name, entries)
    if config.adapt_batchnorm:  # after the plain scores: each set adapts the stored statistics afresh
        stored = {k: v.clone() for k, v in model.net.state_dict().items()}
        for name in list(reports):
            model.net.load_state_dict(stored)
            adapt_batchnorm(model.net, model.features, splits[name], model.device)
            reports[f"{name}-adapted"] = score(f"{name}-adapted", splits[name])
        model.net.load_state_dict(stored)
    return reports


def train_stage(config: ClassifyConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train on ``<exp>/manifests/train.jsonl`` with early stopping on ``dev.jsonl``."""
    labels, splits, noise = read_task(config.exp)
    if not splits.get("train"):
        raise AsrError(f"{config.exp}: no training clips; run the prepare stage first")
    if config.ensemble > 1:
        return train_ensemble(config, labels, splits, noise, resume=resume, progress=progress)
    return train_classifier(config, labels, splits, noise, config.exp, resume=resume, progress=progress)


def train_ensemble(config: ClassifyConfig, labels: list[str], splits: dict[str, list[dict]], noise_files: list[str],
                   resume: bool = False, progress: bool = True) -> dict:
    """``config.ensemble`` classifiers, each trained as ``train_classifier`` trains one, with seeds
    ``train.seed``, ``train.seed + 1``, ... in ``<exp>/members/<i>/``; ``<exp>/model.pt`` averages
    their probabilities. ``resume`` continues each member (finished ones are kept as they are)."""
    summaries = []
    for i in range(config.ensemble):
        member = replace(config, ensemble=1, train=replace(config.train, seed=config.train.seed + i))
        print(f"ensemble member {i + 1} of {config.ensemble} (seed {member.train.seed})", flush=True)
        summaries.append(train_classifier(member, labels, splits, noise_files, config.exp / "members" / str(i),
                                          resume=resume, progress=progress))
    path = save_ensemble([s["model"] for s in summaries], config.exp / "model.pt")
    dev = splits.get("dev") or []
    accuracy = None
    if dev:
        model = load_classifier(path)
        accuracy = _dev_metrics(model.net, model.features, dev, labels, model.device)["accuracy"]
    seconds = sum(s["train_seconds"] for s in summaries)
    print(f"ensemble of {config.ensemble}: trained in {seconds / 60:.1f} min; dev accuracy "
          + (f"{100 * accuracy:.2f}%" if dev else "n/a") + " (members: "
          + ", ".join("n/a" if s["dev_accuracy"] is None else f"{100 * s['dev_accuracy']:.2f}%" for s in summaries)
          + f"); model saved to {path}")
    return {"model": str(path), "parameters": sum(s["parameters"] for s in summaries),
            "steps": sum(s["steps"] for s in summaries), "best_step": [s["best_step"] for s in summaries],
            "dev_accuracy": accuracy, "train_seconds": round(seconds, 1)}


def save_ensemble(paths: list, out) -> Path:
    """One model file holding the classifiers in ``paths`` (one config, features and labels)."""
    models = [checkpoint.load(p) for p in paths]
    first = models[0]
    for path, data in zip(paths, models):
        if any(data.get(key) != first.get(key) for key in ("task", "model_config", "feature_config", "labels")):
            raise AsrError(f"{path}: not the same kind of classifier as {paths[0]}; they cannot be averaged")
    weights = {f"members.{i}.{name}": value for i, data in enumerate(models) for name, value in data["model"].items()}
    return checkpoint.save_atomic({**first, "members": len(models), "model": weights}, out)


def balance_to_prior(probs: torch.Tensor, prior: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """Rescale (clips, classes) probabilities so that each class's total over the clips is its
    share ``prior`` of them, each row still summing to one (Sinkhorn-Knopp: columns and rows
    scaled in turn). A model that hears a new speaker's "three" as "eight" gives "eight" far
    more than its share; scaled down, its weakest "eight"s go to their next most likely class.
    """
    q = probs.double().clamp_min(1e-12)
    target = prior.double() / prior.sum() * len(q)
    for _ in range(iterations):
        q = q * (target / q.sum(0))
        q = q / q.sum(1, keepdim=True)
    return q.to(probs.dtype)


def self_train(config: ClassifyConfig, model_path, labels: list[str], train_entries: list[dict],
               noise_files: list[str], unlabelled: list[dict], out, progress: bool = True) -> Path:
    """Adapt the classifier in ``model_path`` (one model or an ensemble) to the ``unlabelled``
    clips by self-training (``config.self_train``); returns the adapted ``<out>/model.pt``.

    Each round, the current model labels the clips (labels they carry are dropped unread;
    with ``balance`` its probabilities are first rescaled to the training set's class shares);
    those it gives a probability of at least ``threshold`` join the training set, ``repeat``
    times each, and every member is fine-tuned from its current weights for ``steps`` steps
    (seeds ``train.seed + 1000 * round + member``). Each round's model is kept as
    ``<out>/round<r>/model.pt``, so a rerun with the same model, clips and settings goes on
    after the last finished round; with anything changed it starts again.
    """
    import hashlib
    import shutil

    st = config.self_train
    if st.rounds < 1:
        raise AsrError("self_train.rounds is 0: there is nothing to adapt")
    if not 0.0 < st.threshold <= 1.0 or st.repeat < 1 or st.steps < 1 or st.lr <= 0:
        raise AsrError("self_train needs 0 < threshold <= 1, repeat >= 1, steps >= 1 and lr > 0")
    if not unlabelled:
        raise AsrError("self-training needs clips to adapt to; there are none")
    model_path, out = Path(model_path), Path(out)
    clips = [{k: v for k, v in e.items() if k != "label"} for e in unlabelled]
    stamp = json.dumps({"model": hashlib.sha256(model_path.read_bytes()).hexdigest(), "train": asdict(config.train),
                        "self_train": asdict(st), "clips": [e["audio_filepath"] for e in clips]},
                       sort_keys=True, default=str)
    marker = out / "self_train.json"
    if marker.exists() and marker.read_text() != stamp:
        print(f"{out}: made from another model, other clips or other settings; self-training again")
        for old in out.glob("round*"):
            shutil.rmtree(old)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(stamp)
    done = max((r for r in range(1, st.rounds + 1) if (out / f"round{r}" / "model.pt").exists()), default=0)
    model = load_classifier(out / f"round{done}" / "model.pt" if done else model_path)
    if model.labels != labels:
        raise AsrError(f"{model_path} was trained for other labels than {', '.join(labels)}")
    if done:
        print(f"self-training: round {done} of {st.rounds} already done")
    counts = torch.tensor([sum(e["label"] == label for e in train_entries) for label in labels], dtype=torch.float)
    for r in range(done + 1, st.rounds + 1):
        probs = predict(model.net, model.features, clips, model.device, progress=progress).exp()
        confidence, best = (balance_to_prior(probs, counts) if st.balance else probs).max(-1)
        kept = [dict(e, label=labels[i]) for e, p, i in zip(clips, confidence.tolist(), best.tolist())
                if p >= st.threshold]
        print(f"self-training round {r} of {st.rounds}: {len(kept)} of {len(clips)} clips labelled with "
              f"probability >= {st.threshold:g}", flush=True)
        members = list(model.net.members) if isinstance(model.net, Ensemble) else [model.net]
        paths = []
        for i, member in enumerate(members):
            folder = out / f"round{r}" / "members" / str(i)
            train = replace(config.train, max_steps=st.steps, lr=st.lr, seed=config.train.seed + 1000 * r + i,
                            time_budget_minutes=0.0)
            trainer = make_trainer(config, labels, train_entries + kept * st.repeat, noise_files, folder, train=train,
                                   verbose=False)
            try:
                trainer.model.load_state_dict(member.state_dict())
            except RuntimeError:
                raise AsrError(f"{model_path} is not a model of this config's [model] and [features]") from None
            trainer.run(progress=progress)
            paths.append(trainer.export(folder / "model.pt"))
        path = out / f"round{r}" / "model.pt"
        if len(paths) > 1:
            save_ensemble(paths, path)
        else:
            checkpoint.save_atomic(checkpoint.load(paths[0]), path)
        model = load_classifier(path)
    return checkpoint.save_atomic(checkpoint.load(out / f"round{st.rounds}" / "model.pt"), out / "model.pt")


# --------------------------------------------------------------------------- inference

@dataclass
class ClipClassifier:
    """A trained classifier with its front end and labels, ready for inference."""

    net: Classifier | Ensemble
    features: FeatureExtractor
    labels: list[str]
    device: torch.device

    @torch.no_grad()
    def log_probs(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """audio: (batch, samples) at 16 kHz -> (batch, n_classes)."""
        feats, frames = self.features(audio.to(self.device), lengths.to(self.device))
        return self.net(feats, frames).float().cpu()


def load_classifier(path, device="cpu") -> ClipClassifier:
    """Rebuild a classifier from its model file; nothing is hard-coded at load time."""
    data = checkpoint.load(path)
    if data.get("task") != "classify":
        raise AsrError(f"{path}: a {data.get('task', 'ctc')!r} model, not a classifier")
    try:
        config = ClassifierConfig.from_dict(data["model_config"])
        features = FeatureConfig(**data["feature_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AsrError(f"{path}: bad classifier config ({exc})") from None
    labels = list(data.get("labels", []))
    if len(labels) != config.n_classes:
        raise AsrError(f"{path}: {config.n_classes} classes but {len(labels)} labels")
    members = data.get("members", 1)
    stored = {name.split(".", 2)[1] for name in data["model"] if name.startswith("members.")}
    expected = {str(i) for i in range(members)} if isinstance(members, int) and members > 1 else set()
    if not isinstance(members, int) or members < 1 or stored != expected:
        raise AsrError(f"{path}: bad ensemble size {members!r} (the file holds weights for {max(len(stored), 1)})")
    net = build_model(config, members)
    net.load_state_dict(data["model"])
    device = torch.device(device)
    return ClipClassifier(net.to(device).eval(), FeatureExtractor(features).to(device).eval(), labels, device)


@dataclass
class Prediction:
    label: str
    probability: float
    top_k: list[tuple[str, float]]


def classify(model: ClipClassifier, audio, top_k: int = 1) -> Prediction:
    """Classify a file path or a 16 kHz waveform tensor (samples,)."""
    if not isinstance(audio, torch.Tensor):
        from asr.audio import load_audio

        audio = load_audio(audio)
    probs = model.log_probs(audio[None], torch.tensor([audio.numel()]))[0].exp()
    values, indices = probs.topk(max(1, min(top_k, len(model.labels))))
    ranked = [(model.labels[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
    return Prediction(ranked[0][0], ranked[0][1], ranked)


def format_prediction(prediction: Prediction, source: str, fmt: str) -> str:
    """One line: ``text`` is ``FILE<TAB>LABEL<TAB>PROB`` (and further label/prob pairs); ``json`` an object."""
    if fmt == "json":
        top = [{"label": label, "probability": round(p, 4)} for label, p in prediction.top_k]
        return json.dumps({"file": source, "label": prediction.label, "probability": round(prediction.probability, 4),
                           "top_k": top}) + "\n"
    return source + "".join(f"\t{label}\t{p:.4f}" for label, p in prediction.top_k) + "\n"


# --------------------------------------------------------------------------- comparing models

def compare_stage(config: ClassifyConfig, variants: dict[str, tuple[ModelSection, float | None]],
                  resume: bool = False, progress: bool = True) -> list[dict]:
    """Train and test several models on the prepared task, one folder each under ``<exp>/compare/``.

    ``variants`` maps a name to (model section, peak learning rate or None for
    ``train.lr``). Writes ``<exp>/compare/results.md`` (accuracy, parameters,
    training time) and ``results.json``; a variant whose folder already holds a
    result is not trained again.
    """
    labels, splits, noise = read_task(config.exp)
    root = config.exp / "compare"
    rows = []
    for name, (section, lr) in variants.items():
        sub = replace(config, exp_dir=str(root / name), model=section,
                      train=replace(config.train, lr=lr) if lr else config.train)
        result_path = sub.exp / "result.json"
        if result_path.exists() and not resume:
            rows.append(json.loads(result_path.read_text()))
            print(f"{name}: already done ({100 * rows[-1]['test_accuracy']:.2f}%); delete {result_path} to redo")
            continue
        print(f"=== {name}")
        write_task(sub.exp, labels, splits, noise)
        summary = train_classifier(sub, labels, splits, noise, sub.exp, resume=resume, progress=progress)
        report = evaluate_stage(sub, progress=progress, sets=("test",))["test"]
        row = {"name": name, "kind": section.kind, "init_from": section.init_from, "lr": sub.train.lr,
               "parameters": summary["parameters"], "steps": summary["steps"], "best_step": summary["best_step"],
               "train_seconds": summary["train_seconds"], "dev_accuracy": summary["dev_accuracy"],
               "test_accuracy": report.accuracy}
        _write_json(row, result_path)
        rows.append(row)
    head = "| model | parameters | steps (best) | training time | dev accuracy | test accuracy |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        dev = "-" if r["dev_accuracy"] is None else f"{100 * r['dev_accuracy']:.2f}%"
        lines.append(f"| {r['name']} | {r['parameters']:,} | {r['steps']} ({r['best_step']}) | "
                     f"{r['train_seconds'] / 60:.1f} min | {dev} | {100 * r['test_accuracy']:.2f}% |")
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.md").write_text("\n".join(lines) + "\n")
    _write_json(rows, root / "results.json")
    print("\n".join(lines))
    return rows

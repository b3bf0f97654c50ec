"""Clip classification (keywords, sounds) over the toolkit's front ends and encoder.

What the recipes ``speech_commands``, ``esc50`` and ``fsdd`` share:

* ``ClassifyConfig``: features, model, training, augmentation, early stopping and the
  learning-rate range test, which each recipe extends with its ``data`` table;
* ``build_classifier``: the model a ``[model]`` table describes, started from another
  model file's body when ``init_from`` names one;
* training: the generic ``Trainer`` with cross-entropy (and mixup), early stopping on
  dev accuracy (``asr.callbacks.EarlyStopping``, which keeps the best model as
  ``<exp>/model.pt``), ensembles of several seeds, and the range test;
* stages over the task folder that a recipe's ``prepare`` writes (``asr.data.write_task``):
  ``train_stage``, ``lr_find_stage`` and ``evaluate_stage`` (accuracy, a per-class
  table, the most-confused pairs and a confusion-matrix PNG under ``<exp>/results/<set>/``).

Inference (``load_classifier``, ``classify``) lives in ``asr.inference``; adapting a
trained classifier to new recordings by self-training in ``asr.adaptation``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from asr import callbacks
from asr.audio import SAMPLE_RATE
from asr.augment import AugmentConfig, WaveformAugment
from asr.checkpoint import ModelFile
from asr.config import to_dict
from asr.data import Batch, ClassificationDataset, collate, describe_splits, read_task
from asr.errors import AsrError
from asr.features import FeatureConfig, SpecAugmentConfig
from asr.inference import ClipClassifier, load_classifier, predict, run_batches
from asr.model import FEATURE_KIND_OF, Classifier, ClassifierConfig, ModelConfig, count_parameters, named_config
from asr.reports import Report, plot_lr_find, write_json, write_report
from asr.training import TrainConfig, Trainer, seed_everything


# --------------------------------------------------------------------------- configs

@dataclass
class ModelSection:
    """The ``[model]`` table of a classification recipe."""

    NAMED_BASES = {"encoder": ("encoder_name", named_config)}

    kind: str = "cnn2d"  # "encoder", "cnn2d", "complex_cnn" or "m5"
    pooling: str = "mean"  # "mean", "attention" or "meanmax"
    encoder_name: str = "small"  # kind "encoder": the named encoder config (asr.model.NAMED_CONFIGS)
    # kind "encoder": the encoder, starting from the named config (its n_mels follows [features])
    encoder: ModelConfig = field(default_factory=lambda: named_config("small"))
    channels: tuple[int, ...] = ()  # baselines: convolution widths (() = the kind's default)
    convs_per_block: int = 1  # cnn2d and complex_cnn: 3x3 convolutions before each 2x2 pooling
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
    """Unsupervised adaptation to new recordings (a new speaker) by self-training (``asr.adaptation``)."""

    rounds: int = 0  # 0 = off
    threshold: float = 0.9  # a clip is used once the model gives its label at least this probability
    repeat: int = 3  # each such clip is seen this many times per pass over the training set
    steps: int = 300  # fine-tuning steps of each member, each round (a one-cycle schedule of their own)
    lr: float = 5e-4  # their peak learning rate
    # rescale the model's probabilities on the clips so that the classes take the shares they have in
    # the training set (balance_to_prior) before the sure ones are picked
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
    # mixup as between-class learning (Tokozume et al. 2018): the audio mixing ratio allows for the two
    # clips' loudness, so that a quiet clip is heard in the mixture at the share its label gets
    mixup_by_loudness: bool = False
    ensemble: int = 1  # models trained from seeds train.seed, train.seed + 1, ...; their probabilities averaged
    # evaluate: also score each set with BatchNorm statistics re-estimated on its own clips (unlabelled),
    # under results/<set>-adapted/ (adapt_batchnorm)
    adapt_batchnorm: bool = False
    self_train: SelfTrainConfig = field(default_factory=SelfTrainConfig)

    @property
    def exp(self) -> Path:
        return Path(self.exp_dir)


# --------------------------------------------------------------------------- the model

def build_classifier(section: ModelSection, features: FeatureConfig, n_classes: int,
                     verbose: bool = True) -> tuple[Classifier, FeatureConfig]:
    """The classifier a recipe's ``[model]`` table describes, and the features it reads.

    The feature kind follows the model kind (log-mels, complex spectrograms or
    waveforms); a ``features.kind`` set to something else is an error. With
    ``init_from`` the body and the front end are those of the given model file (its
    configs carry both), so its weights always fit: an ASR model's encoder and log-mels,
    or the body and features of a classifier of the same kind trained on other labels
    (a Speech Commands model, say); the pooling head starts afresh.
    """
    try:
        kind = FEATURE_KIND_OF[section.kind]
    except KeyError:
        raise AsrError(f"unknown model kind {section.kind!r}; choose from {', '.join(FEATURE_KIND_OF)}") from None
    if features.kind not in ("logmel", kind):
        raise AsrError(f"model kind {section.kind!r} reads {kind!r} features, but features.kind is {features.kind!r}")
    features = replace(features, kind=kind)
    source = ModelFile.load(section.init_from) if section.init_from else None
    if source is not None and source.task == "ctc" and section.kind != "encoder":
        raise AsrError(f"{section.init_from}: an ASR model; its encoder can start model.kind = \"encoder\" only "
                       f"(not {section.kind!r})")
    channels, convs = tuple(section.channels), section.convs_per_block
    encoder = replace(section.encoder, n_mels=features.n_mels)
    if source is not None:
        if source.feature_config != features and verbose:
            theirs = source.feature_config
            print(f"features: those of {section.init_from} ({theirs.kind}, n_mels={theirs.n_mels}, "
                  f"hop_length={theirs.hop_length}), not the recipe's")
        features = source.feature_config
        body = source.model_config
        if source.task == "classify":
            if body.kind != section.kind:
                raise AsrError(f"{section.init_from}: a {body.kind!r} classifier, but model.kind is {section.kind!r}")
            channels, encoder = body.channels, body.encoder and replace(body.encoder, dropout=section.dropout)
            convs = body.convs_per_block
        else:
            encoder = replace(body, dropout=section.dropout)
    try:
        config = ClassifierConfig(kind=section.kind, n_classes=n_classes, pooling=section.pooling,
                                  n_feats=features.feature_dim, channels=channels, convs_per_block=convs,
                                  dropout=section.dropout,
                                  encoder=encoder if section.kind == "encoder" else None)
    except ValueError as exc:
        raise AsrError(f"bad model config: {exc}") from None
    model = Classifier(config)
    if source is not None:
        n = load_body_weights(model, source, section.init_from)
        if verbose:
            print(f"encoder initialised from {section.init_from} ({n} tensors)")
    if section.freeze_encoder:
        model.encoder.requires_grad_(False)
    return model, features


def load_body_weights(classifier: Classifier, source: ModelFile, where: str = "the given model") -> int:
    """Copy the body weights of a model file into ``classifier``: the ``encoder.*`` weights of a CTC
    model (kind "encoder" only), or those of another classifier of the same kind (of its first
    member if it is an ensemble). The pooling head is not copied.

    Returns the number of tensors copied; an ``AsrError`` if the body does not have this
    classifier's shapes."""
    if source.task == "classify":
        if source.model_config.kind != classifier.config.kind:
            raise AsrError(f"{where}: a {source.model_config.kind!r} classifier; its weights cannot start a "
                           f"{classifier.config.kind!r} one")
        prefix = "members.0.encoder." if source.members != 1 else "encoder."
    elif classifier.config.kind != "encoder":
        raise AsrError(f"a {classifier.config.kind!r} classifier has no ASR encoder to initialise")
    else:
        prefix = "encoder."
    theirs = {k[len(prefix):]: v for k, v in source.weights.items() if k.startswith(prefix)}
    ours = classifier.encoder.state_dict()
    missing = sorted(set(ours) - set(theirs))
    wrong = [f"{k} is {tuple(theirs[k].shape)} there, {tuple(v.shape)} here"
             for k, v in ours.items() if k in theirs and theirs[k].shape != v.shape]
    if missing or wrong:
        c = source.model_config
        detail = "; ".join(wrong[:3] + [f"no {k}" for k in missing[:3]])
        if source.task == "classify":
            built = f"n_feats={c.n_feats}, channels={c.channels}"
        else:
            built = f"n_mels={c.n_mels}, cnn_channels={c.cnn_channels}, rnn_dim={c.rnn_dim}, n_rnn_layers={c.n_rnn_layers}"
        raise AsrError(f"{where}: its encoder does not fit this classifier ({detail}); it was built with {built}")
    classifier.encoder.load_state_dict({k: theirs[k] for k in ours})
    return len(ours)


# --------------------------------------------------------------------------- training

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
    by ``w`` and ``1 - w``. Draws from torch's global generator, so resume is exact.

    ``by_loudness`` mixes as between-class learning does (Tokozume et al. 2018): with
    ``g_a``, ``g_b`` each clip's loudest 0.1 s in dB, the audio is
    ``(p * a + (1 - p) * b) / sqrt(p**2 + (1 - p)**2)`` with
    ``p = 1 / (1 + 10**((g_a - g_b) / 20) * (1 - w) / w)``: a clip 20 dB quieter than its
    partner is not lost under it, and each label keeps the weight ``w`` it is heard at."""

    WINDOW = 0.1  # seconds of the loudness windows

    def __init__(self, alpha: float, by_loudness: bool = False, sample_rate: int = SAMPLE_RATE) -> None:
        self.alpha, self.by_loudness, self.sample_rate = alpha, by_loudness, sample_rate

    def loudness_db(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch,) each row's loudest window's RMS in dB (floored at -80 dB)."""
        n, window = audio.shape[1], round(self.WINDOW * self.sample_rate)
        frames = F.pad(audio, (0, -n % window)).reshape(audio.shape[0], -1, window)
        rms = frames.pow(2).mean(dim=2).amax(dim=1).sqrt()
        return 20 * torch.log10(rms.clamp(min=1e-4))

    def __call__(self, items):
        batch = collate(items)
        n = batch.audio.shape[0]
        if n < 2:
            return batch
        beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))
        w = beta.sample((n,))
        w = torch.maximum(w, 1 - w)
        partner = torch.randperm(n)
        a, b = batch.audio, batch.audio[partner]
        if self.by_loudness:
            gain = self.loudness_db(a)
            p = 1 / (1 + 10 ** ((gain - gain[partner]) / 20) * (1 - w) / w)
            audio = (p[:, None] * a + (1 - p[:, None]) * b) / torch.sqrt(p ** 2 + (1 - p) ** 2)[:, None]
        else:
            audio = w[:, None] * a + (1 - w[:, None]) * b
        targets = torch.stack([batch.targets[:, 0], batch.targets[partner, 0]], dim=1)
        return Batch(audio, torch.maximum(batch.audio_lengths, batch.audio_lengths[partner]), targets,
                     torch.full((n,), 2, dtype=torch.long), batch.indices, w)


class _Loss:
    """A picklable ``loss_fn(outputs, batch)`` for the Trainer."""

    def __init__(self, label_smoothing: float) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, log_probs, batch):
        return classification_loss(log_probs, batch, self.label_smoothing)


def dev_metrics(trainer: Trainer, entries: list[dict]) -> tuple[dict, list]:
    """Dev accuracy and loss of the trainer's current model (the ``Trainer``'s ``evaluate``)."""
    labels = trainer.meta["labels"]
    model = ClipClassifier(trainer.model, trainer.features, list(labels), trainer.device)
    log_probs = predict(model, entries, trainer.config.max_frames)
    index = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([index[e["label"]] for e in entries])
    return {"accuracy": float((log_probs.argmax(-1) == targets).float().mean()),
            "loss": float(F.nll_loss(log_probs, targets))}, []


def make_trainer(config: ClassifyConfig, labels: list[str], train_entries: list[dict], noise_files: list[str],
                 exp, train: TrainConfig | None = None, dev: list[dict] | None = None, verbose: bool = True,
                 hooks: list | None = None) -> Trainer:
    """A ``Trainer`` for a classifier: the dataset with augmentation, cross-entropy, classify meta; with
    ``dev`` clips, early stopping on their accuracy (the best model kept as ``<exp>/model.pt``).
    ``hooks``: the callbacks, instead of the standard ones (``asr.callbacks.standard``)."""
    train = train or config.train
    seed_everything(train.seed)  # the initial weights too come from the seed
    model, features = build_classifier(config.model, config.features, len(labels), verbose=verbose)
    if features.kind != "logmel" and train.specaugment is not None:
        train = replace(train, specaugment=None)  # SpecAugment masks mel bands and frames: log-mels only
    exp = Path(exp)
    hooks = callbacks.standard(train, exp, ylabel="cross-entropy") if hooks is None else list(hooks)
    if dev:
        stop = config.early_stopping
        train = replace(train, eval_every=stop.eval_every, max_eval_utterances=len(dev))
        hooks.insert(0, callbacks.EarlyStopping(exp / "model.pt", stop.patience, stop.min_delta,
                                                record=exp / "early_stopping.json"))
    rate = features.sample_rate
    augment = WaveformAugment(config.augment, noise_files, seed=train.seed, sample_rate=rate)
    dataset = ClassificationDataset(train_entries, labels, transform=augment, cache_audio=train.cache_audio,
                                    sample_rate=rate)
    mix = MixupCollate(config.mixup, config.mixup_by_loudness, rate) if config.mixup > 0 else collate
    return Trainer(model, dataset, _Loss(config.label_smoothing), {"task": "classify", "labels": list(labels)},
                   features, train, exp, dev_entries=dev, evaluate=dev_metrics if dev else None,
                   collate_fn=mix, callbacks=hooks)


def train_classifier(config: ClassifyConfig, labels: list[str], splits: dict[str, list[dict]],
                     noise_files: list[str], exp=None, resume: bool = False, progress: bool = True) -> dict:
    """Train with early stopping on dev accuracy; the best model is ``<exp>/model.pt``.

    The dev set is scored every ``early_stopping.eval_every`` steps; ``patience``
    evaluations without improvement end training before ``train.max_steps``. Without
    dev clips the last model is kept. ``resume`` continues training and early stopping
    from the last checkpoint. Returns a summary dict.
    """
    exp = Path(exp or config.exp)
    exp.mkdir(parents=True, exist_ok=True)
    dev = splits.get("dev") or []
    trainer = make_trainer(config, labels, splits["train"], noise_files, exp, dev=dev)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    frozen = f" ({trainable:,} trained)" if trainable < count_parameters(trainer.model) else ""
    print(f"{config.model.kind} classifier: {count_parameters(trainer.model):,} parameters{frozen}; "
          f"{trainer.feature_config.kind} features; " + describe_splits(labels, splits))
    write_json(to_dict(config), exp / "config.json")
    started = time.perf_counter()
    trainer.run(resume=resume, progress=progress)
    seconds = time.perf_counter() - started
    stop = next((c for c in trainer.callbacks if isinstance(c, callbacks.EarlyStopping)), None)
    if stop is None:
        trainer.export(exp / "model.pt")
    best_step = stop.state["best_step"] if stop else trainer.step
    accuracy = stop.state["best"] if stop else None
    print(f"trained {trainer.step} steps in {seconds / 60:.1f} min; best dev accuracy "
          + (f"{100 * accuracy:.2f}% at step {best_step}" if stop else "n/a") + f"; model saved to {exp / 'model.pt'}")
    return {"model": str(exp / "model.pt"), "parameters": count_parameters(trainer.model), "steps": trainer.step,
            "best_step": best_step, "dev_accuracy": accuracy, "train_seconds": round(seconds, 1)}


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
        index = {label: i for i, label in enumerate(labels)}
        hyps = predict(model, dev).argmax(-1)
        accuracy = float((hyps == torch.tensor([index[e["label"]] for e in dev])).float().mean())
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
    models = [ModelFile.load(p) for p in paths]
    first = models[0]
    for path, m in zip(paths, models):
        if (m.task, m.model_config, m.feature_config, m.labels) != (first.task, first.model_config,
                                                                      first.feature_config, first.labels):
            raise AsrError(f"{path}: not the same kind of classifier as {paths[0]}; they cannot be averaged")
    if len(models) == 1:
        return first.save(out)
    weights = {f"members.{i}.{name}": value for i, m in enumerate(models) for name, value in m.weights.items()}
    return replace(first, members=len(models), weights=weights).save(out)


@torch.no_grad()
def adapt_batchnorm(model: ClipClassifier, entries: list[dict], max_frames: int = 20000) -> int:
    """Re-estimate every BatchNorm layer's statistics on ``entries`` (no labels), in place.

    Test-time normalisation to a new speaker or recording condition: the running means
    and variances learnt on the training speakers are replaced by the average over these
    clips, batched as ``predict`` batches them; weights and everything else stay as they
    are. Returns the number of layers adapted; raises ``AsrError`` if there is none (the
    shared encoder normalises with LayerNorm, per frame, and has nothing to adapt).
    """
    net = model.net
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
        for _ in run_batches(model, entries, max_frames):
            pass
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.eval()
    return len(norms)


# --------------------------------------------------------------------------- stages over a task folder

def train_stage(config: ClassifyConfig, resume: bool = True, progress: bool = True) -> dict:
    """Train on ``<exp>/manifests/train.jsonl`` with early stopping on ``dev.jsonl``."""
    labels, splits, noise = read_task(config.exp)
    if not splits.get("train"):
        raise AsrError(f"{config.exp}: no training clips; run the prepare stage first")
    if config.ensemble > 1:
        return train_ensemble(config, labels, splits, noise, resume=resume, progress=progress)
    return train_classifier(config, labels, splits, noise, config.exp, resume=resume, progress=progress)


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


def lr_find_stage(config: ClassifyConfig, progress: bool = True) -> dict:
    """Run the range test on the training set (from fresh weights); write ``<exp>/lr_find/lr_find.png``."""
    labels, splits, noise = read_task(config.exp)
    out = config.exp / "lr_find"
    lf = config.lr_find
    if not (0 < lf.min_lr < lf.max_lr) or lf.steps < 3:
        raise AsrError("lr_find needs 0 < min_lr < max_lr and at least 3 steps")
    test = callbacks.LRRangeTest(lf.min_lr, lf.max_lr, lf.steps, lf.diverge)
    train = replace(config.train, max_steps=lf.steps + 1, time_budget_minutes=0.0)
    trainer = make_trainer(config, labels, splits["train"], noise, out, train=train, hooks=[test])
    trainer.run(progress=progress, save_checkpoints=False)
    suggestion = suggest_lr(test.lrs, test.losses)
    out.mkdir(parents=True, exist_ok=True)
    path = plot_lr_find(test.lrs, test.losses, suggestion, out / "lr_find.png")
    write_json({**suggestion, "lrs": test.lrs, "losses": test.losses}, out / "lr_find.json")
    print(f"lowest loss at lr {suggestion['min_loss_lr']:.2e}; suggested peak lr (train.lr) "
          f"{suggestion['suggested_lr']:.2e}, steepest descent at {suggestion['steepest_lr']:.2e}; plot: {path}")
    return suggestion


def score_set(model: ClipClassifier, entries: list[dict], title: str, out_dir, progress: bool = True) -> Report:
    """Score labelled clips; ``write_report`` under ``out_dir``, and the accuracy line printed."""
    index = {label: i for i, label in enumerate(model.labels)}
    log_probs = predict(model, entries, progress=progress)
    report = Report.from_predictions(model.labels, [index[e["label"]] for e in entries], log_probs.argmax(-1).tolist())
    folder = write_report(report, out_dir, title, entries, log_probs)
    print(report.text(title).split("\n", 1)[0] + f"; report: {folder / 'report.txt'}")
    return report


def evaluate_stage(config: ClassifyConfig, progress: bool = True, sets: tuple[str, ...] = ("test",)) -> dict[str, Report]:
    """Score ``<exp>/model.pt`` on the prepared sets; reports under ``<exp>/results/<set>/``; with
    ``adapt_batchnorm``, also with BatchNorm statistics re-estimated on each set (``<set>-adapted``)."""
    model = load_classifier(config.exp / "model.pt")
    labels, splits, _ = read_task(config.exp)
    if model.labels != labels:
        raise AsrError(f"{config.exp / 'model.pt'} was trained for other labels than {config.exp / 'task.json'}")
    reports = {name: score_set(model, splits[name], name, config.exp / "results" / name, progress)
               for name in sets if splits.get(name)}
    if config.adapt_batchnorm:  # after the plain scores: each set adapts the stored statistics afresh
        stored = {k: v.clone() for k, v in model.net.state_dict().items()}
        for name in list(reports):
            model.net.load_state_dict(stored)
            adapt_batchnorm(model, splits[name])
            reports[f"{name}-adapted"] = score_set(model, splits[name], f"{name}-adapted",
                                                   config.exp / "results" / f"{name}-adapted", progress)
        model.net.load_state_dict(stored)
    return reports

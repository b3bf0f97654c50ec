"""Model files and training checkpoints: one typed format, written and read only here.

A ``ModelFile`` is everything inference needs (task, model, feature and decoding
configs, tokenizer or labels, ensemble size, weights) and how the model was trained
(``provenance``). A training checkpoint is a model file plus a ``TrainingState``.
Both are plain data on disk (tensors, numbers, strings, lists, dicts), written
atomically and read with ``torch.load(..., weights_only=True)``, so loading never
runs code from the file. Paths are stored relative to the file's folder, so an
experiment folder can move: the language model ships beside the model or is found
relative to it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from asr.config import from_dict, to_dict
from asr.decoding import DecodingOptions
from asr.errors import AsrError
from asr.features import FeatureConfig
from asr.model import ClassifierConfig, ModelConfig

FORMAT = "asr-model-2"
_OLD_FORMAT = "asr-checkpoint-1"  # read, with its "model" weights and "extra" decoding, never written
TASKS = ("ctc", "classify")


@dataclass
class ModelFile:
    task: Literal["ctc", "classify"]
    model_config: ModelConfig | ClassifierConfig
    feature_config: FeatureConfig
    weights: dict = field(repr=False)  # the state dict (of an ensemble: members.<i>.*)
    tokenizer: dict | None = None  # ctc: Tokenizer.to_dict() (the sentencepiece model itself, if any)
    labels: tuple[str, ...] = ()  # classify: the class names
    members: int = 1  # classify: models averaged by an Ensemble
    decoding: DecodingOptions | None = None  # ctc: tuned decoding, the default of transcribe()
    provenance: dict = field(default_factory=dict)  # how it was trained: machine, optimizer, precision, steps

    def __post_init__(self) -> None:
        if self.task == "ctc" and not isinstance(self.model_config, ModelConfig):
            raise AsrError("a speech recognition model file needs a ModelConfig")
        if self.task == "classify":
            if not isinstance(self.model_config, ClassifierConfig):
                raise AsrError("a classifier file needs a ClassifierConfig")
            if len(self.labels) != self.model_config.n_classes:
                raise AsrError(f"{self.model_config.n_classes} classes but {len(self.labels)} labels")
            stored = {name.split(".", 2)[1] for name in self.weights if name.startswith("members.")}
            size = self.members if isinstance(self.members, int) and not isinstance(self.members, bool) else 0
            expected = {str(i) for i in range(size)} if size > 1 else set()
            if size < 1 or stored != expected:
                raise AsrError(f"bad ensemble size {self.members!r} (the file holds weights for "
                               f"{max(len(stored), 1)})")

    # ----------------------------------------------------------------- plain data

    def to_data(self, folder: Path | None = None) -> dict:
        """Plain data; a language model path becomes relative to ``folder`` (the file's)."""
        decoding = None
        if self.decoding is not None:
            decoding = to_dict(_relative(self.decoding, folder) if folder else self.decoding)
        return {"format": FORMAT, "task": self.task, "model_config": to_dict(self.model_config),
                "feature_config": to_dict(self.feature_config), "weights": self.weights,
                "tokenizer": self.tokenizer, "labels": list(self.labels), "members": self.members,
                "decoding": decoding, "provenance": self.provenance}

    @classmethod
    def from_data(cls, data: dict, where: str, folder: Path | None = None) -> "ModelFile":
        if data.get("format") == _OLD_FORMAT:
            data = {**data, "weights": data.get("model"), "decoding": (data.get("extra") or {}).get("decoding")}
        elif data.get("format") != FORMAT:
            raise AsrError(f"{where}: not an asr model file")
        task = data.get("task", "ctc")
        if task not in TASKS:
            raise AsrError(f"{where}: unknown task {task!r}")
        if not isinstance(data.get("weights"), dict):
            raise AsrError(f"{where}: no weights")
        config_type = ModelConfig if task == "ctc" else ClassifierConfig
        decoding = data.get("decoding")
        if decoding is not None:
            decoding = from_dict(DecodingOptions, decoding, f"{where}: decoding")
            decoding = _absolute(decoding, folder) if folder else decoding
        features = data.get("feature_config")
        if isinstance(features, dict) and "level" not in features:
            features = {**features, "level": "none"}  # written before level existed: features as recorded
        model = cls(task=task, model_config=from_dict(config_type, data.get("model_config"), f"{where}: model_config"),
                    feature_config=from_dict(FeatureConfig, features, f"{where}: feature_config"),
                    weights=data["weights"], tokenizer=data.get("tokenizer"), labels=tuple(data.get("labels") or ()),
                    members=data.get("members", 1), decoding=decoding, provenance=dict(data.get("provenance") or {}))
        if task == "ctc" and not isinstance(model.tokenizer, dict):
            raise AsrError(f"{where}: a speech recognition model file without its tokenizer")
        return model

    # ----------------------------------------------------------------- files

    def save(self, path) -> Path:
        path = Path(path)
        return save_atomic(self.to_data(path.parent), path)

    @classmethod
    def load(cls, path, map_location="cpu") -> "ModelFile":
        path = Path(path)
        try:
            return cls.from_data(load(path, map_location), str(path), path.parent)
        except AsrError as exc:
            message = str(exc)
            raise AsrError(message if message.startswith(str(path)) else f"{path}: {message}") from None


@dataclass
class TrainingState:
    """Everything a training run needs to continue exactly where it stopped."""

    train_config: dict
    optimizer: dict
    scheduler: dict
    scaler: dict
    step: int
    epoch: int
    position: int  # batches of the current epoch already trained on
    rng: dict
    history: dict
    skipped: int = 0  # updates skipped in a row for non-finite gradients
    callbacks: dict = field(default_factory=dict)  # each callback's own state, by name
    counts: dict = field(default_factory=dict)  # non-finite updates and unreadable files, in all


def save_training(model: ModelFile, state: TrainingState, path) -> Path:
    """A training checkpoint: the model file's data and the training state, atomically."""
    path = Path(path)
    return save_atomic({**model.to_data(path.parent), "training": vars(state)}, path)


def load_training(path, map_location="cpu") -> tuple[ModelFile, TrainingState]:
    path = Path(path)
    data = load(path, map_location)
    if not isinstance(data.get("training"), dict):
        raise AsrError(f"{path}: a model file, not a training checkpoint")
    try:
        state = TrainingState(**data["training"])
    except TypeError as exc:
        raise AsrError(f"{path}: bad training state ({exc})") from None
    return ModelFile.from_data(data, str(path), path.parent), state


def _relative(options: DecodingOptions, folder: Path) -> DecodingOptions:
    def rel(p):
        return os.path.relpath(Path(p).resolve(), Path(folder).resolve()) if p and Path(p).is_absolute() else p
    return replace(options, lm_path=rel(options.lm_path), unigrams_path=rel(options.unigrams_path))


def _absolute(options: DecodingOptions, folder: Path) -> DecodingOptions:
    def absolute(p):
        return os.path.normpath(Path(folder) / p) if p and not Path(p).is_absolute() else p
    return replace(options, lm_path=absolute(options.lm_path), unigrams_path=absolute(options.unigrams_path))


# --------------------------------------------------------------------------- the bytes on disk

def save_atomic(data: dict, path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path, map_location="cpu") -> dict:
    """Read a file's plain data safely (``weights_only=True``); bad files give an ``AsrError``."""
    path = Path(path)
    if not path.is_file():
        raise AsrError(f"{path}: no such model file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an untrusted file may make the unpickler fail in any way
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AsrError(f"{path}: not a readable asr model file ({reason[:200]})") from None
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, _OLD_FORMAT):
        raise AsrError(f"{path}: not an asr model file")
    return data


def rng_state() -> dict:
    """Every random generator the training loop touches, as plain data."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype("int64")), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

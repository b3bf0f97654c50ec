"""Checkpoints: plain data only, written atomically, read with ``weights_only=True``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts:

* ``task`` - "ctc" or "classify"
* ``model_config``, ``feature_config`` - dataclasses as dicts
* ``tokenizer`` - ``Tokenizer.to_dict()`` (the sentencepiece model itself, if any)
* ``labels`` - class names (classification)
* ``model`` - the state dict
* training state (``optimizer``, ``scheduler``, ``scaler``, ``step``, ``epoch``,
  ``sampler``, ``rng``, ``train_config``, ``history``) in training checkpoints only.

Loading never runs code from the file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from asr.errors import AsrError

FORMAT = "asr-checkpoint-1"


def save_atomic(data: dict, path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **data}, f)
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
    """Read a checkpoint safely (``weights_only=True``); bad files give an ``AsrError``."""
    path = Path(path)
    if not path.is_file():
        raise AsrError(f"{path}: no such model file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AsrError(f"{path}: not a readable asr checkpoint ({reason[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AsrError(f"{path}: not an asr checkpoint")
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

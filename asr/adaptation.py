"""Adapting a trained classifier to new recordings (a new speaker, a new room) without their labels,
by self-training: the model labels the clips and learns from those it is sure of, round by round;
``balance_to_prior`` keeps one class from taking them all. (Test-time BatchNorm adaptation is
``asr.classify.adapt_batchnorm``.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from asr.checkpoint import ModelFile
from asr.classify import ClassifyConfig, make_trainer, save_ensemble
from asr.config import to_dict
from asr.errors import AsrError
from asr.inference import load_classifier, predict
from asr.model import Ensemble


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
    st = config.self_train
    if st.rounds < 1:
        raise AsrError("self_train.rounds is 0: there is nothing to adapt")
    if not 0.0 < st.threshold <= 1.0 or st.repeat < 1 or st.steps < 1 or st.lr <= 0:
        raise AsrError("self_train needs 0 < threshold <= 1, repeat >= 1, steps >= 1 and lr > 0")
    if not unlabelled:
        raise AsrError("self-training needs clips to adapt to; there are none")
    model_path, out = Path(model_path), Path(out)
    clips = [{k: v for k, v in e.items() if k != "label"} for e in unlabelled]
    stamp = json.dumps({"model": hashlib.sha256(model_path.read_bytes()).hexdigest(), "train": to_dict(config.train),
                        "self_train": to_dict(st), "clips": [e["audio_filepath"] for e in clips]},
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
        probs = predict(model, clips, progress=progress).exp()
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
        save_ensemble(paths, path)
        model = load_classifier(path)
    return ModelFile.load(out / f"round{st.rounds}" / "model.pt").save(out / "model.pt")

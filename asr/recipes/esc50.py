"""ESC-50 and ESC-10 recipe: environmental sound classification, 5-fold cross-validation.

    python -m asr.recipes.esc50 download --config recipes/esc50/config.toml
    python -m asr.recipes.esc50 prepare  --config recipes/esc50/config.toml
    python -m asr.recipes.esc50 lr_find  --config recipes/esc50/config.toml
    python -m asr.recipes.esc50 train    --config recipes/esc50/config.toml [--resume]
    python -m asr.recipes.esc50 evaluate --config recipes/esc50/config.toml

    python -m asr.recipes.esc50 demo --exp-dir exp/esc10
    python -m asr.recipes.esc50 compare --config recipes/esc50/esc10.toml

``meta/esc50.csv`` assigns every clip to one of five folds (clips cut from the
same recording share a fold); ESC-10's own layout (``<NNN - Class name>/<fold>-<id>-<take>.ogg``,
``data.corpus``) names the fold in every file name. ``demo`` runs ESC-10 from the shared data
offline (``recipes/esc50/esc10.toml``); ``compare`` runs the same folds for every model kind
of ``[compare]`` and writes one table of them. For each test fold in ``data.folds`` the model
trains on the other four, in ``<exp>/fold<k>/``, with a share of their source recordings
held out for early stopping (``data.dev_share``; 0, as the ESC-10 demo has it: none, and the
model at the end of its schedule is kept). ``evaluate`` scores every fold and
the pooled predictions (``<exp>/results/cv/``), and reports the mean accuracy.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from asr import classify
from asr.classify import ClassifyConfig
from asr.reports import Report, write_json, write_report
from asr.config import load_config
from asr.corpora import read_esc
from asr.data import describe_splits, write_task
from asr.download import DownloadConfig
from asr.errors import AsrError
from asr.recipes import print_finish, recipe_config_path, shared_data, stage_runner


@dataclass
class ESC50Data:
    root: str = "data"  # holds ESC-50-master/ (and downloads/); relative paths are under exp_dir
    folds: tuple[int, ...] = (1, 2, 3, 4, 5)  # the test folds to run
    corpus: str = ""  # an ESC-50 or ESC-10 folder; "" = <root>/ESC-50-master (the download)
    shared: str = ""  # with no corpus: this folder of the shared data ("esc10"), the demo's default
    esc10: bool = False  # of ESC-50: the ESC-10 subset (10 classes) instead of all 50
    dev_share: float = 0.1  # share of the training folds' source recordings held out for early stopping (0: none)
    seed: int = 0


@dataclass
class ESC50Config(ClassifyConfig):
    """The ESC-50 (or ESC-10) recipe: the classification config and the corpus and its folds."""

    exp_dir: str = "exp/esc50"
    data: ESC50Data = field(default_factory=ESC50Data)
    download: DownloadConfig = field(default_factory=DownloadConfig)

    compare: tuple[str, ...] = ("cnn2d", "complex_cnn", "m5", "encoder")  # model kinds of the compare stage
    short_steps: int = 0  # > 0: under ASR_DEMO_SHORT=1 (CI), train.max_steps; the same code path

    @property
    def corpus(self) -> Path:
        if self.data.corpus:
            return Path(self.data.corpus)
        if self.data.shared:
            return shared_data(self.data.shared)
        root = Path(self.data.root)
        return (root if root.is_absolute() else self.exp / root) / "ESC-50-master"

    def fold(self, k: int) -> "ESC50Config":
        """The config of the experiment that tests on fold ``k``."""
        return replace(self, exp_dir=str(self.exp / f"fold{k}"))


def make_config(path: str | None, stage: str) -> ESC50Config:
    default = recipe_config_path("esc50", "esc10" if stage == "demo" else "config")
    config = load_config(ESC50Config(), path or (default if default.exists() else None))
    if stage == "demo" and not (config.data.corpus or config.data.shared):  # the demo: ESC-10 from the shared data
        config = replace(config, data=replace(config.data, shared="esc10"))
    if os.environ.get("ASR_DEMO_SHORT") and config.short_steps:
        config = replace(config, train=replace(config.train, max_steps=config.short_steps, time_budget_minutes=0.0))
    return config


def _folds(config: ESC50Config) -> tuple[int, ...]:
    bad = [k for k in config.data.folds if k not in (1, 2, 3, 4, 5)]
    if bad or not config.data.folds:
        raise AsrError(f"data.folds must name folds 1-5, got {list(config.data.folds)}")
    return tuple(config.data.folds)


def download(config: ESC50Config, progress: bool = True) -> None:
    """Fetch the ESC-50 repository snapshot (master.zip) and unpack it."""
    from asr.download import ESC50, fetch

    if (config.corpus / "meta" / "esc50.csv").exists():
        print(f"ESC-50: already in {config.corpus}")
        return
    fetch(ESC50, config.corpus.parent / "downloads", config.corpus.parent, mirror=config.download.mirror or None,
          checksums=config.download.checksums or None, progress=progress)
    if not (config.corpus / "meta" / "esc50.csv").exists():
        raise AsrError(f"the archive did not contain ESC-50-master/meta/esc50.csv (looked in {config.corpus})")
    print(f"ESC-50: extracted to {config.corpus}")


def prepare(config: ESC50Config) -> None:
    """For each test fold: train/dev/test manifests under ``<exp>/fold<k>/``."""
    entries = read_esc(config.corpus)
    if config.data.esc10:
        entries = [e for e in entries if e["esc10"]]
    labels = [label for _, label in sorted({(e["target"], e["label"]) for e in entries})]
    for k in _folds(config):
        rest = [e for e in entries if e["fold"] != k]
        sources = sorted({e["speaker"] for e in rest})
        random.Random(config.data.seed + k).shuffle(sources)
        held = set(sources[: round(config.data.dev_share * len(sources))])
        splits = {"train": [e for e in rest if e["speaker"] not in held],
                  "dev": [e for e in rest if e["speaker"] in held],
                  "test": [e for e in entries if e["fold"] == k]}
        write_task(config.fold(k).exp, labels, splits)
        print(f"fold {k}: {describe_splits(labels, splits)}")


def train(config: ESC50Config, resume: bool = True, progress: bool = True) -> list[dict]:
    results = []
    for k in _folds(config):
        print(f"=== test fold {k}")
        results.append(classify.train_stage(config.fold(k), resume=resume, progress=progress))
    return results


def lr_find(config: ESC50Config, progress: bool = True) -> dict:
    """The range test on the training set of the first test fold."""
    return classify.lr_find_stage(config.fold(_folds(config)[0]), progress=progress)


def evaluate(config: ESC50Config, progress: bool = True) -> dict[int, Report]:
    """Per-fold reports, and the pooled cross-validation report in ``<exp>/results/cv/``."""
    reports = {k: classify.evaluate_stage(config.fold(k), progress=progress, sets=("test",))["test"]
               for k in _folds(config)}
    first = next(iter(reports.values()))
    pooled = Report(first.labels, np.sum([r.confusion for r in reports.values()], axis=0))
    folder = write_report(pooled, config.exp / "results" / "cv", "cross-validation")
    accuracies = [r.accuracy for r in reports.values()]
    spread = f" +- {100 * statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else ""
    lines = [f"fold {k}: {100 * r.accuracy:.2f}%" for k, r in reports.items()]
    lines.append(f"mean over {len(accuracies)} folds: {100 * statistics.mean(accuracies):.2f}%{spread}")
    (folder / "folds.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\npooled report: {folder / 'report.txt'}")
    write_json([summary_row(config, reports)], folder / "models.json")
    return reports


def summary_row(config: ESC50Config, reports: dict[int, Report]) -> dict:
    """One model's row of the cross-validation table: its name, per-fold accuracies and mean."""
    accuracies = [r.accuracy for r in reports.values()]
    name = config.model.kind + (f" x{config.ensemble}" if config.ensemble > 1 else "")
    return {"name": name, "folds": accuracies, "mean": statistics.mean(accuracies)}


def demo(config: ESC50Config, resume: bool = True, progress: bool = True) -> dict[int, Report]:
    """Prepare, train and evaluate every fold of the config's corpus (by default ESC-10 from the
    shared data): the pooled report in ``<exp>/results/cv/``."""
    started = time.perf_counter()
    prepare(config)
    train(config, resume=resume, progress=progress)
    reports = evaluate(config, progress=progress)
    model = config.fold(_folds(config)[0]).exp / "model.pt"
    print_finish(started, model, f"asr classify --model {model} AUDIO.ogg", config.exp)
    return reports


def compare(config: ESC50Config, resume: bool = True, progress: bool = True) -> list[dict]:
    """Every model kind of ``compare`` on the same folds, one folder each under ``<exp>/compare/``;
    one table (``<exp>/results/cv/models.json`` and ``compare.md``) with the config's own model."""
    rows = []
    for kind in config.compare:
        own = kind == config.model.kind  # the other kinds take their own default shapes
        sub = replace(config, exp_dir=str(config.exp / "compare" / kind),
                      model=replace(config.model, kind=kind, channels=config.model.channels if own else (),
                                    convs_per_block=config.model.convs_per_block if own else 1),
                      features=replace(config.features, kind="logmel"))
        print(f"=== {kind}")
        prepare(sub)
        train(sub, resume=resume, progress=progress)
        rows.append(summary_row(sub, evaluate(sub, progress=progress)))
    out = config.exp / "results" / "cv"
    lines = ["| model | " + " | ".join(f"fold {k}" for k in _folds(config)) + " | mean |",
             "|---|" + "---:|" * (len(_folds(config)) + 1)]
    lines += [f"| {r['name']} | " + " | ".join(f"{100 * a:.1f}" for a in r["folds"]) + f" | {100 * r['mean']:.1f} |"
              for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    write_json(rows, out / "compare.json")
    print("\n".join(lines))
    return rows


STAGES = {"download": download, "prepare": prepare, "lr_find": lr_find, "train": train, "evaluate": evaluate,
          "demo": demo, "compare": compare}


main = stage_runner("ESC-50 recipe", STAGES, make_config)


if __name__ == "__main__":
    sys.exit(main())

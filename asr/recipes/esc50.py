"""ESC-50 recipe: environmental sound classification, 50 classes, 5-fold cross-validation.

    python -m asr.recipes.esc50 download --config recipes/esc50/config.toml
    python -m asr.recipes.esc50 prepare  --config recipes/esc50/config.toml
    python -m asr.recipes.esc50 lr_find  --config recipes/esc50/config.toml
    python -m asr.recipes.esc50 train    --config recipes/esc50/config.toml [--resume]
    python -m asr.recipes.esc50 evaluate --config recipes/esc50/config.toml

``meta/esc50.csv`` assigns every clip to one of five folds (clips cut from the
same recording share a fold). For each test fold in ``data.folds`` the model
trains on the other four, with a share of their source recordings held out
for early stopping, in ``<exp>/fold<k>/``. ``evaluate`` scores every fold and
the pooled predictions (``<exp>/results/cv/``), and reports the mean accuracy.
"""

from __future__ import annotations

import random
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from asr import classify
from asr.classify import ClassifyConfig
from asr.reports import Report, write_report
from asr.config import load_config
from asr.corpora import read_esc50
from asr.data import describe_splits, write_task
from asr.download import DownloadConfig
from asr.errors import AsrError
from asr.recipes import recipe_config_path, run_stages


@dataclass
class ESC50Data:
    root: str = "data"  # holds ESC-50-master/ (and downloads/); relative paths are under exp_dir
    folds: tuple[int, ...] = (1, 2, 3, 4, 5)  # the test folds to run
    esc10: bool = False  # the ESC-10 subset (10 classes) instead of all 50
    dev_share: float = 0.1  # share of the training folds' source recordings held out for early stopping
    seed: int = 0


@dataclass
class ESC50Config(ClassifyConfig):
    """The ESC-50 (or ESC-10) recipe: the classification config and the corpus and its folds."""

    exp_dir: str = "exp/esc50"
    data: ESC50Data = field(default_factory=ESC50Data)
    download: DownloadConfig = field(default_factory=DownloadConfig)

    @property
    def corpus(self) -> Path:
        root = Path(self.data.root)
        return (root if root.is_absolute() else self.exp / root) / "ESC-50-master"

    def fold(self, k: int) -> "ESC50Config":
        """The config of the experiment that tests on fold ``k``."""
        return replace(self, exp_dir=str(self.exp / f"fold{k}"))


def make_config(path: str | None, stage: str) -> ESC50Config:
    default = recipe_config_path("esc50", "config")
    return load_config(ESC50Config(), path or (default if default.exists() else None))


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
    entries = read_esc50(config.corpus)
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
    return reports


STAGES = {"download": download, "prepare": prepare, "lr_find": lr_find, "train": train, "evaluate": evaluate}


def main(argv=None) -> int:
    return run_stages("ESC-50 recipe (stages: " + ", ".join(STAGES) + ")", STAGES, make_config, argv)


if __name__ == "__main__":
    sys.exit(main())

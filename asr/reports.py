"""What people would rather see than numbers in a log: learning curves, confusion matrices,
the learning-rate range test, and TensorBoard.

Everything here draws or writes; nothing trains. matplotlib and tensorboard are
imported where they are used (the ``[train]`` extra), so inference needs neither.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr.errors import require


def pyplot():
    """matplotlib's pyplot, drawing to files (no screen)."""
    matplotlib = require("matplotlib", "pip install 'asr[train]' (or matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tensorboard_writer(folder, purge_step: int | None = None):
    """A TensorBoard ``SummaryWriter`` on ``folder``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder), purge_step=purge_step or None)


def write_json(data, path: Path) -> Path:
    """Write JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def plot_learning_curve(history: dict, path, ylabel: str = "loss", evals: list[dict] | None = None) -> Path | None:
    """Training loss (log scale) and dev metrics against steps, as a PNG. ``history`` has ``step``
    and ``loss`` lists; ``evals`` is a list of ``{"step": ..., metric: value}``; rates and
    accuracies (0-1) are drawn in per cent."""
    if not history.get("step"):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history["step"], history["loss"], label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    names = [k for k in (evals[0] if evals else {}) if k not in ("step", "loss")]
    if names:
        ax2 = ax.twinx()
        for i, name in enumerate(names):
            ax2.plot([e["step"] for e in evals], [100 * e[name] for e in evals], "o-", color=f"C{i + 1}",
                     label=f"dev {name}")
        ax2.set_ylabel("dev (%)")
        ax2.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_lr_find(lrs: list[float], losses: list[float], suggestion: dict, path) -> Path:
    plt = pyplot()
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
    plt = pyplot()
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
    write_json({"accuracy": report.accuracy, "clips": report.total, "per_class": report.per_class(),
                 "confused_pairs": report.confused_pairs(), "labels": report.labels,
                 "confusion": report.confusion.tolist()}, out / "metrics.json")
    if entries is not None and log_probs is not None:
        probs, hyps = log_probs.exp().max(-1)
        with open(out / "predictions.tsv", "w", encoding="utf-8") as f:
            f.write("id\treference\thypothesis\tprobability\n")
            for e, h, p in zip(entries, hyps.tolist(), probs.tolist()):
                f.write(f"{e.get('id', e['audio_filepath'])}\t{e['label']}\t{report.labels[h]}\t{p:.4f}\n")
    return out



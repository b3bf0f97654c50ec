#!/usr/bin/env python
"""Write a recipe's RESULTS.md from the experiment folders its demo left.

    python tools/results.py librispeech exp/demo [EXP ...]
    python tools/results.py ljspeech exp/ljspeech
    python tools/results.py fsdd exp/fsdd
    python tools/results.py an4 exp/an4
    python tools/results.py esc50 exp/esc10

Each EXP gives one row (or one block of rows) of the recipe's one table: the figures the
demo wrote under ``EXP/results/``, and the machine, optimizer, precision and steps its
model file records (``provenance``), with the demo's duration from ``EXP/demo.json``.
The table goes to ``recipes/<recipe>/RESULTS.md``, below the file's own text, which the
command keeps; nothing else is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MARK = "<!-- table: written by tools/results.py; everything above this line is kept -->"


def provenance(model: Path) -> dict:
    from asr.checkpoint import ModelFile

    return ModelFile.load(model).provenance if model.is_file() else {}


def demo_record(exp: Path) -> dict:
    path = exp / "demo.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def wer_rows(exp: Path) -> list[tuple[str, str, str, str]]:
    """(set, setup, WER %, CER %) from a results/wer.txt table."""
    rows = []
    lines = (exp / "results" / "wer.txt").read_text().splitlines()
    split = lines[0].index("setup")  # a set's name may hold spaces: "lj-test (real)"
    for line in lines[2:]:
        parts = line[split:].split()
        if len(parts) >= 4:
            rows.append((line[:split].strip(), " ".join(parts[:-3]), parts[-2], parts[-1]))
    return rows


def machine_cell(trained: dict, record: dict) -> str:
    if not trained:
        return "-"
    steps = f"{trained.get('steps', 0):,} steps"
    minutes = f", demo {record['minutes']:.1f} min" if "minutes" in record else ""
    return f"{trained['machine']}; {trained['optimizer']}, {trained['precision']}; {steps}{minutes}"


def asr_table(exps: list[Path], model: str) -> list[str]:
    lines = ["| run | machine, optimizer, precision, steps | test set | decoding | WER % | CER % |",
             "|---|---|---|---|---:|---:|"]
    for exp in exps:
        record = demo_record(exp)
        first = True
        for name, setup, wer, cer in wer_rows(exp):
            label = f"`{exp}`" + (f" ({record['label']})" if record.get("label") else "") if first else ""
            cell = machine_cell(provenance(exp / model), record) if first else ""
            lines.append(f"| {label} | {cell} | {name} | {setup} | {wer} | {cer} |")
            first = False
    return lines


def fsdd_table(exps: list[Path]) -> list[str]:
    lines = ["| run | machine, optimizer, precision, steps | scored on | models | accuracy % |",
             "|---|---|---|---|---:|"]
    for exp in exps:
        record = demo_record(exp)
        rows = []
        for folder, what, models in (("results/test", "the held-out speaker, every clip", "as trained"),
                                     ("results/test-adapted", "the held-out speaker, every clip",
                                      "BatchNorm statistics re-estimated on his clips"),
                                     ("self_train/results/before", "his clips 0-24", "as trained"),
                                     ("self_train/results/after", "his clips 0-24", "self-trained on his clips 25-49")):
            metrics = exp / folder / "metrics.json"
            if metrics.is_file():
                rows.append((what, models, 100 * json.loads(metrics.read_text())["accuracy"]))
        cv = exp / "results" / "cv" / "speakers.json"
        if cv.is_file():  # python -m asr.recipes.fsdd cv: each speaker held out in turn
            result = json.loads(cv.read_text())
            speakers = ", ".join(f"{s} {100 * row['test']:.1f}" for s, row in result["speakers"].items())
            first = exp / "cv" / next(iter(result["speakers"]))
            rows.append((f"each speaker held out in turn ({speakers}): mean", cv_models(first),
                         100 * result["mean"]["test"]))
            model = first / "model.pt"
        else:
            model = exp / "model.pt"
        for i, (what, models, accuracy) in enumerate(rows):
            label = f"`{exp}`" if i == 0 else ""
            cell = machine_cell(provenance(model), record) if i == 0 else ""
            lines.append(f"| {label} | {cell} | {what} | {models} | {accuracy:.1f} |")
    return lines


def cv_models(exp: Path) -> str:
    """What a cross-validation run trained, from its config: the model, its start, its extra data."""
    path = exp / "config.json"
    if not path.is_file():  # an ensemble: each member's folder has the config
        path = exp / "members" / "0" / "config.json"
    config = json.loads(path.read_text())
    model, extra = config["model"], []
    start = " from an ASR model's encoder" if model.get("init_from") else ""
    if config.get("synth", {}).get("per_voice"):
        extra.append("TTS digits")
    if config.get("an4_digits", {}).get("aligner"):
        extra.append("AN4 digit words")
    if "hiss" in config.get("augment", {}).get("noises", ()):
        extra.append("hiss noise")
    count = len(list((exp / "members").iterdir())) if (exp / "members").is_dir() else config.get("ensemble", 1)
    members = f" x{count}" if count > 1 else ""
    return f"{model['kind']}{members}{start}" + (f"; + {', '.join(extra)}" if extra else "")


def esc_table(exps: list[Path]) -> list[str]:
    lines = ["| run | machine | model | fold 1 | fold 2 | fold 3 | fold 4 | fold 5 | mean % |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for exp in exps:
        summary = exp / "results" / "cv" / "compare.json"
        if not summary.is_file():
            summary = exp / "results" / "cv" / "models.json"
        if not summary.is_file():
            continue
        record = demo_record(exp)
        for i, row in enumerate(json.loads(summary.read_text())):
            folds = " | ".join(f"{100 * a:.1f}" for a in row["folds"])
            cell = f"{record.get('machine', '-')}, demo {record['minutes']:.1f} min" if i == 0 and record else ""
            lines.append(f"| {f'`{exp}`' if i == 0 else ''} | {cell} | {row['name']} | {folds} | "
                         f"{100 * row['mean']:.1f} |")
    return lines


TABLES = {
    "librispeech": lambda exps: asr_table(exps, "model.pt"),
    "ljspeech": lambda exps: asr_table(exps, "char/finetune/model.pt"),
    "an4": lambda exps: asr_table(exps, "model.pt"),
    "fsdd": fsdd_table,
    "esc50": esc_table,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", choices=list(TABLES))
    parser.add_argument("exps", nargs="+", type=Path, help="experiment folders, one row (block) each")
    args = parser.parse_args(argv)
    missing = [str(e) for e in args.exps if not (e / "results").is_dir()]
    if missing:
        print(f"results: error: no results/ in {', '.join(missing)} (run the demo first)", file=sys.stderr)
        return 1
    out = ROOT / "recipes" / args.recipe / "RESULTS.md"
    head = out.read_text().split(MARK)[0].rstrip() + "\n\n" if out.is_file() else f"# {args.recipe}: results\n\n"
    table = "\n".join(TABLES[args.recipe](args.exps))
    command = f"python tools/results.py {args.recipe} " + " ".join(str(e) for e in args.exps)
    out.write_text(f"{head}{MARK}\n\nWritten by `{command}`.\n\n{table}\n")
    print(f"{out}:\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

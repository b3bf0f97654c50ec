"""Runnable recipes: ``python -m asr.recipes.<corpus> STAGE``.

Each recipe is a short script of stages (download, prepare, train, evaluate,
demo, ...) over the library. This module holds the little they share: where
the shared real data lives, the command-line driver, and the demos' train-once
step and closing lines.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from asr.errors import ArgumentParser, AsrError

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data(*parts: str, required: bool = True) -> Path:
    """``$ASR_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    root = Path(os.environ.get("ASR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    path = root.joinpath(*parts)
    if required and not path.exists():
        raise AsrError(f"{path} not found: the shared data folder is needed (set ASR_SHARED_DATA to its location)")
    return path


def recipe_config_path(recipe: str, name: str) -> Path:
    return REPO_ROOT / "recipes" / recipe / f"{name}.toml"


def train_once(model_path: Path, train: Callable[[], object], resume: bool) -> None:
    """Run ``train()`` unless ``model_path`` exists (a rerun demo evaluates the model it has, and
    one that was stopped continues from its checkpoint); ``resume=False`` (``--restart``) trains again."""
    if not resume or not model_path.exists():
        train()
    else:
        print(f"{model_path} exists: skipping training (--restart trains again)")


def print_finish(started: float, model_path: Path, try_command: str, exp: Path | None = None) -> None:
    """A demo's closing lines: its duration, the machine and set-up that trained its model, the
    model file and a command to try. The duration, date and machine also go to ``<exp>/demo.json``
    (``tools/results.py`` reads it)."""
    import datetime
    import json

    from asr.checkpoint import ModelFile
    from asr.device import describe

    minutes = (time.perf_counter() - started) / 60
    print(f"demo finished in {minutes:.1f} min")
    if exp is not None:
        record = {"minutes": round(minutes, 2), "date": datetime.date.today().isoformat(), "machine": describe("cpu")}
        (Path(exp) / "demo.json").write_text(json.dumps(record, indent=2) + "\n")
    trained = ModelFile.load(model_path).provenance
    if trained:
        print(f"trained on: {trained['machine']}; optimizer {trained['optimizer']}, precision {trained['precision']}, "
              f"{trained['steps']:,} steps")
    print(f"model: {model_path}")
    print(f"try:   {try_command}")


def stage_runner(name: str, stages: dict[str, Callable], make_config: Callable[[str | None, str], object]
                 ) -> Callable[..., int]:
    """A recipe's ``main(argv=None)``: ``run_stages`` over its stages, described by ``name``."""
    description = f"{name} (stages: {', '.join(stages)})"
    return lambda argv=None: run_stages(description, stages, make_config, argv)


def run_stages(description: str, stages: dict[str, Callable], make_config: Callable[[str | None, str], object],
               argv: list[str] | None = None) -> int:
    """Parse ``STAGE [--config FILE] [--exp-dir DIR] [--restart] [--no-progress]`` and run the stage.

    ``make_config(config_path_or_None, stage)`` builds the stage's config. A stage is called
    with the config and those of ``resume`` and ``progress`` that it takes. Training resumes from
    the last checkpoint by default, so that after a crash or a kill the same command goes on
    where it stopped (``--resume`` says so explicitly; a process that ``torchrun
    --max-restarts`` starts again always resumes); ``--restart`` starts it afresh. Bad input
    ends with one line on stderr and exit status 1.
    """
    import inspect

    from asr.distributed import leave, restarted

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # python -m asr.recipes.<name>
    prog = f"python -m {spec.name}" if spec and spec.name.startswith("asr.recipes.") else None
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("stage", choices=list(stages), help="the stage to run")
    parser.add_argument("--config", help="TOML file overriding the recipe defaults")
    parser.add_argument("--exp-dir", help="experiment folder: every output goes under it")
    parser.add_argument("--resume", action="store_true", help="continue training from the last checkpoint (the default)")
    parser.add_argument("--restart", action="store_true", help="train from the start, not from the last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        config = make_config(args.config, args.stage)
        if args.exp_dir:
            import dataclasses

            config = dataclasses.replace(config, exp_dir=args.exp_dir)
        stage = stages[args.stage]
        takes = inspect.signature(stage).parameters
        if (args.resume or args.restart) and "resume" not in takes:
            raise AsrError(f"the {args.stage} stage does not train: --resume and --restart do not apply")
        if args.resume and args.restart:
            raise AsrError("--resume and --restart contradict each other")
        options = {"resume": not args.restart or restarted(), "progress": not args.no_progress}
        stage(config, **{k: v for k, v in options.items() if k in takes})
    except AsrError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return leave(1)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return leave(130)
    return leave(0)

#!/usr/bin/env python
"""Run every command of the READMEs, as written, in order, so that no README drifts from the code.

    python tools/readme_commands.py [--list] [--short]

The commands are the lines of the ```bash blocks of README.md, then of recipes/*/README.md
(a line ending in a backslash goes on), run from the repository root with bash; the first
that fails stops the run. Three kinds are treated apart: the set-up (``bash tools/setup.sh``,
which CI runs first) and the test command (``python -m pytest -q``, which CI runs last) are
left out, and ``tensorboard --logdir DIR``, a server, runs as ``tensorboard --inspect
--logdir DIR``. Blocks fenced as ```text (the commands that need the network) are not run;
the tests run those stages against archives served on 127.0.0.1. ``--short`` sets
``ASR_DEMO_SHORT=1``, under which the long demos (AN4, ESC-10) run their documented short
mode: fewer steps, the same code path. ``--list`` prints the commands without running them.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = "bash tools/setup.sh"
TESTS = "python -m pytest -q"


def readmes() -> list[Path]:
    return [ROOT / "README.md", *sorted(ROOT.glob("recipes/*/README.md"))]


def commands(path: Path) -> list[str]:
    """The commands of ``path``'s ```bash blocks, continuation lines joined."""
    out, block, pending = [], False, ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            out.append(re.sub(r"\s+", " ", pending).strip())
            pending = ""
    return out


def runnable(command: str) -> str | None:
    """The command as CI runs it, or None for the set-up and test commands that CI runs itself."""
    if command.startswith(SETUP):
        command = command[len(SETUP):].lstrip(" &")
    if not command or command == TESTS:
        return None
    if command.startswith("tensorboard ") and "--inspect" not in command:
        command = command.replace("tensorboard ", "tensorboard --inspect ", 1)
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--short", action="store_true", help="the long demos in their short mode (ASR_DEMO_SHORT=1)")
    args = parser.parse_args(argv)
    env = {**os.environ, **({"ASR_DEMO_SHORT": "1"} if args.short else {})}
    todo = [(path, c) for path in readmes() for c in map(runnable, commands(path)) if c]
    for path, command in todo:
        print(f"+ [{path.relative_to(ROOT)}] {command}", flush=True)
        if args.list:
            continue
        started = time.perf_counter()
        done = subprocess.run(["bash", "-c", f"set -eo pipefail; {command}"], cwd=ROOT, env=env)
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
        if done.returncode:
            print(f"readme_commands: failed ({done.returncode}): {command}", file=sys.stderr)
            return done.returncode
    print(f"readme_commands: {len(todo)} commands from {len(readmes())} READMEs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

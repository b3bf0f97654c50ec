"""The one exception type the toolkit raises for bad input, and the argument
parser every command uses.

The CLI and the recipes turn an ``AsrError`` into a single line on stderr and a
non-zero exit; anything else is a bug and keeps its traceback. Bad command-line
arguments get one line too (``ArgumentParser``).
"""

import argparse


class AsrError(Exception):
    """A user-facing error: bad file, bad argument, missing dependency."""


def require(module: str, install_hint: str):
    """Import an optional heavy dependency, or fail with what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise AsrError(f"{module} is not installed: {install_hint}") from exc


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line (``prog: error: ...``) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

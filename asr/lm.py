"""Word n-gram language models for beam search, built with KenLM.

Building a model needs KenLM's ``lmplz`` and ``build_binary`` programs, which no
wheel ships: ``bash tools/build_kenlm.sh`` compiles them once per machine into
``~/.cache/asr/kenlm/bin`` (or ``$ASR_KENLM_DIR/bin``). Loading a built model
needs only the ``kenlm`` Python module, which pyctcdecode uses.

``build_lm`` is a restartable stage; in ``out_dir`` it writes::

    corpus.txt     the text, one normalised sentence per line
    lm.arpa        lmplz output (modified Kneser-Ney)
    lm.bin         the same model in KenLM's binary format (what decoding loads)
    unigrams.txt   the vocabulary, one word per line, most frequent first

``prepare_arpa`` does the same for a ready-made ARPA model (e.g. the official
LibriSpeech LM): ``lm.bin`` and ``unigrams.txt`` beside a given ``.arpa``.

From the command line::

    python -m asr.lm --text ../shared/data/text/lj-text-train.txt --order 4 --out exp/lm
    python -m asr.lm --arpa 3-gram.pruned.1e-7.arpa --out exp/lm-librispeech

and then ``asr transcribe --decoder beam --lm exp/lm/lm.bin AUDIO``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asr.errors import ArgumentParser, AsrError
from asr.text import normalize_text

BUILD_HINT = "run `bash tools/build_kenlm.sh` to build them"


@dataclass(frozen=True)
class LMFiles:
    """The files of a built language model."""

    arpa: Path
    binary: Path
    unigrams: Path


def kenlm_bin_dirs() -> list[Path]:
    """Where ``tools/build_kenlm.sh`` installs the programs, in search order."""
    dirs = []
    if os.environ.get("ASR_KENLM_DIR"):
        dirs.append(Path(os.environ["ASR_KENLM_DIR"]) / "bin")
    dirs.append(Path.home() / ".cache" / "asr" / "kenlm" / "bin")
    return dirs


def find_kenlm_binary(name: str) -> Path:
    """Path of a KenLM program (``lmplz``, ``build_binary``): the build cache first, then PATH."""
    for directory in kenlm_bin_dirs():
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    searched = ", ".join(str(d) for d in kenlm_bin_dirs())
    raise AsrError(f"KenLM program {name!r} not found in {searched} or on PATH: {BUILD_HINT}")


def kenlm_programs_built() -> bool:
    """Whether ``lmplz`` and ``build_binary`` can be found (``tools/build_kenlm.sh`` builds them)."""
    try:
        find_kenlm_binary("lmplz")
        find_kenlm_binary("build_binary")
    except AsrError:
        return False
    return True


def build_lm(
    text_path: str | Path,
    out_dir: str | Path,
    order: int = 4,
    prune: str | Sequence[int] | None = None,
    memory: str = "20%",
) -> LMFiles:
    """Build a word n-gram model from a text file, one sentence per line.

    order: n-gram order (2 or more; ``lm.bin`` supports up to the order KenLM was
        built for, 6 by default).
    prune: lmplz count thresholds per order, e.g. ``"0 0 1"`` or ``[0, 0, 1]``
        drops singleton trigrams and above; None keeps every n-gram.
    memory: lmplz sort memory (``-S``), e.g. ``"20%"`` of RAM or ``"2G"``.

    Each output is rebuilt only when it is missing or older than its input, so
    an interrupted run picks up where it stopped; ``lm.arpa`` is also rebuilt
    when ``order`` or ``prune`` change.
    """
    text_path, out_dir = Path(text_path), Path(out_dir)
    if not text_path.is_file():
        raise AsrError(f"language model text not found: {text_path}")
    if order < 2:
        raise AsrError(f"language model order must be at least 2, got {order}")
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    files = LMFiles(arpa=out_dir / "lm.arpa", binary=out_dir / "lm.bin", unigrams=out_dir / "unigrams.txt")

    if not _is_fresh(corpus, text_path):
        _write_corpus(text_path, corpus)

    options = ["-o", str(order), "--discount_fallback"] + _prune_args(prune)
    options_file = out_dir / "lm.arpa.options"
    if not _is_fresh(files.arpa, corpus) or _read(options_file) != " ".join(options):
        tmp = files.arpa.with_name(files.arpa.name + ".tmp")
        _run([find_kenlm_binary("lmplz"), *options, "-S", memory, "-T", out_dir,
              "--text", corpus, "--arpa", tmp])
        tmp.replace(files.arpa)
        options_file.write_text(" ".join(options))

    if not _is_fresh(files.binary, files.arpa):
        tmp = files.binary.with_name(files.binary.name + ".tmp")
        _run([find_kenlm_binary("build_binary"), files.arpa, tmp])
        tmp.replace(files.binary)

    if not _is_fresh(files.unigrams, corpus):
        counts = Counter(word for line in corpus.read_text().splitlines() for word in line.split())
        words = sorted(counts, key=lambda w: (-counts[w], w))
        _write_atomic(files.unigrams, "".join(w + "\n" for w in words))
    return files


def prepare_arpa(arpa_path: str | Path, out_dir: str | Path) -> LMFiles:
    """``lm.bin`` (KenLM binary) and ``unigrams.txt`` in ``out_dir`` for an existing ARPA model.

    The unigrams are the ARPA file's words, most probable first, without
    ``<s>``, ``</s>`` and ``<unk>``. Restartable like ``build_lm``.
    """
    arpa, out_dir = Path(arpa_path), Path(out_dir)
    if not arpa.is_file():
        raise AsrError(f"ARPA language model not found: {arpa}")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = LMFiles(arpa=arpa, binary=out_dir / "lm.bin", unigrams=out_dir / "unigrams.txt")
    if not _is_fresh(files.binary, arpa):
        tmp = files.binary.with_name(files.binary.name + ".tmp")
        _run([find_kenlm_binary("build_binary"), arpa, tmp])
        tmp.replace(files.binary)
    if not _is_fresh(files.unigrams, arpa):
        words = _arpa_unigrams(arpa)
        if not words:
            raise AsrError(f"{arpa}: no unigrams found (not an ARPA file?)")
        _write_atomic(files.unigrams, "".join(w + "\n" for w in words))
    return files


def _arpa_unigrams(arpa: Path) -> list[str]:
    scored = []
    with open(arpa, encoding="utf-8", errors="replace") as f:
        in_unigrams = False
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif in_unigrams and line.startswith("\\"):
                break
            elif in_unigrams and line:
                parts = line.split()
                if len(parts) >= 2 and parts[1] not in ("<s>", "</s>", "<unk>"):
                    scored.append((-float(parts[0]), parts[1]))
    return [word for _, word in sorted(scored)]


def load_unigrams(path: str | Path) -> list[str]:
    """The words of ``unigrams.txt``, in file order (for pyctcdecode's ``unigrams``)."""
    path = Path(path)
    if not path.is_file():
        raise AsrError(f"unigram list not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _is_fresh(output: Path, source: Path) -> bool:
    return output.exists() and output.stat().st_mtime >= source.stat().st_mtime


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_corpus(text_path: Path, corpus: Path) -> None:
    lines = []
    with open(text_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = normalize_text(line)
            if line:
                lines.append(line + "\n")
    if not lines:
        raise AsrError(f"no words left in {text_path} after normalisation")
    _write_atomic(corpus, "".join(lines))


def _prune_args(prune: str | Sequence[int] | None) -> list[str]:
    if prune is None:
        return []
    values = prune.split() if isinstance(prune, str) else [str(v) for v in prune]
    if not values or not all(v.isdigit() for v in values):
        raise AsrError(f"prune must be non-negative counts such as '0 0 1', got {prune!r}")
    return ["--prune", *values]


def _run(command: list) -> None:
    """Run a KenLM program; its failure becomes a one-line AsrError."""
    command = [str(c) for c in command]
    name = Path(command[0]).name
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise AsrError(f"cannot run {command[0]}: {exc.strerror}; {BUILD_HINT}") from exc
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        # KenLM errors read "<file:line> in <function> threw <type> because `<test>'." then the message.
        after_throw = [lines[i + 1] for i, line in enumerate(lines[:-1]) if " threw " in line]
        reason = (after_throw or [line for line in lines if line != "ERROR"] or ["no message"])[-1]
        raise AsrError(f"{name} failed (exit code {result.returncode}): {reason}")


def main(argv: list[str] | None = None) -> int:
    """``python -m asr.lm``: build a language model from a text (or prepare an ARPA file) for beam search."""
    import sys

    parser = ArgumentParser(
        prog="python -m asr.lm",
        description="Build a KenLM word n-gram model for beam search: corpus.txt, lm.arpa, lm.bin and "
                    "unigrams.txt in --out.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="text file, one sentence per line (normalised here)")
    source.add_argument("--arpa", help="an existing ARPA model: only lm.bin and unigrams.txt are made")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--order", type=int, default=4, help="n-gram order (default 4)")
    parser.add_argument("--prune", help="lmplz count thresholds per order, e.g. '0 0 1'")
    parser.add_argument("--memory", default="20%", help="lmplz sort memory, e.g. 20%% or 1G (default 20%%)")
    args = parser.parse_args(argv)
    try:
        if args.text:
            files = build_lm(args.text, args.out, order=args.order, prune=args.prune, memory=args.memory)
        else:
            files = prepare_arpa(args.arpa, args.out)
    except AsrError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    words = len(load_unigrams(files.unigrams))
    print(f"language model: {files.binary} ({files.binary.stat().st_size / 1e6:.1f} MB; ARPA {files.arpa})")
    print(f"vocabulary: {words} words in {files.unigrams}")
    print(f"use it:  asr transcribe --decoder beam --lm {files.binary} AUDIO")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

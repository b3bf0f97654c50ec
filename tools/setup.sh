#!/usr/bin/env bash
# Everything asr needs on a fresh Debian/Ubuntu machine, in one idempotent step:
#   1. system packages (TTS engines, libsndfile, compilers, Boost)  tools/install_system_deps.sh
#   2. the Python package, its pinned dependencies and extras       pip install -e ".[lm,train,test]"
#   3. KenLM's lmplz and build_binary, built once per machine       tools/build_kenlm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
bash tools/install_system_deps.sh
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[lm,train,test]"
PYTHON="$PYTHON" bash tools/build_kenlm.sh
echo "setup: done"

#!/usr/bin/env bash
# LibriSpeech, stage by stage. Each stage can be rerun; finished work is skipped.
#
#   bash recipes/librispeech/run.sh [FIRST_STAGE [LAST_STAGE]]   (names or numbers; default: all)
#   CONFIG=recipes/librispeech/other.toml RESUME=1 bash recipes/librispeech/run.sh train
#
# Stages: 1 download, 2 prepare, 3 lm, 4 train, 5 tune, 6 evaluate.
#   other stages: tokenizer (with tokenizer = "sentencepiece"), synthesize, demo
set -euo pipefail
source "$(dirname "$0")/../stages.sh"
run_stages librispeech recipes/librispeech/config.toml "download prepare lm train tune evaluate" "$@"

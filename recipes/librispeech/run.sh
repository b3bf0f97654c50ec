#!/usr/bin/env bash
# LibriSpeech, stage by stage. Each stage can be rerun; finished work is skipped.
#   bash recipes/librispeech/run.sh [FIRST_STAGE] [LAST_STAGE]
# Stages: 1 download, 2 prepare, 3 lm, 4 train, 5 tune, 6 evaluate.
set -euo pipefail
cd "$(dirname "$0")/../.."
config=${CONFIG:-recipes/librispeech/config.toml}
first=${1:-1}
last=${2:-6}
stages=(download prepare lm train tune evaluate)
for i in "${!stages[@]}"; do
  n=$((i + 1))
  if [ "$n" -ge "$first" ] && [ "$n" -le "$last" ]; then
    echo "== stage $n: ${stages[$i]}"
    python -m asr.recipes.librispeech "${stages[$i]}" --config "$config"
  fi
done

#!/usr/bin/env bash
# FSDD spoken digits, speaker-independent, stage by stage.
#
#   bash recipes/fsdd/run.sh [FIRST_STAGE [LAST_STAGE]]   (default: prepare to evaluate)
#   CONFIG=recipes/fsdd/other.toml bash recipes/fsdd/run.sh train
#
# Stages: prepare -> train -> evaluate. Each can be rerun; pass --resume by setting RESUME=1.
#   other stages: lr_find, demo (prepare + train + evaluate, printing the held-out speaker's accuracy)
set -euo pipefail
cd "$(dirname "$0")/../.."

config=${CONFIG:-recipes/fsdd/config.toml}
stages=(prepare train evaluate)
first=${1:-prepare}
last=${2:-evaluate}
resume=()
[[ -n "${RESUME:-}" ]] && resume=(--resume)

if [[ ! " ${stages[*]} " == *" $first "* ]]; then
  python -m asr.recipes.fsdd "$first" --config "$config" "${resume[@]}"
  exit
fi
running=false
for stage in "${stages[@]}"; do
  [[ $stage == "$first" ]] && running=true
  if $running; then
    echo "=== stage $stage"
    python -m asr.recipes.fsdd "$stage" --config "$config" "${resume[@]}"
  fi
  [[ $stage == "$last" ]] && break
done

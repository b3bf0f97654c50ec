#!/usr/bin/env bash
# ESC-50 sound classification, 5-fold cross-validation, stage by stage.
#
#   bash recipes/esc50/run.sh [FIRST_STAGE [LAST_STAGE]]   (default: download to evaluate)
#   CONFIG=recipes/esc50/other.toml bash recipes/esc50/run.sh train
#
# Stages: download -> prepare -> train -> evaluate. Each can be rerun; pass --resume by setting RESUME=1.
#   other stages: lr_find
set -euo pipefail
cd "$(dirname "$0")/../.."

config=${CONFIG:-recipes/esc50/config.toml}
stages=(download prepare train evaluate)
first=${1:-download}
last=${2:-evaluate}
resume=()
[[ -n "${RESUME:-}" ]] && resume=(--resume)

if [[ ! " ${stages[*]} " == *" $first "* ]]; then
  python -m asr.recipes.esc50 "$first" --config "$config" "${resume[@]}"
  exit
fi
running=false
for stage in "${stages[@]}"; do
  [[ $stage == "$first" ]] && running=true
  if $running; then
    echo "=== stage $stage"
    python -m asr.recipes.esc50 "$stage" --config "$config" "${resume[@]}"
  fi
  [[ $stage == "$last" ]] && break
done

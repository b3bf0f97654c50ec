#!/usr/bin/env bash
# Speech Commands keyword spotting, stage by stage.
#
#   bash recipes/speech_commands/run.sh [FIRST_STAGE [LAST_STAGE]]   (default: download to evaluate)
#   CONFIG=recipes/speech_commands/other.toml bash recipes/speech_commands/run.sh train
#
# Stages: download -> prepare -> train -> evaluate. Each can be rerun; pass --resume by setting RESUME=1.
#   other stages: synthesize (the offline corpus, data.version = "synthetic"), lr_find, compare, demo
set -euo pipefail
cd "$(dirname "$0")/../.."

config=${CONFIG:-recipes/speech_commands/config.toml}
stages=(download prepare train evaluate)
first=${1:-download}
last=${2:-evaluate}
resume=()
[[ -n "${RESUME:-}" ]] && resume=(--resume)

if [[ ! " ${stages[*]} " == *" $first "* ]]; then
  python -m asr.recipes.speech_commands "$first" --config "$config" "${resume[@]}"
  exit
fi
running=false
for stage in "${stages[@]}"; do
  [[ $stage == "$first" ]] && running=true
  if $running; then
    echo "=== stage $stage"
    python -m asr.recipes.speech_commands "$stage" --config "$config" "${resume[@]}"
  fi
  [[ $stage == "$last" ]] && break
done

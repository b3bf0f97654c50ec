#!/usr/bin/env bash
# Speech Commands keyword spotting, stage by stage.
#
#   bash recipes/speech_commands/run.sh [FIRST_STAGE [LAST_STAGE]]   (default: download to evaluate)
#   CONFIG=recipes/speech_commands/other.toml RESUME=1 bash recipes/speech_commands/run.sh train
#
# Stages: download -> prepare -> train -> evaluate. Each can be rerun.
#   other stages: synthesize (the offline corpus, data.version = "synthetic"), lr_find, compare, demo
set -euo pipefail
source "$(dirname "$0")/../stages.sh"
run_stages speech_commands recipes/speech_commands/config.toml "download prepare train evaluate" "$@"

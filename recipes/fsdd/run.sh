#!/usr/bin/env bash
# FSDD spoken digits, speaker-independent, stage by stage.
#
#   bash recipes/fsdd/run.sh [FIRST_STAGE [LAST_STAGE]]   (default: prepare to evaluate)
#   CONFIG=recipes/fsdd/other.toml RESUME=1 bash recipes/fsdd/run.sh train
#
# Stages: prepare -> train -> evaluate. Each can be rerun.
#   other stages: synthesize, lr_find, demo (prepare + train + evaluate, printing the held-out speaker's accuracy)
set -euo pipefail
source "$(dirname "$0")/../stages.sh"
run_stages fsdd recipes/fsdd/config.toml "prepare train evaluate" "$@"

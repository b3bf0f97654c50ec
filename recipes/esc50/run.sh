#!/usr/bin/env bash
# ESC-50 sound classification, 5-fold cross-validation, stage by stage.
#
#   bash recipes/esc50/run.sh [FIRST_STAGE [LAST_STAGE]]   (default: download to evaluate)
#   CONFIG=recipes/esc50/other.toml RESUME=1 bash recipes/esc50/run.sh train
#
# Stages: download -> prepare -> train -> evaluate. Each can be rerun.
#   other stages: lr_find
set -euo pipefail
source "$(dirname "$0")/../stages.sh"
run_stages esc50 recipes/esc50/config.toml "download prepare train evaluate" "$@"

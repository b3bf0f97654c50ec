# The stage loop of every recipes/*/run.sh (source it, then call run_stages).
#
#   run_stages MODULE DEFAULT_CONFIG "STAGE STAGE ..." [FIRST [LAST]]
#
# Runs `python -m asr.recipes.MODULE STAGE --config CONFIG` for the listed stages from
# FIRST to LAST (names, or 1-based numbers; default: all of them). A FIRST that is not
# in the list (lr_find, compare, demo, ...) runs alone. CONFIG=path overrides the
# config; RESUME=1 passes --resume. The first failing stage stops the run.
run_stages() {
  local module=$1 config=${CONFIG:-$2}
  local -a stages=($3) extra=()
  shift 3
  local first=${1:-${stages[0]}} last=${2:-${stages[-1]}}
  [[ $first =~ ^[0-9]+$ ]] && first=${stages[$((first - 1))]:-$first}
  [[ $last =~ ^[0-9]+$ ]] && last=${stages[$((last - 1))]:-$last}
  if [[ " ${stages[*]} " != *" $last "* ]]; then
    echo "run.sh: error: last stage '$last' is not one of: ${stages[*]}" >&2
    return 2
  fi
  [[ -n "${RESUME:-}" ]] && extra=(--resume)
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  if [[ " ${stages[*]} " != *" $first "* ]]; then
    python -m "asr.recipes.$module" "$first" --config "$config" "${extra[@]}"
    return
  fi
  local running=false stage
  for stage in "${stages[@]}"; do
    [[ $stage == "$first" ]] && running=true
    if $running; then
      echo "=== stage $stage"
      python -m "asr.recipes.$module" "$stage" --config "$config" "${extra[@]}"
    fi
    [[ $stage == "$last" ]] && break
  done
}

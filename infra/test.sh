#!/usr/bin/env bash
# All set-up, then a test tier.
#   bash infra/test.sh              # the default tier: everything but tests marked `slow` (what CI runs)
#   bash infra/test.sh --all        # every tier: the default one and the slow end-to-end tests
#   bash infra/test.sh -m slow      # only the slow tier (any other arguments go to pytest as they are)
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
bash infra/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [[ ${1:-} == --all ]]; then
  shift
  exec .venv/bin/python -m pytest -q --durations=15 "$@"
fi
if (($#)); then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -m "not slow" -q --durations=15

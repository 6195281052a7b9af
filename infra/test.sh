#!/usr/bin/env bash
# All set-up, then a test tier.
#   bash infra/test.sh              # the default tier: everything but tests marked `slow` (what CI runs)
#   bash infra/test.sh --all        # every tier: the default one and the slow end-to-end tests
#   bash infra/test.sh -m slow      # only the slow tier (any other arguments go to pytest as they are)
# The tiers run on 2 pytest-xdist workers, one test file to a worker (module fixtures are built once);
# VLJEPA_TEST_WORKERS=0 runs them in this process.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
bash infra/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
workers=${VLJEPA_TEST_WORKERS:-2}
xdist=()
((workers > 0)) && xdist=(-n "$workers" --dist loadfile)
if [[ ${1:-} == --all ]]; then
  shift
  exec .venv/bin/python -m pytest "${xdist[@]}" -q --durations=15 "$@"
fi
if (($#)); then
  exec .venv/bin/python -m pytest "${xdist[@]}" "$@"
fi
exec .venv/bin/python -m pytest "${xdist[@]}" -m "not slow" -q --durations=15

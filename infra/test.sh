#!/usr/bin/env bash
# All set-up, then the default test run (everything but tests marked `slow`).
#   bash infra/test.sh              # default run (what CI runs)
#   bash infra/test.sh -m slow      # the slow end-to-end tests
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
bash infra/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if (($#)); then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -m "not slow" -q --durations=15

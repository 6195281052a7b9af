#!/usr/bin/env bash
# The main job, end to end on the embedded default: set-up, local services, the Prefect
# deployment pretrain/full, then the metrics and where to look.
#   bash infra/run-main.sh                 # preset "small" (the embedded default)
#   bash infra/run-main.sh --param preset=tiny   # extra args go to `prefect deployment run`
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
bash infra/setup.sh
source infra/env.sh
bash infra/up.sh
echo "== registering deployments"
.venv/bin/vljepa deploy
echo "== running pretrain/full (Prefect UI: $PREFECT_UI_URL)"
start=$SECONDS
.venv/bin/prefect deployment run pretrain/full --watch "$@"
echo "== pretrain/full finished in $((SECONDS - start)) s"
.venv/bin/vljepa report
echo "Services keep running; stop them with: bash infra/down.sh"

#!/usr/bin/env bash
# Stop the services that infra/up.sh started, by the PIDs in their PID files: SIGINT to
# each one's process group, then SIGKILL to what is left of its session after
# $VLJEPA_STOP_TIMEOUT s. Never signals a process it did not start: a PID file whose process
# has gone, or whose PID now belongs to another process, is only removed. Silent, exit 0,
# when nothing runs.
#   infra/down.sh                 stop everything
#   infra/down.sh mlflow ...      stop only the named services
set -euo pipefail
# shellcheck source=infra/env.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/env.sh"

all=(prefect-worker prefect-server mlflow ray)
for name in "$@"; do
  [[ " ${all[*]} " == *" $name "* ]] || { echo "down: unknown service '$name' (one of: ${all[*]})" >&2; exit 2; }
done

[[ -d $VLJEPA_STATE_DIR/run ]] || exit 0
# One up.sh or down.sh at a time per state dir.
exec 9>"$VLJEPA_STATE_DIR/run/.lock"
flock -w 300 9 || { echo "down: another infra/up.sh or down.sh holds $VLJEPA_STATE_DIR/run/.lock" >&2; exit 1; }

status=0
if (($#)); then
  _vljepa_stop "$@" || status=1
else
  # The worker first, so that it leaves while the Prefect API is still there; then the
  # rest side by side.
  _vljepa_stop prefect-worker || status=1
  _vljepa_stop prefect-server mlflow ray || status=1
fi
exit "$status"

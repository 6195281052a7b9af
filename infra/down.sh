#!/usr/bin/env bash
# Stop the services that infra/up.sh started, by the PIDs in their PID files: SIGINT to
# each one's process group, then SIGKILL to what is left of its session after
# $VLJEPA_STOP_TIMEOUT s. Never signals a process it did not start: a PID file whose process
# has gone, or whose PID now belongs to another process, is only removed. Silent, exit 0,
# when nothing runs.
#   infra/down.sh                 stop everything
#   infra/down.sh mlflow ...      stop only the named services
# The Slurm cluster of infra/slurm-up.sh (slurmd slurmctld slurmdbd mariadb munged) stops last.
set -euo pipefail
# shellcheck source=infra/env.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/env.sh"

slurm=(slurmd slurmctld slurmdbd mariadb munged)  # in stopping order
all=(prefect-worker prefect-server mlflow ray "${slurm[@]}")
for name in "$@"; do
  [[ " ${all[*]} " == *" $name "* ]] || { echo "down: unknown service '$name' (one of: ${all[*]})" >&2; exit 2; }
done

[[ -d $VLJEPA_STATE_DIR/run ]] || exit 0
# One up.sh or down.sh at a time per state dir.
exec 9>"$VLJEPA_STATE_DIR/run/.lock"
flock -w 300 9 || { echo "down: another infra/up.sh or down.sh holds $VLJEPA_STATE_DIR/run/.lock" >&2; exit 1; }

# MariaDB ignores SIGINT: shut it down through its socket first, while its PID file says it is ours.
stop_mariadb() {
  [[ $(_vljepa_service_state mariadb) == running ]] || return 0
  mariadb-admin --no-defaults --socket="$VLJEPA_STATE_DIR/slurm/mysql.sock" --user="$(id -un)" \
    shutdown >/dev/null 2>&1 || true
}

status=0
if (($#)); then
  # Named services stop in the order given, each after the one before.
  for name in "$@"; do
    [[ $name == mariadb ]] && stop_mariadb
    _vljepa_stop "$name" || status=1
  done
else
  # The worker first, so that it leaves while the Prefect API is still there; then the
  # rest side by side; then the Slurm daemons, in order.
  _vljepa_stop prefect-worker || status=1
  _vljepa_stop prefect-server mlflow ray || status=1
  for name in "${slurm[@]}"; do
    [[ $name == mariadb ]] && stop_mariadb
    _vljepa_stop "$name" || status=1
  done
fi
exit "$status"

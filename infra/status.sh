#!/usr/bin/env bash
# Show each local service: running or not, PID, URL and whether it answers its health check.
# Exit status 0 when every service that has a PID file is running and healthy.
set -euo pipefail
# shellcheck source=infra/env.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/env.sh"

status=0
# The Slurm daemons of infra/slurm-up.sh are listed only where it has been run.
for name in prefect-server prefect-worker mlflow ray munged mariadb slurmdbd slurmctld slurmd; do
  state=$(_vljepa_service_state "$name")
  case $name:$state in
    munged:none | mariadb:none | slurm*:none) continue ;;
    *:none) printf '%-15s not running\n' "$name"; continue ;;
  esac
  _vljepa_read_pidfile "$name" || true
  detail=""
  case $name in
    prefect-server) url="http://127.0.0.1:$_VLJEPA_PID_PORT/api/health"; detail="$PREFECT_UI_URL" ;;
    mlflow) url="http://127.0.0.1:$_VLJEPA_PID_PORT/health"; detail="http://127.0.0.1:$_VLJEPA_PID_PORT" ;;
    *) url="" ;;
  esac
  [[ $name == ray ]] && detail="127.0.0.1:$_VLJEPA_PID_PORT"
  if [[ $name == slurmd && $state == running ]]; then
    detail="partition $(SLURM_CONF="$VLJEPA_STATE_DIR/slurm/etc/slurm.conf" sinfo -h -o '%P: %D node %c CPUs %T' 2>&1 | head -n 1)"
  fi
  if [[ $state == running && -n $url ]]; then
    if _vljepa_http_ok "$url"; then detail+=" healthy"; else detail+=" NOT ANSWERING"; status=1; fi
  fi
  [[ $state == running ]] || status=1
  printf '%-15s %-9s pid %-8s %s\n' "$name" "$state" "$_VLJEPA_PID" "$detail"
done
echo "state dir: $VLJEPA_STATE_DIR (logs in logs/)"
exit "$status"

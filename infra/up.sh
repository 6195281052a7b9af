#!/usr/bin/env bash
# Start the local services on 127.0.0.1, in the background:
#   prefect-server   Prefect API + UI     http://127.0.0.1:$VLJEPA_PREFECT_PORT
#   prefect-worker   process worker of work pool $VLJEPA_WORK_POOL (cwd: repo root)
#   mlflow           MLflow tracking      http://127.0.0.1:$VLJEPA_MLFLOW_PORT
#   ray              (with --ray) a Ray head on 127.0.0.1:$VLJEPA_RAY_PORT
#   slurm            (with --slurm) a one-node Slurm cluster: infra/slurm-up.sh
# Logs go to $VLJEPA_STATE_DIR/logs/, PID files to $VLJEPA_STATE_DIR/run/. Running it again
# starts only what is not running. Stop everything with infra/down.sh.
set -euo pipefail
# shellcheck source=infra/env.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/env.sh"

usage() { echo "usage: infra/up.sh [--ray] [--slurm]   (settings: see infra/env.sh)"; }
with_ray=0 with_slurm=0
for arg in "$@"; do
  case $arg in
    --ray) with_ray=1 ;;
    --slurm) with_slurm=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

die() { echo "up: $*" >&2; exit 1; }
bin="$VLJEPA_VENV/bin"
for tool in python prefect mlflow; do
  [[ -x $bin/$tool ]] || die "$bin/$tool not found: run infra/setup.sh first"
done
((with_ray == 0)) || [[ -x $bin/ray ]] || die "$bin/ray not found: run infra/setup.sh first"

mkdir -p "$VLJEPA_STATE_DIR"/{logs,run,mlflow/artifacts} "$PREFECT_HOME"
# One up.sh or down.sh at a time per state dir.
exec 9>"$VLJEPA_STATE_DIR/run/.lock"
flock -w 300 9 || die "another infra/up.sh or down.sh holds $VLJEPA_STATE_DIR/run/.lock"
cd "$VLJEPA_ROOT"  # the worker runs flows from the repo root
# Services find each other's CLIs (the worker runs `python -m prefect.engine`) in the venv.
export PATH="$bin:$PATH"
started_at=$(date -u +%Y-%m-%dT%H:%M:%S)

# running, check_port, start, wait_ready
# shellcheck source=infra/services.sh
source "$VLJEPA_ROOT/infra/services.sh"

# worker_online: the worker has sent a heartbeat to the server since this up.sh began.
worker_online() {
  "$bin/python" - "$PREFECT_API_URL" "$VLJEPA_WORK_POOL" "$VLJEPA_WORKER_NAME" "$started_at" <<'EOF'
import datetime, json, sys, urllib.request
api, pool, name, started_at = sys.argv[1:]
request = urllib.request.Request(
    f"{api}/work_pools/{pool}/workers/filter", data=b"{}",
    headers={"Content-Type": "application/json"}, method="POST")
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    workers = json.load(opener.open(request, timeout=3))
except Exception:
    sys.exit(1)
since = datetime.datetime.fromisoformat(started_at).replace(tzinfo=datetime.timezone.utc)
sys.exit(0 if any(
    w["name"] == name and w["last_heartbeat_time"]
    and datetime.datetime.fromisoformat(w["last_heartbeat_time"]) >= since
    for w in workers) else 1)
EOF
}

ray_ready() { grep -q "Ray runtime started" -- "$(_vljepa_logfile ray)"; }

# Check every port before starting anything, so a clash leaves nothing half-started.
check_port prefect-server "$VLJEPA_PREFECT_PORT"
check_port mlflow "$VLJEPA_MLFLOW_PORT"
((with_ray == 0)) || check_port ray "$VLJEPA_RAY_PORT"

# The servers start side by side (each takes ~7-15 s); the worker needs the Prefect API.
start prefect-server "$VLJEPA_PREFECT_PORT" \
  prefect server start --host 127.0.0.1 --port "$VLJEPA_PREFECT_PORT"
# The server would create its SQLite store in place; a kill there leaves it half-migrated for good.
# Build it whole first (or repair a half-made one): flows/tracking_store.py.
(cd "$VLJEPA_ROOT" && "$VLJEPA_VENV/bin/python" -m flows.tracking_store "sqlite:///$VLJEPA_STATE_DIR/mlflow/mlflow.db")
start mlflow "$VLJEPA_MLFLOW_PORT" \
  mlflow server --host 127.0.0.1 --port "$VLJEPA_MLFLOW_PORT" \
  --backend-store-uri "sqlite:///$VLJEPA_STATE_DIR/mlflow/mlflow.db" \
  --artifacts-destination "$VLJEPA_STATE_DIR/mlflow/artifacts" --workers 1
if ((with_ray)); then
  start ray "$VLJEPA_RAY_PORT" \
    ray start --head --block --node-ip-address 127.0.0.1 --port "$VLJEPA_RAY_PORT" \
    --num-cpus "$VLJEPA_RAY_NUM_CPUS" --include-dashboard false --dashboard-host 127.0.0.1 \
    --disable-usage-stats
fi

wait_ready prefect-server _vljepa_http_ok "http://127.0.0.1:$VLJEPA_PREFECT_PORT/api/health"

# `work-pool create` fails on an existing pool; that is the idempotent case.
if out=$(prefect --no-prompt work-pool create "$VLJEPA_WORK_POOL" --type process 2>&1); then
  echo "work pool $VLJEPA_WORK_POOL: created"
elif grep -q "already exists" <<<"$out"; then
  echo "work pool $VLJEPA_WORK_POOL: exists"
else
  echo "$out" >&2
  die "could not create work pool $VLJEPA_WORK_POOL"
fi

worker_was_running=0
running prefect-worker && worker_was_running=1
start prefect-worker - prefect worker start --pool "$VLJEPA_WORK_POOL" --name "$VLJEPA_WORKER_NAME"
((worker_was_running)) || wait_ready prefect-worker worker_online
wait_ready mlflow _vljepa_http_ok "http://127.0.0.1:$VLJEPA_MLFLOW_PORT/health"
((with_ray == 0)) || wait_ready ray ray_ready

echo "Prefect UI:  $PREFECT_UI_URL"
echo "MLflow UI:   http://127.0.0.1:$VLJEPA_MLFLOW_PORT"
((with_ray == 0)) || echo "Ray head:    $VLJEPA_RAY_ADDRESS   (ray.init(address=\"$VLJEPA_RAY_ADDRESS\"))"
echo "Use them from a shell with: source infra/env.sh"
if ((with_slurm)); then
  exec 9>&-  # slurm-up.sh takes the state dir's lock itself
  bash "$VLJEPA_ROOT/infra/slurm-up.sh"
fi

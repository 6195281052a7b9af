#!/usr/bin/env bash
# Start the local services on 127.0.0.1, in the background:
#   prefect-server   Prefect API + UI     http://127.0.0.1:$VLJEPA_PREFECT_PORT
#   prefect-worker   process worker of work pool $VLJEPA_WORK_POOL (cwd: repo root)
#   mlflow           MLflow tracking      http://127.0.0.1:$VLJEPA_MLFLOW_PORT
#   ray              (with --ray) a Ray head on 127.0.0.1:$VLJEPA_RAY_PORT
# Logs go to $VLJEPA_STATE_DIR/logs/, PID files to $VLJEPA_STATE_DIR/run/. Running it again
# starts only what is not running. Stop everything with infra/down.sh.
set -euo pipefail
# shellcheck source=infra/env.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/env.sh"

usage() { echo "usage: infra/up.sh [--ray]   (settings: see infra/env.sh)"; }
with_ray=0
for arg in "$@"; do
  case $arg in
    --ray) with_ray=1 ;;
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

# running NAME: succeed if the service's recorded process is alive.
running() { [[ $(_vljepa_service_state "$1") == running ]]; }

# check_port NAME PORT: before starting NAME, make sure nothing else listens on PORT.
check_port() {
  case $(_vljepa_service_state "$1") in running | orphaned) return 0 ;; esac  # ours
  if _vljepa_port_open "$2"; then
    die "port $2 on 127.0.0.1 is in use by a process up.sh did not start (for $1); stop it or choose another port (see infra/env.sh)"
  fi
}

# start NAME PORT CMD...: start CMD as the leader of a new session and process group, with
# its output in the log, unless the service is already running.
start() {
  local name=$1 port=$2
  shift 2
  local pidfile log state
  pidfile=$(_vljepa_pidfile "$name")
  log=$(_vljepa_logfile "$name")
  state=$(_vljepa_service_state "$name")
  if [[ $state == running ]]; then
    _vljepa_read_pidfile "$name"
    if [[ $port != - && $_VLJEPA_PID_PORT != "$port" ]]; then
      die "$name is running on port $_VLJEPA_PID_PORT (pid $_VLJEPA_PID), not $port: run infra/down.sh first"
    fi
    echo "$name: already running (pid $_VLJEPA_PID)"
    return 0
  fi
  if [[ $state == orphaned ]]; then
    echo "$name: its leader exited but processes of its session remain; stopping them"
    _vljepa_stop "$name"
  fi
  rm -f -- "$pidfile" "$pidfile.new"
  [[ -f $log ]] && mv -f -- "$log" "$log.1"

  # Background jobs of a non-interactive shell ignore SIGINT; env --default-signal=INT
  # restores it, so down.sh can stop the process with SIGINT (Prefect maps SIGTERM to it too).
  # The wrapper writes its own PID after setsid, whether or not setsid had to fork.
  # shellcheck disable=SC2016
  setsid bash -c 'echo "$$" >"$0.new"; exec "$@"' "$pidfile" \
    env --default-signal=INT "$@" </dev/null >"$log" 2>&1 9>&- &  # 9: the lock, not theirs

  local i pid
  for ((i = 0; i < 200; i++)); do  # up to 10 s
    [[ -s $pidfile.new ]] && break
    sleep 0.05
  done
  pid=$(<"$pidfile.new") || die "$name did not start; see $log"
  rm -f -- "$pidfile.new"
  _vljepa_proc "$pid" || { tail -n 40 -- "$log" >&2; die "$name exited at once; log: $log"; }
  echo "$pid $_VLJEPA_START $port" >"$pidfile.tmp"
  mv -f -- "$pidfile.tmp" "$pidfile"
  echo "$name: started (pid $pid, log ${log#"$VLJEPA_ROOT"/})"
}

# wait_ready NAME CHECK...: poll CHECK until it succeeds; on timeout or if the service dies,
# print the end of its log and exit non-zero.
wait_ready() {
  local name=$1
  shift
  local deadline=$((SECONDS + VLJEPA_START_TIMEOUT)) t0=$SECONDS log
  log=$(_vljepa_logfile "$name")
  until "$@"; do
    if ! running "$name"; then
      echo "up: $name exited during start-up; last lines of $log:" >&2
      tail -n 40 -- "$log" >&2 || true
      echo "up: services already started are left running; stop them with infra/down.sh" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "up: $name not ready after ${VLJEPA_START_TIMEOUT}s; last lines of $log:" >&2
      tail -n 40 -- "$log" >&2 || true
      echo "up: it is left running for inspection; stop everything with infra/down.sh" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "$name: ready ($((SECONDS - t0))s)"
}

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

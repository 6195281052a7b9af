# Environment for the local services (Prefect server + worker, MLflow server, Ray head).
#
# Source it from bash:  source infra/env.sh
# up.sh, down.sh and status.sh source it too. Every setting below keeps a value that is
# already exported, so `VLJEPA_PREFECT_PORT=4300 infra/up.sh` works. Note that the derived
# ones (PREFECT_HOME, PREFECT_API_URL, MLFLOW_TRACKING_URI, ...) are kept as well: after
# sourcing this file in a shell, change ports or the state dir in a fresh shell.
#
# The functions at the end (prefixed _vljepa_) are the process bookkeeping shared by
# up.sh, down.sh and status.sh; they are not a user interface.

# The repository root is where this file lives, never inherited: a second checkout must
# not start services from the first one's venv.
VLJEPA_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
export VLJEPA_ROOT
export VLJEPA_VENV="${VLJEPA_VENV:-$VLJEPA_ROOT/.venv}"

# Everything the services write: SQLite databases, artifacts, logs, PID files.
export VLJEPA_STATE_DIR="${VLJEPA_STATE_DIR:-$VLJEPA_ROOT/.vljepa}"
case "$VLJEPA_STATE_DIR" in
  /*) ;;
  *) VLJEPA_STATE_DIR="$PWD/$VLJEPA_STATE_DIR" ;;  # SQLite URIs and PID files need it absolute
esac

export VLJEPA_PREFECT_PORT="${VLJEPA_PREFECT_PORT:-4200}"
export VLJEPA_MLFLOW_PORT="${VLJEPA_MLFLOW_PORT:-5000}"
export VLJEPA_RAY_PORT="${VLJEPA_RAY_PORT:-6379}"
export VLJEPA_RAY_NUM_CPUS="${VLJEPA_RAY_NUM_CPUS:-2}"
# Address of the Ray head that `up.sh --ray` starts, for ray.init(address=...). RAY_ADDRESS
# itself is not exported: it would make every ray.init() fail while no head is running.
export VLJEPA_RAY_ADDRESS="${VLJEPA_RAY_ADDRESS:-127.0.0.1:$VLJEPA_RAY_PORT}"
# Ray 2.60 token authentication, set explicitly so that `ray start --head` and its clients agree:
# left unset, a client that finds ~/.ray/auth_token (written by any earlier local ray.init())
# turns token auth on while the head does not, and every connection is refused.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export VLJEPA_WORK_POOL="${VLJEPA_WORK_POOL:-local-pool}"
export VLJEPA_WORKER_NAME="${VLJEPA_WORKER_NAME:-vljepa-local-worker}"
# Seconds up.sh waits for a service to answer its health check, and down.sh for one to exit.
export VLJEPA_START_TIMEOUT="${VLJEPA_START_TIMEOUT:-120}"
export VLJEPA_STOP_TIMEOUT="${VLJEPA_STOP_TIMEOUT:-15}"

# Prefect: server database ($PREFECT_HOME/prefect.db) and CLI profiles live in the state dir.
export PREFECT_HOME="${PREFECT_HOME:-$VLJEPA_STATE_DIR/prefect}"
export PREFECT_SERVER_API_HOST="${PREFECT_SERVER_API_HOST:-127.0.0.1}"
export PREFECT_SERVER_API_PORT="${PREFECT_SERVER_API_PORT:-$VLJEPA_PREFECT_PORT}"
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:$VLJEPA_PREFECT_PORT/api}"
export PREFECT_UI_URL="${PREFECT_UI_URL:-http://127.0.0.1:$VLJEPA_PREFECT_PORT}"
# Without network the server's telemetry only produces errors.
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
# The worker polls for scheduled runs every 10 s by default; 2 s makes local runs start promptly.
export PREFECT_WORKER_QUERY_SECONDS="${PREFECT_WORKER_QUERY_SECONDS:-2}"

# MLflow: clients log to the tracking server; its job runner (GenAI scoring, seven Huey
# consumer processes, ~1.4 GB) is not used by this pipeline, so it is off unless asked for.
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-http://127.0.0.1:$VLJEPA_MLFLOW_PORT}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"

# The one-node Slurm cluster of infra/slurm-up.sh (munged, MariaDB + slurmdbd, slurmctld,
# slurmd): its ports, and SLURM_CONF for sbatch/sacct/scontrol (and so submitit) once it has
# been set up here. A SLURM_CONF already set (a real cluster's) is kept.
export VLJEPA_SLURMCTLD_PORT="${VLJEPA_SLURMCTLD_PORT:-6817}"
export VLJEPA_SLURMD_PORT="${VLJEPA_SLURMD_PORT:-6818}"
export VLJEPA_SLURMDBD_PORT="${VLJEPA_SLURMDBD_PORT:-6819}"
export VLJEPA_MARIADB_PORT="${VLJEPA_MARIADB_PORT:-6820}"
if [[ -z ${SLURM_CONF:-} && -f $VLJEPA_STATE_DIR/slurm/etc/slurm.conf ]]; then
  export SLURM_CONF="$VLJEPA_STATE_DIR/slurm/etc/slurm.conf"
fi

# Clients (httpx, requests, urllib) must reach 127.0.0.1 directly even where a proxy is set.
case ",${NO_PROXY:-}," in
  *,127.0.0.1,*) ;;
  *) export NO_PROXY="${NO_PROXY:+$NO_PROXY,}127.0.0.1,localhost" ;;
esac
case ",${no_proxy:-}," in
  *,127.0.0.1,*) ;;
  *) export no_proxy="${no_proxy:+$no_proxy,}127.0.0.1,localhost" ;;
esac

# ---------------------------------------------------------------------------------------
# Process bookkeeping. Each service runs as the leader of its own session and process group
# (setsid); its PID file holds "PID STARTTIME PORT", STARTTIME being field 22 of
# /proc/PID/stat, so a PID reused by an unrelated process is never taken for ours. Members
# are found by session rather than process group because Ray puts each worker in a group of
# its own (in the head's session). Linux does not reuse a PID while a session of that
# number exists, so processes in the session of our recorded PID are ours even after the
# leader has exited.

_vljepa_pidfile() { printf '%s/run/%s.pid' "$VLJEPA_STATE_DIR" "$1"; }
_vljepa_logfile() { printf '%s/logs/%s.log' "$VLJEPA_STATE_DIR" "$1"; }

# _vljepa_proc PID: set _VLJEPA_STATE, _VLJEPA_PGRP, _VLJEPA_START; fail if no such process.
_vljepa_proc() {
  local line
  local -a fields
  { IFS= read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  read -r -a fields <<<"${line##*) }"  # fields from 3 on: the command name may hold spaces
  _VLJEPA_STATE=${fields[0]} _VLJEPA_PGRP=${fields[2]} _VLJEPA_START=${fields[19]}
}

# _vljepa_session_members SID: print the PIDs of the live (non-zombie) processes in the session.
_vljepa_session_members() {
  local stat line pid
  local -a fields
  for stat in /proc/[0-9]*/stat; do
    { IFS= read -r line <"$stat"; } 2>/dev/null || continue
    read -r -a fields <<<"${line##*) }"
    [[ ${fields[3]} == "$1" && ${fields[0]} != Z ]] || continue
    pid=${stat#/proc/}
    echo "${pid%/stat}"
  done
}

# _vljepa_read_pidfile NAME: set _VLJEPA_PID, _VLJEPA_PID_START, _VLJEPA_PID_PORT.
_vljepa_read_pidfile() {
  local file
  file=$(_vljepa_pidfile "$1")
  _VLJEPA_PID='' _VLJEPA_PID_START='' _VLJEPA_PID_PORT=''
  [[ -f $file ]] || return 1
  read -r _VLJEPA_PID _VLJEPA_PID_START _VLJEPA_PID_PORT <"$file" || true
  [[ $_VLJEPA_PID =~ ^[0-9]+$ ]]
}

# _vljepa_service_state NAME: print
#   none      no PID file
#   running   the recorded leader is alive
#   orphaned  the leader has exited but processes of its session remain
#   stale     a PID file, but nothing of ours alive (or the PID now belongs to another process)
_vljepa_service_state() {
  if [[ ! -f $(_vljepa_pidfile "$1") ]]; then echo none; return; fi
  if ! _vljepa_read_pidfile "$1"; then echo stale; return; fi
  if _vljepa_proc "$_VLJEPA_PID"; then
    if [[ $_VLJEPA_START != "$_VLJEPA_PID_START" ]]; then echo stale; return; fi
    if [[ $_VLJEPA_STATE != Z ]]; then echo running; return; fi
  fi
  if [[ -n $(_vljepa_session_members "$_VLJEPA_PID") ]]; then echo orphaned; else echo stale; fi
}

# _vljepa_stop NAME...: stop the named services: SIGINT to each one's process group (what
# Ctrl-C would send), then SIGKILL to every process left in its session after
# VLJEPA_STOP_TIMEOUT seconds; remove their PID files. Prints one line per service stopped
# and nothing for services that were not running.
_vljepa_stop() {
  local name state
  local -a names=() sids=()
  for name in "$@"; do
    state=$(_vljepa_service_state "$name")
    case $state in
      running | orphaned)
        _vljepa_read_pidfile "$name"
        # up.sh un-ignored SIGINT with env --default-signal=INT. Prefect, uvicorn, MLflow and
        # `ray start --block` all shut down cleanly on it (ray did not on SIGTERM).
        kill -s INT -- "-$_VLJEPA_PID" 2>/dev/null || true
        names+=("$name")
        sids+=("$_VLJEPA_PID")
        ;;
      stale) rm -f -- "$(_vljepa_pidfile "$name")" ;;
    esac
  done
  ((${#names[@]})) || return 0

  local deadline=$((SECONDS + VLJEPA_STOP_TIMEOUT)) killed=0 i left
  local -a members
  while :; do
    left=0
    for i in "${!names[@]}"; do
      [[ -n $(_vljepa_session_members "${sids[i]}") ]] && left=1
    done
    ((left)) || break
    if ((SECONDS >= deadline)); then
      ((killed)) && break
      for i in "${!names[@]}"; do
        mapfile -t members < <(_vljepa_session_members "${sids[i]}")
        ((${#members[@]})) || continue
        echo "${names[i]}: still running after ${VLJEPA_STOP_TIMEOUT}s, sending SIGKILL"
        kill -s KILL -- "${members[@]}" 2>/dev/null || true
      done
      killed=1
      deadline=$((SECONDS + 5))
    fi
    sleep 0.2
  done

  local status=0
  for i in "${!names[@]}"; do
    if [[ -n $(_vljepa_session_members "${sids[i]}") ]]; then
      echo "${names[i]}: could not stop session ${sids[i]}" >&2
      status=1
    else
      rm -f -- "$(_vljepa_pidfile "${names[i]}")"
      echo "${names[i]}: stopped (pid ${sids[i]})"
    fi
  done
  return "$status"
}

# _vljepa_port_open PORT: succeed if something accepts connections on 127.0.0.1:PORT.
_vljepa_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# _vljepa_http_ok URL: succeed if URL answers 200 (no proxy; 3 s timeout).
_vljepa_http_ok() {
  "$VLJEPA_VENV/bin/python" -c '
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    sys.exit(0 if opener.open(sys.argv[1], timeout=3).status == 200 else 1)
except Exception:
    sys.exit(1)
' "$1"
}

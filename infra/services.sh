# Service start-up helpers shared by infra/up.sh and infra/slurm-up.sh (sourced after
# infra/env.sh; the caller defines die() and holds the state dir's lock on fd 9).

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
      echo "${0##*/}: $name exited during start-up; last lines of $log:" >&2
      tail -n 40 -- "$log" >&2 || true
      echo "${0##*/}: services already started are left running; stop them with infra/down.sh" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "${0##*/}: $name not ready after ${VLJEPA_START_TIMEOUT}s; last lines of $log:" >&2
      tail -n 40 -- "$log" >&2 || true
      echo "${0##*/}: it is left running for inspection; stop everything with infra/down.sh" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "$name: ready ($((SECONDS - t0))s)"
}

#!/usr/bin/env bash
# Stop the one-node Slurm cluster of infra/slurm-up.sh, by PID (see infra/down.sh): slurmd and
# slurmctld first (running jobs are killed), then slurmdbd, MariaDB (shut down cleanly by
# mariadb-admin: it ignores SIGINT) and munged. Config, state and the job records stay in
# $VLJEPA_STATE_DIR/slurm for the next infra/slurm-up.sh. Silent, exit 0, when nothing runs.
set -euo pipefail
exec bash "$(dirname -- "${BASH_SOURCE[0]}")/down.sh" slurmd slurmctld slurmdbd mariadb munged

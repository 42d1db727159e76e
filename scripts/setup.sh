#!/usr/bin/env bash
# Set up dartool on a fresh Debian machine and run the main job on the built-in data.
#   bash scripts/setup.sh            # install + run the demo
#   bash scripts/setup.sh --no-demo  # install only
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${DARTOOL_FMNIST:-}" ]; then
  echo "== installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  $PY -m venv .venv || { $SUDO apt-get install -y -qq python3-venv >/dev/null && $PY -m venv .venv; }
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: the CPU build on this disk; an unpinned torch would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
echo "== dartool installed: $(dartool --help >/dev/null && echo ok)"
if [ "${1:-}" != "--no-demo" ]; then
  if [ -f runs/demo/report/report.html ]; then
    echo "== the demo already ran: runs/demo/report/report.html (to redo it: dartool demo --overwrite)"
  else
    echo "== main job: dartool demo (train a small residual + DAR pair on Fashion-MNIST, probe, report; ~3-5 min)"
    dartool demo --out runs/demo --overwrite
  fi
fi

#!/usr/bin/env bash
# Run the test suite (sets up .venv first if needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dartool ] || bash scripts/setup.sh --no-demo
. .venv/bin/activate
python -m pytest "$@"

#!/usr/bin/env bash
# Run a command from this checkout on an offline machine whose python3 already has CUDA torch, with the wheels
# of tools/offline_kit.py: installs them beside (not into) that python, checks that every package the project
# needs is there and agrees, then runs the command with src/ first on the path.
#   usage: bash tools/offline_run.sh KIT_DIR COMMAND [ARGS...]
# The nox sessions cannot run there (they install from an index); these are the commands they run.
set -euo pipefail
kit=${1:?usage: bash tools/offline_run.sh KIT_DIR COMMAND [ARGS...]}
shift
site=${QWEN_DOCS_OFFLINE_SITE:-/tmp/qwen-docs-site}
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$kit"/*.whl
export QWEN_DOCS_OFFLINE_KIT="$(cd "$kit" && pwd)"
export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$site/bin:$PATH"
python3 tools/offline_kit.py check
exec "$@"

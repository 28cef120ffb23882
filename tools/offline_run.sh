#!/usr/bin/env bash
# Run a command from this checkout on an offline machine whose python3 already has CUDA torch, with the wheels
# of tools/offline_kit.py: installs them beside (not into) that python, checks that every package the project
# needs is there and agrees, then runs the command with src/ first on the path.
#   usage: bash tools/offline_run.sh KIT_DIR COMMAND [ARGS...]
# The nox sessions cannot run there (they install from an index); these are the commands they run.
# The install folder ($QWEN_DOCS_OFFLINE_SITE, default /tmp/qwen-docs-site) is emptied first, so no package of an
# earlier kit stays; a non-empty folder this script did not make is refused, never emptied.
set -euo pipefail
kit=${1:?usage: bash tools/offline_run.sh KIT_DIR COMMAND [ARGS...]}
shift
shopt -s nullglob
wheels=("$kit"/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
  echo "offline_run.sh: no wheels in $kit: pass the folder offline_kit.py build --out wrote (see its usage)" >&2
  exit 2
fi
site=${QWEN_DOCS_OFFLINE_SITE:-/tmp/qwen-docs-site}
if [ -n "$(ls -A "$site" 2>/dev/null)" ] && [ ! -e "$site/.qwen-docs-offline-site" ]; then
  echo "offline_run.sh: $site was not made by this script: remove it, or set QWEN_DOCS_OFFLINE_SITE to a new folder" >&2
  exit 2
fi
rm -rf "$site"
mkdir -p "$site"
touch "$site/.qwen-docs-offline-site"
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}"
export QWEN_DOCS_OFFLINE_KIT="$(cd "$kit" && pwd)"
export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$site/bin:$PATH"
python3 tools/offline_kit.py check
exec "$@"

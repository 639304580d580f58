#!/usr/bin/env bash
# A Python venv holding the pinned PyTorch 2.x (scripts/torch2-requirements.txt),
# made once per machine and reused while the pin is unchanged; pip keeps the
# downloaded wheels in its cache. Prints the LibTorch directory to put on
# CMAKE_PREFIX_PATH, or with --python the venv's interpreter.
#   scripts/torch2-venv.sh [--python] [VENV_DIR]     (default: ~/.cache/mtl/venv-<pinned torch>)
set -euo pipefail
print=libtorch
if [ "${1:-}" = "--python" ]; then
  print=python
  shift
fi
here=$(cd "$(dirname "$0")" && pwd)
requirements="$here/torch2-requirements.txt"
pin=$(grep -E '^torch==' "$requirements")
venv=${1:-$HOME/.cache/mtl/venv-${pin/==/-}}

if ! "$venv/bin/python" -c "import torch" > /dev/null 2>&1 || ! "$venv/bin/pip" freeze 2> /dev/null | grep -qxF "$pin"; then
  if ! python3 -m venv "$venv" > /dev/null 2>&1; then
    echo "python3 -m venv failed; installing Debian's python3-venv" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --requirement "$requirements" >&2
fi
if [ "$print" = python ]; then
  echo "$venv/bin/python"
else
  "$venv/bin/python" -c "import os, torch; print(os.path.dirname(torch.__file__))" 2> /dev/null
fi

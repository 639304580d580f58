#!/usr/bin/env bash
# A Python venv holding the pinned PyTorch 2.x (scripts/torch2-requirements.txt,
# through scripts/pinned-venv.sh). Prints the LibTorch directory to put on
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
python=$("$here/pinned-venv.sh" "$requirements" "${1:-$HOME/.cache/mtl/venv-${pin/==/-}}")
if [ "$print" = python ]; then
  echo "$python"
else
  "$python" -c "import os, torch; print(os.path.dirname(torch.__file__))" 2> /dev/null
fi

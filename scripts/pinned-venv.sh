#!/usr/bin/env bash
# A Python venv holding a pinned requirements file, made once per machine and
# reused while the pins are unchanged (pip keeps the downloaded wheels in its
# cache). Prints the venv's interpreter.
#   scripts/pinned-venv.sh REQUIREMENTS [VENV_DIR]   (default: ~/.cache/mtl/venv-<file name>-<hash of its pins>)
set -euo pipefail
requirements=$1
pins=$(grep -vE '^[[:space:]]*(#|$)' "$requirements")
name=$(basename "$requirements" .txt)
venv=${2:-$HOME/.cache/mtl/venv-${name%-requirements}-$(printf '%s\n' "$pins" | sha1sum | cut -c1-10)}

# The venv records the pins it was made with; other pins, or none, make it again.
if ! [ -x "$venv/bin/python" ] || [ "$(cat "$venv/mtl-pins" 2> /dev/null)" != "$pins" ]; then
  if ! python3 -m venv "$venv" > /dev/null 2>&1; then
    echo "python3 -m venv failed; installing Debian's python3-venv" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --requirement "$requirements" >&2
  printf '%s\n' "$pins" > "$venv/mtl-pins"
fi
echo "$venv/bin/python"

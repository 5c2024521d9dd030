#!/usr/bin/env bash
# Runs tools/st-throughput.py (sentence-transformers on PyTorch, CPU) in a virtualenv of its
# own under `.cache/st-venv`, created on first use. Only for comparisons by hand: nothing in
# the build or the tests needs Python.
#
# Usage: tools/st-throughput.sh --model-dir DIR --words N --batch B [--n 256]
#
# The CPU-only torch wheel is tried first (much smaller); where that index cannot be reached,
# the regular wheel from PyPI is used (it pulls in CUDA libraries it never uses here).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ST_VENV:-$root/.cache/st-venv}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sentence_transformers, torch' 2>/dev/null; then
  echo "creating $venv (torch + sentence-transformers)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --timeout 20 \
      --index-url https://download.pytorch.org/whl/cpu torch >&2; then
    echo "CPU-only torch index unreachable; installing torch from PyPI" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check torch >&2
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check sentence-transformers >&2
fi

exec "$venv/bin/python" "$root/tools/st-throughput.py" "$@"

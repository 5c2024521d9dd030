#!/usr/bin/env bash
# Runs tools/st-throughput.py (sentence-transformers on PyTorch, CPU) in a virtualenv of its
# own under `.cache/st-venv`, created on first use. Only for comparisons by hand: nothing in
# the build or the tests needs Python.
#
# Usage: tools/st-throughput.sh --model-dir DIR --words N --batch B [--n 256]
#
# The virtualenv comes from tools/st-venv.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tools/st-venv.sh
. "$root/tools/st-venv.sh"

exec "$venv/bin/python" "$root/tools/st-throughput.py" "$@"

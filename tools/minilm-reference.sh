#!/usr/bin/env bash
# Regenerates tests/data/minilm-reference.json (and its provenance file beside it): the real
# all-MiniLM-L6-v2 run through sentence-transformers on PyTorch (CPU), an implementation
# independent of this workspace's code, on the texts listed in tools/minilm-reference.py.
# The tests compare this workspace's embeddings and token counts with it.
#
# Usage: tools/minilm-reference.sh [MODEL_DIR] [OUT]
#   MODEL_DIR  the checkpoint (default `.cache/all-MiniLM-L6-v2`, from tools/fetch-minilm.sh);
#              read from the local directory only, nothing is downloaded
#   OUT        default tests/data/minilm-reference.json
#
# The virtualenv (torch + sentence-transformers, `.cache/st-venv`) comes from tools/st-venv.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="${1:-$root/.cache/all-MiniLM-L6-v2}"
out="${2:-$root/tests/data/minilm-reference.json}"

if [ ! -f "$model/model.safetensors" ]; then
  echo "no checkpoint in $model: run tools/fetch-minilm.sh first" >&2
  exit 1
fi
# shellcheck source=tools/st-venv.sh
. "$root/tools/st-venv.sh"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$venv/bin/python" "$root/tools/minilm-reference.py" --model-dir "$model" --out "$out"

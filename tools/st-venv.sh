# Sourced by the tools that run sentence-transformers or ONNX Runtime: makes sure the
# virtualenv `$venv` (default `.cache/st-venv`, or $ST_VENV) holds torch, sentence-transformers,
# onnx and onnxruntime (the CPU build), creating it on first use and adding onnx/onnxruntime
# to one made before they were part of it. Expects `$root` (the workspace root) to be set.
#
# The CPU-only torch wheel is tried first (much smaller); where that index cannot be reached,
# the regular wheel from PyPI is used (it pulls in CUDA libraries it never uses here).
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
# tools/ort-throughput.py: exports the model with torch.onnx and runs it on ONNX Runtime.
if ! "$venv/bin/python" -c 'import onnx, onnxruntime' 2>/dev/null; then
  echo "adding onnx + onnxruntime to $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check onnx onnxruntime >&2
fi

# Sourced by the tools that run sentence-transformers: makes sure the virtualenv `$venv`
# (default `.cache/st-venv`, or $ST_VENV) holds torch and sentence-transformers, creating it
# on first use. Expects `$root` (the workspace root) to be set.
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

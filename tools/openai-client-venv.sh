#!/usr/bin/env bash
# Makes sure a virtualenv holds the official OpenAI Python client and prometheus_client (from
# the package registry), creating it on first use, and prints its interpreter. Used by the
# model-server client test (crates/model-server/tests/python_client.rs), which runs
# crates/model-server/tests/python/openai_client.py against a server on 127.0.0.1.
#
# Usage: tools/openai-client-venv.sh            # prints e.g. .cache/openai-client-venv/bin/python
# The virtualenv is $OPENAI_CLIENT_VENV, default `.cache/openai-client-venv` at the workspace root.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OPENAI_CLIENT_VENV:-$root/.cache/openai-client-venv}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai, prometheus_client' 2>/dev/null; then
  echo "creating $venv (openai + prometheus_client)" >&2
  if ! command -v python3 >/dev/null; then
    echo "python3 is not installed: install it (e.g. apt-get install python3 python3-venv)" >&2
    exit 2
  fi
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2; then
    echo "python3 cannot create a virtualenv: install the venv module (e.g. apt-get install python3-venv)" >&2
    exit 2
  fi
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --timeout 60 \
      'openai>=1.40,<3' 'prometheus_client>=0.20' >&2; then
    echo "pip could not install openai and prometheus_client from the package registry into $venv" >&2
    exit 3
  fi
fi
echo "$venv/bin/python"

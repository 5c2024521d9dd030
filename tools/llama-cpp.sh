#!/usr/bin/env bash
# Builds llama.cpp's command-line tools (llama-completion, llama-bench, llama-simple) from the source
# distribution of `llama-cpp-python` on PyPI, which vendors llama.cpp, into `.cache/llama.cpp`
# (or $LLAMA_CPP_DIR). Only package registries are needed: cmake and ninja come from PyPI too.
# Prints the directory holding the binaries. Reruns reuse the build.
#
#   tools/llama-cpp.sh            # build (once; ~10 min on 2 cores) and print the bin dir
#   LLAMA_CPP_PYTHON=0.3.16 tools/llama-cpp.sh   # a chosen llama-cpp-python version
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${LLAMA_CPP_DIR:-$root/.cache/llama.cpp}"
bin="$dir/build/bin"
if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-simple" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
venv="$dir/venv"
if [ ! -x "$venv/bin/cmake" ]; then
  echo "creating $venv (cmake, ninja)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check cmake ninja >&2
fi
src="$dir/src"
if [ ! -f "$src/CMakeLists.txt" ]; then
  # The sdist's URL from PyPI's JSON API (pip download would try to build its metadata).
  version="${LLAMA_CPP_PYTHON:-}"
  url="$(python3 - "$version" <<'PY'
import json, sys, urllib.parse, urllib.request
v = sys.argv[1]
api = f"https://pypi.org/pypi/llama-cpp-python/{v}/json" if v else "https://pypi.org/pypi/llama-cpp-python/json"
info = json.load(urllib.request.urlopen(api, timeout=60))
url = next(u["url"] for u in info["urls"] if u["packagetype"] == "sdist")
print(urllib.parse.urljoin(api, url))  # mirrors answer with relative URLs
PY
)"
  echo "downloading $url" >&2
  rm -rf "$dir/sdist" && mkdir -p "$dir/sdist"
  curl -fsSL --retry 3 -o "$dir/sdist/$(basename "$url")" "$url"
  tarball="$(ls "$dir"/sdist/llama_cpp_python-*.tar.gz | head -1)"
  rm -rf "$dir/unpacked" && mkdir -p "$dir/unpacked"
  tar -xzf "$tarball" -C "$dir/unpacked"
  rm -rf "$src"
  mv "$dir"/unpacked/*/vendor/llama.cpp "$src"
  echo "llama.cpp from $(basename "$tarball")" > "$dir/VERSION"
fi
echo "building llama.cpp in $dir/build" >&2
PATH="$venv/bin:$PATH" cmake -S "$src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
PATH="$venv/bin:$PATH" cmake --build "$dir/build" -j "$(nproc)" \
  --target llama-completion llama-bench llama-simple >&2
echo "$bin"

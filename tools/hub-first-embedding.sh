#!/usr/bin/env bash
# Time to the first embedding of all-MiniLM-L6-v2 from an empty Hugging Face cache, through the
# fixture hub (crates/fixture-hub: the Hub's URL paths, Range, ETag, LFS files behind a CDN
# redirect) serving the real checkpoint on 127.0.0.1, next to the same command on a local copy;
# then the same again offline (HF_HUB_OFFLINE=1) and online with everything cached. Prints one
# line per run: seconds and bytes of files the hub sent.
#
# Usage: tools/hub-first-embedding.sh [RUNS]   (release builds; needs tools/fetch-minilm.sh first)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-3}"
minilm="${MINILM_DIR:-$root/.cache/all-MiniLM-L6-v2}"
[ -f "$minilm/model.safetensors" ] || { echo "no MiniLM in $minilm: run tools/fetch-minilm.sh" >&2; exit 1; }
cargo build --quiet --release -p candle-pool -p fixture-hub
bin="$root/target/release"
key=sentence-transformers/all-MiniLM-L6-v2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One hub per run, so that each run's bytes are its own: prints "seconds bytes".
measure() {
  local cache="$1"; shift
  mkfifo "$work/stdin"
  "$bin/fixture-hub" "$key=$minilm" < "$work/stdin" > "$work/url" 2> "$work/hub.log" &
  local hub=$!
  exec 3> "$work/stdin"
  while [ ! -s "$work/url" ]; do sleep 0.05; done
  local start end
  start=$(date +%s.%N)
  env HF_ENDPOINT="$(cat "$work/url")" HF_HUB_CACHE="$cache" HF_TOKEN= "$@" \
    "$bin/candle-pool" embed --model "$key" "hello world" > "$work/out.json" 2> "$work/err.log" \
    || { cat "$work/err.log" >&2; exit 1; }
  end=$(date +%s.%N)
  exec 3>&-
  wait "$hub"
  rm -f "$work/stdin" "$work/url"
  local bytes
  bytes=$(sed -n 's/.*requests, \([0-9]*\) B of file bodies/\1/p' "$work/hub.log")
  echo "$(awk "BEGIN { print $end - $start }") $bytes"
}

printf '%-32s %10s %14s\n' run seconds "file bytes"
for i in $(seq "$runs"); do
  cache="$work/cache-$i"
  read -r s b < <(measure "$cache")
  printf '%-32s %10.2f %14s\n' "empty cache, from the hub" "$s" "$b"
  read -r s b < <(measure "$cache" HF_HUB_OFFLINE=1)
  printf '%-32s %10.2f %14s\n' "offline, from the cache" "$s" "$b"
  read -r s b < <(measure "$cache")
  printf '%-32s %10.2f %14s\n' "online, everything cached" "$s" "$b"
  start=$(date +%s.%N)
  "$bin/candle-pool" embed --model "$key" --weights "$minilm" "hello world" > /dev/null
  end=$(date +%s.%N)
  printf '%-32s %10.2f %14s\n' "local folder (--weights)" "$(awk "BEGIN { print $end - $start }")" -
done

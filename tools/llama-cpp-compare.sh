#!/usr/bin/env bash
# Full-size random Phi-4 Q4_K_M (9.05 GB, the registry's geometry) in this workspace and in
# llama.cpp, on the same file with the same thread count, one after the other: peak resident
# memory of each whole process (/usr/bin/time), prefill of 512 tokens and decode speed.
#
#   tools/llama-cpp-compare.sh            # writes the file into a temporary directory, deletes it after
#   PHI4_DIR=/big/disk tools/llama-cpp-compare.sh   # keeps the file there for reruns
#   THREADS=2 tools/llama-cpp-compare.sh
#
# Needs about 10 GB of free disk and 22 GB of RAM (llama.cpp with mmap and repack holds the
# file's pages and a repacked copy). llama.cpp is built once by tools/llama-cpp.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads="${THREADS:-$(nproc)}"
llama="$("$root/tools/llama-cpp.sh")"
keep="${PHI4_DIR:+1}"
dir="${PHI4_DIR:-$(mktemp -d)}"
mkdir -p "$dir"
cargo build --quiet --release -p model-measure --bin phi4-full --manifest-path "$root/Cargo.toml"
phi4="$root/target/release/phi4-full"
file="$dir/phi-4-Q4_K_M.gguf"
[ -f "$file" ] || "$phi4" write --dir "$dir"

peak() { # peak RSS in MB of the command after `--`, its stdout to $1
  local out="$1"; shift
  /usr/bin/time -f %M -o "$out.rss" "$@" > "$out" 2> "$out.err" || { cat "$out.err" >&2; return 1; }
  echo $(( $(tail -1 "$out.rss") / 1024 ))
}

echo "# this workspace (phi4-full direct: load, 512-token prefill, 16 greedy tokens, 4096-token F16 KV)"
ours_rss="$(peak "$dir/ours.txt" env RAYON_NUM_THREADS="$threads" CANDLE_NUM_THREADS="$threads" "$phi4" direct --dir "$dir" --prompt 512 --new 16 --context 4096)"
cat "$dir/ours.txt"
ours_line="$(grep '^direct: loaded' "$dir/ours.txt")"
ours_prefill="$(sed -E 's/.*prefill ([0-9]+) tokens ([0-9.]+) s.*/\1 \2/' <<<"$ours_line" | awk '{printf "%.2f", $1/$2}')"
ours_decode="$(sed -E 's/.*decode ([0-9.]+) tok\/s.*/\1/' <<<"$ours_line")"

bench() { # label, llama-bench flags: prefill of 512 tokens, then 16 tokens decoded after 512
  local label="$1" slug; shift
  slug="$(tr -c 'a-z0-9' '-' <<<"$label")"
  local rss rss2 pp tg
  rss="$(peak "$dir/llama-$slug-pp.json" "$llama/llama-bench" -m "$file" -t "$threads" -p 512 -n 0 -r 1 -o jsonl "$@")"
  rss2="$(peak "$dir/llama-$slug-tg.json" "$llama/llama-bench" -m "$file" -t "$threads" -p 0 -n 16 -d 512 -r 1 -o jsonl "$@")"
  pp="$(python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; print("%.2f" % r[0]["avg_ts"])' "$dir/llama-$slug-pp.json")"
  tg="$(python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; print("%.3f" % r[0]["avg_ts"])' "$dir/llama-$slug-tg.json")"
  echo "| llama.cpp $label | $(( rss > rss2 ? rss : rss2 )) | $pp | $tg |"
}

echo
echo "| run ($threads threads) | peak RSS MB | prefill 512 tok/s | decode tok/s after 512 |"
echo "|---|---:|---:|---:|"
echo "| this workspace (quant-kernels, F16 KV) | $ours_rss | $ours_prefill | $ours_decode |"
bench "default (mmap, repack)"
bench "--repack 0 (mmap)" --repack 0
bench "-lm none (no mmap, repack)" -lm none
echo
echo "llama.cpp: $(cat "$root/.cache/llama.cpp/VERSION" 2>/dev/null || echo "$llama"); decode: 16 tokens after 512 (llama-bench -p 0 -n 16 -d 512; ours after the 512-token prompt)"
[ -n "$keep" ] || rm -rf "$dir"

#!/usr/bin/env bash
# Full-size encoder families with random weights: this workspace's CPU kernels
# (`encoder-speed`) against the same model in PyTorch (tools/encoder-torch.py), f32, 2 threads,
# the same checkpoint and token ids, batch 1 and 32, each side run REPS times interleaved (the
# order alternates every repetition). Prints a markdown table of medians and checks that both
# sides' first embedding values agree (the same model ran). Not run in CI.
#
# Rows: JinaBERT texts of TOKENS tokens (default 128), CLIP texts of 77 tokens (its limit), CLIP
# images of 224² pixels, GTE-Qwen2 texts of 32 tokens. The checkpoints are written on first use
# under .cache/full/ (about 280 MB for JinaBERT, 600 MB for CLIP, 7 GB for GTE-Qwen2, which
# also needs about 13 GB of memory on the PyTorch side). PyTorch runs in the virtualenv from
# tools/st-venv.sh.
#
# Usage: tools/compare-encoders.sh [REPS] [TOKENS] [FAMILY...]
#   FAMILY  jina-bert, clip-text, clip-vision, gte-qwen2 (default: all four)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reps="${1:-3}"
tokens="${2:-128}"
families=("${@:3}")
[ ${#families[@]} -eq 0 ] && families=(jina-bert clip-text clip-vision gte-qwen2)
cd "$root"

cargo build --quiet --release -p model-measure --bin encoder-speed
rust="$root/target/release/encoder-speed"
# shellcheck source=tools/st-venv.sh
. "$root/tools/st-venv.sh"

runs="$(mktemp)"
trap 'rm -f "$runs"' EXIT
for family in "${families[@]}"; do
  case "$family" in
    jina-bert) dir="$root/.cache/full/jina" len="$tokens" ;;
    clip-text) dir="$root/.cache/full/clip" len=77 ;;
    clip-vision) dir="$root/.cache/full/clip" len=0 ;;
    gte-qwen2) dir="$root/.cache/full/gte-qwen2" len=32 ;;
    *) echo "unknown family $family (jina-bert, clip-text, clip-vision, gte-qwen2)" >&2; exit 2 ;;
  esac
  "$rust" --family "$family" --dir "$dir" --write --tokens 2 --batch 1 --n 1 >/dev/null
  for batch in 1 32; do
    n=$((batch == 1 ? 16 : 64))
    [ "$family" = gte-qwen2 ] && n=$((batch == 1 ? 8 : 32))
    args=(--family "$family" --dir "$dir" --tokens "$len" --batch "$batch" --n "$n")
    for ((r = 0; r < reps; r++)); do
      sides=(ours torch)
      ((r % 2)) && sides=(torch ours)
      for side in "${sides[@]}"; do
        case "$side" in
          ours) line="$("$rust" "${args[@]}")" ;;
          torch) line="$("$venv/bin/python" "$root/tools/encoder-torch.py" "${args[@]}")" ;;
        esac
        echo "$family $side $line" | tee -a "$runs" >&2
      done
    done
  done
done

python3 - "$runs" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    family, side, payload = line.split(" ", 2)
    r = json.loads(payload)
    rows.setdefault((family, r["batch"]), {}).setdefault(side, []).append(r)
print(f"| family | tokens or image × batch | this workspace rows/s | PyTorch rows/s | ratio | peak RSS MiB (ours / PyTorch) | same output |")
print("|---|---|---:|---:|---:|---|---|")
for (family, batch), sides in rows.items():
    ours, torch = sides["ours"], sides["torch"]
    a = statistics.median(r["rows_per_s"] for r in ours)
    b = statistics.median(r["rows_per_s"] for r in torch)
    same = all(abs(x - y) < 1e-3 * max(1.0, abs(y)) for x, y in zip(ours[0]["first"], torch[0]["first"]))
    rss = f'{max(r["peak_rss_mb"] for r in ours):.0f} / {max(r["peak_rss_mb"] for r in torch):.0f}'
    size = f'{ours[0]["tokens"]} tokens' if ours[0]["tokens"] else "224² image"
    print(f"| {family} | {size} × {batch} | {a:.2f} | {b:.2f} | {a / b:.2f}× | {rss} | {'yes' if same else 'NO'} |")
PY

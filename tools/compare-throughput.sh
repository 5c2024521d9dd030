#!/usr/bin/env bash
# Embedding throughput of this workspace (through the pool) against sentence-transformers on
# PyTorch and against ONNX Runtime, on the same machine, same texts, same batch sizes: four rows
# (15 and 165 tokens, batch 1 and 32), each side run REPS times, interleaved (the order rotates
# every repetition) so that load from other processes hits every side alike. Prints a markdown
# table of medians. Not run in CI.
#
# The ONNX Runtime side (tools/ort-throughput.py: fp32, all graph optimisations, 2 threads)
# exports the same local weights to `.cache/onnx/<model>.onnx` with torch.onnx on first use and
# checks its embeddings against sentence-transformers' before every run. Both Python sides run
# in the virtualenv from tools/st-venv.sh.
#
# Usage: [EMBED_THROUGHPUT=BIN] [BEFORE=BIN] tools/compare-throughput.sh [MODEL_DIR] [REPS]
#   EMBED_THROUGHPUT  an already built `embed_throughput` example to measure instead of
#                     building this checkout's
#   BEFORE            another build of the example (say, of an older commit): measured in the
#                     same interleaved run and shown as extra columns
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$root/.cache/all-MiniLM-L6-v2}"
reps="${2:-3}"
cd "$root"

if [ -z "${EMBED_THROUGHPUT:-}" ]; then
  cargo build --quiet --release -p model-measure --bin embed-throughput
fi
rust="${EMBED_THROUGHPUT:-$root/target/release/embed-throughput}"
# shellcheck source=tools/st-venv.sh
. "$root/tools/st-venv.sh"
"$root/tools/st-throughput.sh" --model-dir "$dir" --words 1 --batch 1 --n 1 >/dev/null 2>&1 # venv
# Exports the ONNX file where needed (and says why it cannot), outside the timed runs.
"$venv/bin/python" "$root/tools/ort-throughput.py" --model-dir "$dir" --words 1 --batch 1 --n 1 >/dev/null

sides=(candle torch ort)
[ -n "${BEFORE:-}" ] && sides+=(before)
runs="$(mktemp)"
trap 'rm -f "$runs"' EXIT
# 13 and 163 words: 15 and 165 tokens with [CLS] and [SEP].
for words in 13 163; do
  for batch in 1 32; do
    for ((r = 0; r < reps; r++)); do
      for ((s = 0; s < ${#sides[@]}; s++)); do
        side="${sides[(s + r) % ${#sides[@]}]}"
        args=(--model-dir "$dir" --words "$words" --batch "$batch" --n 256)
        case "$side" in
          candle) line="$("$rust" "${args[@]}")" ;;
          before) line="$("$BEFORE" "${args[@]}")" ;;
          torch) line="$("$root/tools/st-throughput.sh" "${args[@]}" 2>/dev/null)" ;;
          ort) line="$("$venv/bin/python" "$root/tools/ort-throughput.py" "${args[@]}" 2>/dev/null)" ;;
        esac
        echo "$side $line" | tee -a "$runs" >&2
      done
    done
  done
done

python3 - "$runs" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, js = line.split(" ", 1)
    d = json.loads(js)
    rows.setdefault((d["tokens"], d["batch"]), {}).setdefault(side, []).append(d)
before = any("before" in s for s in rows.values())
threads = sorted({d["ort_threads"] for s in rows.values() for d in s["ort"]})
ort = f"ONNX Runtime (fp32, all graph optimisations, {'/'.join(map(str, threads))} threads)"
head = "| texts | batch |"
if before:
    head += " before sent/s | before ratio | before peak RSS MiB |"
head += " candle (pool) sent/s | sentence-transformers sent/s | ratio | candle peak RSS MiB | PyTorch peak RSS MiB |"
head += f" {ort} sent/s | this workspace / ONNX Runtime | ONNX Runtime peak RSS MiB |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
for (tokens, batch), sides in sorted(rows.items()):
    med = lambda s, k: statistics.median(d[k] for d in sides[s])
    c, t, o = med("candle", "sentences_per_s"), med("torch", "sentences_per_s"), med("ort", "sentences_per_s")
    line = f"| {tokens} tokens | {batch} |"
    if before:
        b = med("before", "sentences_per_s")
        line += f" {b:.1f} | {b / t:.2f}× | {med('before', 'peak_rss_mb'):.0f} |"
    line += (f" {c:.1f} | {t:.1f} | {c / t:.2f}× | "
             f"{med('candle', 'peak_rss_mb'):.0f} | {med('torch', 'peak_rss_mb'):.0f} |"
             f" {o:.1f} | {c / o:.2f}× | {med('ort', 'peak_rss_mb'):.0f} |")
    print(line)
PY

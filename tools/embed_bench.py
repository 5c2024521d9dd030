"""What the Python sides of tools/compare-throughput.sh share (tools/st-throughput.py,
tools/ort-throughput.py): the benchmark texts, built exactly as the Rust side
(crates/model-measure/src/bin/embed-throughput.rs) builds them, the timed loop and the JSON
line each side prints."""

import argparse
import json
import resource
import time

# Same vocabulary and construction as crates/model-measure/src/bin/embed-throughput.rs.
VOCAB = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "river", "bank"]


def text(i: int, words: int) -> str:
    return " ".join(VOCAB[(i * 7 + j * 3 + (i // 10) * j) % len(VOCAB)] for j in range(words))


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every side takes: --model-dir, --words, --batch, --n."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--words", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--n", type=int, default=256)
    return p


def seconds_for(run, texts: list, batch: int) -> float:
    """Runs `run` over `texts`, `batch` at a time, after a warm-up of a few batches (as the
    Rust side does); the seconds the timed pass took."""
    for k in range(0, min(len(texts), 4 * batch), batch):
        run(texts[k : k + batch])
    started = time.perf_counter()
    for k in range(0, len(texts), batch):
        run(texts[k : k + batch])
    return time.perf_counter() - started


def report(texts: list, seconds: float, tokens: int, batch: int, **extra) -> None:
    """Prints {"sentences_per_s":…, "tokens":…, "batch":…, "peak_rss_mb":…, **extra}."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    line = {
        "sentences_per_s": round(len(texts) / seconds, 2),
        "tokens": tokens,
        "batch": batch,
        "peak_rss_mb": round(peak, 1),
    }
    print(json.dumps({**line, **extra}))

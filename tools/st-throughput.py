"""Embedding throughput of sentence-transformers (PyTorch, CPU) on the texts the Rust example
`embed_throughput` builds, for side-by-side comparisons. Run it through tools/st-throughput.sh,
which provides the virtualenv; tools/compare-throughput.sh runs both and tabulates.

Prints one JSON line: {"sentences_per_s":…, "tokens":…, "batch":…, "peak_rss_mb":…}, where
`tokens` counts one text's tokens (special tokens included) and `peak_rss_mb` is the process's
peak resident set (ru_maxrss, MiB).

The model is read from the local directory only; nothing is downloaded.
"""

import argparse
import json
import os
import resource
import time

# Same vocabulary and construction as crates/model-measure/src/bin/embed-throughput.rs.
VOCAB = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "river", "bank"]


def text(i: int, words: int) -> str:
    return " ".join(VOCAB[(i * 7 + j * 3 + (i // 10) * j) % len(VOCAB)] for j in range(words))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--words", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--n", type=int, default=256)
    args = p.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    texts = [text(i, args.words) for i in range(args.n)]
    model = SentenceTransformer(args.model_dir, device="cpu", local_files_only=True)
    tokens = len(model.tokenizer(texts[0])["input_ids"])

    def run(chunk):
        model.encode(
            chunk,
            batch_size=args.batch,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    with torch.inference_mode():
        # Warm-up, as the Rust side does: a few batches before the clock starts.
        for k in range(0, min(len(texts), 4 * args.batch), args.batch):
            run(texts[k : k + args.batch])
        started = time.perf_counter()
        for k in range(0, len(texts), args.batch):
            run(texts[k : k + args.batch])
        seconds = time.perf_counter() - started

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {
                "sentences_per_s": round(len(texts) / seconds, 2),
                "tokens": tokens,
                "batch": args.batch,
                "peak_rss_mb": round(peak, 1),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()

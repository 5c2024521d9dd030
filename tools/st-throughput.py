"""Embedding throughput of sentence-transformers (PyTorch, CPU) on the texts the Rust example
`embed_throughput` builds, for side-by-side comparisons. Run it through tools/st-throughput.sh,
which provides the virtualenv; tools/compare-throughput.sh runs both and tabulates.

Prints one JSON line: {"sentences_per_s":…, "tokens":…, "batch":…, "peak_rss_mb":…}, where
`tokens` counts one text's tokens (special tokens included) and `peak_rss_mb` is the process's
peak resident set (ru_maxrss, MiB).

The model is read from the local directory only; nothing is downloaded.
"""

import os

from embed_bench import parser, report, seconds_for, text


def main() -> None:
    p = parser(__doc__)
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
        seconds = seconds_for(run, texts, args.batch)
    report(texts, seconds, tokens, args.batch, torch_threads=torch.get_num_threads())

if __name__ == "__main__":
    main()

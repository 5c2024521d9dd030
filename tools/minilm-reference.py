"""Reference embeddings of the real all-MiniLM-L6-v2, computed by sentence-transformers on
PyTorch (CPU). Run it through tools/minilm-reference.sh, which provides the virtualenv.

Writes OUT (a JSON array, one entry per text) and OUT with `.json` replaced by
`.provenance.json` (the command, package versions, date and checkpoint hash). Each entry holds

- `text` and `kind` (what the text exercises),
- `n_tokens`: the tokenizer's count, special tokens included, after sentence-transformers'
  truncation at `max_seq_length` (256),
- `embedding`: the text encoded alone (one `encode` call per text),
- `embedding_batched`: the same text encoded with all the others in one `encode` call (so it
  shares a padded batch with texts of other lengths).

Embeddings are mean-pooled and L2-normalised, as the checkpoint's modules.json says. Both
files are written to a temporary name beside the target and renamed into place.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys

LONG = (
    "A memory-aware pool loads a model when a request needs it, keeps it resident while it is "
    "busy, and evicts the least recently used one when a larger model has to fit. "
) * 12

# (kind, text): short, ordinary sentences, long past 256 tokens (truncated), unicode,
# whitespace-heavy and mixed case / punctuation.
TEXTS = [
    ("short", "hello world"),
    ("sentence", "The quick brown fox jumps over the lazy dog."),
    ("sentence", "A memory-aware pool keeps models resident until they are idle."),
    ("sentence", "Rust makes systems programming safer."),
    ("long, truncated at 256 tokens", LONG.strip()),
    ("unicode: accents", "Café, naïve façade: the résumé of a Zürich señor in São Paulo."),
    ("unicode: CJK", "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다."),
    ("unicode: emoji", "Shipping it 🚀🦀 — works on my machine 👍🏽 ☕"),
    ("whitespace", "   leading spaces,\t\ttabs,\n\nblank lines   and  doubled   spaces   \n"),
    ("mixed case, digits, punctuation", "MiXeD CaSe: v0.11 costs $3.50 (50% off!) at https://example.com/a?b=c"),
    ("single word", "embeddings"),
]


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def floats(v) -> list:
    # float32 values, printed with the 9 significant digits that round-trip a float32.
    return [float(f"{float(x):.9g}") for x in v]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(args.model_dir, device="cpu", local_files_only=True)
    texts = [t for _, t in TEXTS]

    def encode(batch):
        return model.encode(
            batch,
            batch_size=len(batch),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    with torch.inference_mode():
        batched = encode(texts)
        single = [encode([t])[0] for t in texts]
    # What the network is fed: the tokenizer's ids after truncation at max_seq_length.
    n_tokens = [
        len(model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"])
        for t in texts
    ]

    entries = [
        {
            "kind": kind,
            "text": text,
            "n_tokens": n,
            "embedding": floats(s),
            "embedding_batched": floats(b),
        }
        for (kind, text), n, s, b in zip(TEXTS, n_tokens, single, batched)
    ]
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    data = "[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n]\n"
    provenance = {
        "generated_by": "tools/minilm-reference.sh (tools/minilm-reference.py)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_safetensors_sha256": sha256(os.path.join(args.model_dir, "model.safetensors")),
        "max_seq_length": model.max_seq_length,
        "device": "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "texts": len(entries),
        "data": os.path.basename(out),
        "data_sha256": hashlib.sha256(data.encode("utf-8")).hexdigest(),
    }
    base = out[: -len(".json")] if out.endswith(".json") else out
    write_atomically(out, data)
    write_atomically(base + ".provenance.json", json.dumps(provenance, indent=2) + "\n")
    for e in entries:
        print(f"{e['n_tokens']:>4} tokens  {e['kind']}", file=sys.stderr)
    print(f"wrote {out} ({len(entries)} texts) and {base}.provenance.json", file=sys.stderr)


if __name__ == "__main__":
    main()

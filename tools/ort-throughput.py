"""Embedding throughput of ONNX Runtime (CPU, fp32) on the texts the measurement program
`embed-throughput` builds, for side-by-side comparisons with this workspace and with
sentence-transformers (tools/st-throughput.py). tools/compare-throughput.sh runs all three and
tabulates; by hand, run it with the virtualenv from tools/st-venv.sh:

    .cache/st-venv/bin/python tools/ort-throughput.py --model-dir DIR --words N --batch B \
        [--n 256] [--threads 2]

The ONNX file is made here, from the same local weights: the Hugging Face `transformers`
BertModel is loaded from the model directory's safetensors and exported with torch.onnx (fp32,
opset 17, dynamic batch and sequence axes, inputs input_ids/attention_mask/token_type_ids,
output last_hidden_state) to `onnx/<name>.onnx` beside the model directory
(`.cache/onnx/all-MiniLM-L6-v2.onnx`), written to a temporary file and renamed; it is exported
again only when missing or older than model.safetensors. ONNX Runtime runs it on the
CPUExecutionProvider with every graph optimisation (ORT_ENABLE_ALL), `--threads` intra-op
threads and one inter-op thread.

Tokenisation (the model's tokenizer.json, the one sentence-transformers uses, through
`tokenizers`: padded to the longest text of the batch, truncated at sentence_bert_config.json's
max_seq_length) and the pooling of the sentence-transformers configuration (mean over the
attention mask, then L2 normalisation, in numpy) are inside the timed region, as they are for
the other sides.

Before timing, a few texts (of different lengths, in one padded batch, one of them past
max_seq_length) are embedded here and by sentence-transformers; a cosine below 0.9999 fails the
run. The export and sentence-transformers run in a child process, so torch never counts in this
process's peak resident set.

Prints one JSON line: {"sentences_per_s":…, "tokens":…, "batch":…, "peak_rss_mb":…}, where
`tokens` counts one text's tokens (special tokens included) and `peak_rss_mb` is the process's
peak resident set (ru_maxrss, MiB).

The model is read from the local directory only; nothing is downloaded.
"""

import concurrent.futures
import json
import multiprocessing
import os
import sys
import tempfile
import warnings
from pathlib import Path

from embed_bench import parser, report, seconds_for, text

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
MIN_COSINE = 0.9999


def fail(message: str) -> None:
    sys.exit(f"ort-throughput: {message}")


def sentence_transformers_layout(model_dir: Path) -> int:
    """Checks that the checkpoint is there and is Transformer → mean Pooling → Normalize (the
    pooling done here); returns its max_seq_length."""
    for name in ["model.safetensors", "config.json", "tokenizer.json", "sentence_bert_config.json"]:
        if not (model_dir / name).is_file():
            fail(f"no {model_dir / name}: run tools/fetch-minilm.sh first (or pass --model-dir)")
    modules = {m["type"].rsplit(".", 1)[-1]: m for m in json.loads((model_dir / "modules.json").read_text())}
    if set(modules) != {"Transformer", "Pooling", "Normalize"}:
        fail(f"{model_dir / 'modules.json'}: expected Transformer, Pooling, Normalize, got {sorted(modules)}")
    pooling = json.loads((model_dir / modules["Pooling"]["path"] / "config.json").read_text())
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        fail(f"{model_dir}: only mean pooling is implemented here, the model asks for {modes}")
    return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])


def onnx_file(model_dir: Path) -> Path:
    return model_dir.resolve().parent / "onnx" / f"{model_dir.resolve().name}.onnx"


def export(model_dir: Path, out: Path) -> None:
    """torch.onnx export of the transformers BertModel read from the local safetensors."""
    import onnx
    import torch
    from transformers import BertModel

    class LastHidden(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # Eager attention: the classic BERT graph, which ONNX Runtime's attention fusion recognises.
    bert = BertModel.from_pretrained(
        str(model_dir), local_files_only=True, attn_implementation="eager"
    ).float().eval()
    # Two texts of different lengths: the traced mask has padding in it.
    ids = torch.tensor([[101, 1996, 4248, 2829, 102], [101, 1996, 102, 0, 0]])
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # The tracer's warnings (a shape test in transformers' mask code that is constant for
        # these inputs, negative-index caveats of advanced indexing) do not apply: the check in
        # main() compares the result with sentence-transformers on padded and truncated batches.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LastHidden(bert),
                (ids, mask, types),
                tmp,
                dynamo=False,
                input_names=INPUTS,
                output_names=["last_hidden_state"],
                dynamic_axes={name: {0: "batch", 1: "sequence"} for name in INPUTS + ["last_hidden_state"]},
                opset_version=17,
                do_constant_folding=True,
            )
        onnx.checker.check_model(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def prepare(model_dir: str, out: str, texts: list) -> list:
    """In a child process: exports the ONNX file where needed, and returns sentence-transformers'
    embeddings of `texts` for the check."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model_dir, out = Path(model_dir), Path(out)
    weights = model_dir / "model.safetensors"
    if not out.is_file() or out.stat().st_mtime < weights.stat().st_mtime:
        print(f"ort-throughput: exporting {model_dir} to {out}", file=sys.stderr)
        export(model_dir, out)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return model.encode(
        texts,
        batch_size=len(texts),
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    ).tolist()


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = p.parse_args()

    model_dir = Path(args.model_dir)
    max_len = sentence_transformers_layout(model_dir)
    path = onnx_file(model_dir)
    texts = [text(i, args.words) for i in range(args.n)]
    check = [text(0, args.words), text(1, 5), "A man is eating food.", text(2, max_len + 40)]

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        reference = child.submit(prepare, str(model_dir), str(path), check).result()

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    pad = tokenizer.padding or {}
    tokenizer.enable_truncation(max_length=max_len)
    tokenizer.enable_padding(  # no length: the longest text of the batch
        pad_id=pad.get("pad_id", tokenizer.token_to_id("[PAD]")),
        pad_type_id=pad.get("pad_type_id", 0),
        pad_token=pad.get("pad_token", "[PAD]"),
    )
    tokens = len(tokenizer.encode(texts[0]).ids)

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(chunk):
        encodings = tokenizer.encode_batch(chunk)
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (hidden,) = session.run(None, feed)
        mask = feed["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    ours, theirs = run(check), np.array(reference, dtype=np.float32)
    cosines = (ours * theirs).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    if not (cosines >= MIN_COSINE).all():
        fail(
            f"{path} disagrees with sentence-transformers (cosines {np.round(cosines, 6).tolist()}, "
            f"need >= {MIN_COSINE}); delete it to export it again"
        )

    seconds = seconds_for(run, texts, args.batch)
    report(texts, seconds, tokens, args.batch, ort_threads=args.threads)

if __name__ == "__main__":
    main()

"""The PyTorch side of tools/compare-encoders.sh: one encoder family's forward pass on a local
checkpoint (full size, random weights), on the same token ids and in the same batches as the
Rust side (crates/model-measure/src/bin/encoder-speed.rs), f32 on 2 threads.

CLIP runs as transformers' CLIPModel (its towers and projections) built from the checkpoint's
config.json and safetensors; GTE-Qwen2 as transformers' Qwen2Model with every token seeing its
whole row (an all-zero additive 4-D mask, as GTE-Qwen2 is bidirectional) and the last token
pooled.

JinaBERT (jina-embeddings-v2) is not part of transformers: its Hub checkpoints run remote code,
which this project never executes. It is written out below as plain torch modules, the way
that code computes it (ALiBi through scaled_dot_product_attention's additive mask, GEGLU,
post-norm), reading the same safetensors.

Prints one JSON line: {"rows_per_s", "tokens", "batch", "peak_rss_mb", "first"}; "first" is
the first 8 values of row 0's mean-pooled embedding, which the comparison checks against the
Rust side's to show both ran the same model.
"""

import argparse
import json
import math
import os
import resource
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def row(r: int, tokens: int) -> list:
    """Row r of `tokens` ids, as encoder-speed builds it."""
    ids = [2] + [(r * 31 + p * 7) % 30000 + 5 for p in range(1, tokens - 1)] + [3]
    return ids[:tokens]


def image(r: int) -> torch.Tensor:
    """Image r (3×224×224), as encoder-speed builds it."""
    i = torch.arange(3 * 224 * 224, dtype=torch.int64)
    return (((r * 7 + i * 37) % 101).float() / 50.0 - 1.0).view(3, 224, 224)


def clip(directory: str, family: str):
    """transformers' CLIPModel on the checkpoint; a function from a batch to its features."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig.from_pretrained(directory)
    config._attn_implementation = "sdpa"
    model = CLIPModel(config).eval()
    missing, unexpected = model.load_state_dict(load_file(os.path.join(directory, "model.safetensors")), strict=False)
    assert not [k for k in missing if "position_ids" not in k], missing
    if family == "clip-text":
        # The end-of-text token is the row's last one: pooled by position, as the Rust side.
        def text(ids):
            hidden = model.text_model(input_ids=ids).last_hidden_state[:, -1]
            return model.text_projection(hidden)

        return text
    return lambda pixels: model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)


class JinaBert(torch.nn.Module):
    """JinaBERT's encoder and mean pooling, from a state dict (`bert.` prefix optional)."""

    def __init__(self, config: dict, weights: dict):
        super().__init__()
        self.w = {k.removeprefix("bert."): v.float() for k, v in weights.items()}
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.inter = config["intermediate_size"]
        self.eps = config["layer_norm_eps"]
        n = 2 ** math.ceil(math.log2(self.heads))
        slopes = [-1.0 / 2 ** (8 * k / n) for k in range(1, n + 1)]
        if n != self.heads:
            slopes = (slopes[1::2] + slopes[0::2])[: self.heads]
        self.slopes = torch.tensor(slopes).view(self.heads, 1, 1)

    def ln(self, x, name):
        w = self.w
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], self.eps)

    def lin(self, x, name, bias=True):
        return F.linear(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias") if bias else None)

    def forward(self, ids):
        w, (b, t) = self.w, ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][0]
        x = self.ln(x, "embeddings.LayerNorm")
        pos = torch.arange(t)
        alibi = self.slopes * (pos[None, :] - pos[:, None]).abs()  # [heads, t, t]
        d = x.shape[-1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            split = lambda y: y.view(b, t, self.heads, d).transpose(1, 2)
            q, k, v = (split(self.lin(x, f"{p}.attention.self.{m}")) for m in ("query", "key", "value"))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=alibi)
            ctx = ctx.transpose(1, 2).reshape(b, t, -1)
            x = self.ln(self.lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            up = self.lin(x, f"{p}.mlp.gated_layers", bias=False)
            h = F.gelu(up[..., : self.inter]) * up[..., self.inter :]
            x = self.ln(self.lin(h, f"{p}.mlp.wo") + x, f"{p}.mlp.layernorm")
        return x.mean(dim=1)


def gte_qwen2(directory: str):
    """transformers' Qwen2Model on the checkpoint, bidirectional; a function from ids to the
    final-normed hidden state of each row's last token."""
    import glob

    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config.from_pretrained(directory)
    config._attn_implementation = "sdpa"
    model = Qwen2Model(config).eval()
    weights = {}
    for shard in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
        weights.update({k.removeprefix("model."): v for k, v in load_file(shard).items() if k != "lm_head.weight"})
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    del weights
    for layer in model.layers:
        layer.self_attn.is_causal = False

    def forward(ids):
        b, t = ids.shape
        visible = torch.zeros(b, 1, t, t)
        return model(input_ids=ids, attention_mask=visible).last_hidden_state[:, -1]

    return forward


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=["jina-bert", "clip-text", "clip-vision", "gte-qwen2"], required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--n", type=int, default=16)
    a = p.parse_args()
    torch.set_num_threads(2)
    with open(os.path.join(a.dir, "config.json")) as f:
        config = json.load(f)
    if a.family == "jina-bert":
        model = JinaBert(config, load_file(os.path.join(a.dir, "model.safetensors"))).eval()
    elif a.family == "gte-qwen2":
        model = gte_qwen2(a.dir)
    else:
        model = clip(a.dir, a.family)
    if a.family == "clip-vision":
        batches = [torch.stack([image(r) for r in range(k, min(k + a.batch, a.n))]) for k in range(0, a.n, a.batch)]
        a.tokens = 0
    else:
        rows = [row(r, a.tokens) for r in range(a.n)]
        batches = [torch.tensor(rows[k : k + a.batch]) for k in range(0, a.n, a.batch)]
    with torch.inference_mode():
        first = model(batches[0])[0, :8].tolist()  # warm-up, as the Rust side
        started = time.perf_counter()
        for ids in batches:
            model(ids)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {
                "rows_per_s": round(a.n / seconds, 3),
                "tokens": a.tokens,
                "batch": a.batch,
                "peak_rss_mb": round(peak),
                "first": [round(v, 6) for v in first],
            }
        )
    )


if __name__ == "__main__":
    main()

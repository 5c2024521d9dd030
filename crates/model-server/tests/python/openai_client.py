"""The official OpenAI Python client against `candle-pool serve` (model-server).

Run by crates/model-server/tests/python_client.rs, which starts the server on 127.0.0.1 and
passes, in the environment:

  SERVER_URL       http://127.0.0.1:PORT
  SERVER_API_KEY   the key the server requires
  MINILM           the real all-MiniLM-L6-v2's key
  MINILM_REFERENCE tests/data/minilm-reference.json (sentence-transformers' embeddings)
  EMBEDDER, GENERATOR, PAINTER  the tiny fixtures' keys

Prints one line per check and `N passed, M failed`; exits 1 when anything failed.
"""

import base64
import json
import math
import os
import struct
import sys
import traceback
import urllib.request
import zlib

import openai
from prometheus_client.parser import text_string_to_metric_families

URL = os.environ["SERVER_URL"]
KEY = os.environ["SERVER_API_KEY"]
MINILM = os.environ["MINILM"]
EMBEDDER = os.environ["EMBEDDER"]
GENERATOR = os.environ["GENERATOR"]
PAINTER = os.environ["PAINTER"]
with open(os.environ["MINILM_REFERENCE"]) as f:
    REFERENCE = json.load(f)

client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=120)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def floats_of_base64(s):
    raw = base64.b64decode(s)
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


def png_size(data):
    """Decodes a PNG far enough to check it: signature, chunk CRCs, IHDR, and the IDAT stream
    inflating to exactly `height` filtered scanlines of `width` pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, "bad CRC in %r" % kind
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = ihdr[:4]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    pixels = zlib.decompress(idat)
    assert len(pixels) == height * (1 + width * channels * depth // 8), "scanlines do not match the size"
    return width, height


def test_models_list():
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {MINILM, EMBEDDER, GENERATOR, PAINTER}, models
    m = models[PAINTER]
    assert m.object == "model"
    extra = m.model_extra or {}
    assert extra["capability"] == "text_to_image", extra
    assert extra["estimate_bytes"] > 0, extra
    assert client.models.retrieve(GENERATOR).id == GENERATOR


def test_embeddings_float_match_the_reference():
    texts = [r["text"] for r in REFERENCE]
    out = client.embeddings.create(model=MINILM, input=texts, encoding_format="float")
    assert out.model == MINILM
    assert len(out.data) == len(texts)
    for d, r in zip(out.data, REFERENCE):
        c = cosine(d.embedding, r["embedding"])
        assert c >= 0.99999, (r["text"], c)
    assert out.usage.prompt_tokens == sum(r["n_tokens"] for r in REFERENCE), out.usage


def test_embeddings_base64_match_the_reference():
    for r in REFERENCE:
        out = client.embeddings.create(model=MINILM, input=r["text"], encoding_format="base64")
        v = floats_of_base64(out.data[0].embedding)
        c = cosine(v, r["embedding"])
        assert c >= 0.99999, (r["text"], c)
        assert out.usage.prompt_tokens == r["n_tokens"]
    # Without encoding_format the client asks for base64 itself and decodes it.
    out = client.embeddings.create(model=MINILM, input=REFERENCE[0]["text"])
    assert cosine(out.data[0].embedding, REFERENCE[0]["embedding"]) >= 0.99999


def test_chat_whole_and_streamed():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say something."},
    ]
    whole = client.chat.completions.create(
        model=GENERATOR, messages=messages, max_tokens=8, temperature=0, seed=7
    )
    choice = whole.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length"), choice
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    stream = client.chat.completions.create(
        model=GENERATOR,
        messages=messages,
        max_tokens=8,
        temperature=0,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == (choice.message.content or ""), (text, choice.message.content)
    assert finish == choice.finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_completions_whole_and_streamed():
    whole = client.completions.create(model=GENERATOR, prompt="Once upon", max_tokens=5, temperature=0)
    assert whole.object == "text_completion"
    assert whole.usage.completion_tokens <= 5
    pieces = client.completions.create(
        model=GENERATOR, prompt="Once upon", max_tokens=5, temperature=0, stream=True
    )
    text = "".join(c.choices[0].text for c in pieces if c.choices)
    assert text == whole.choices[0].text, (text, whole.choices[0].text)


def test_image_generation_is_a_png_of_the_size_asked():
    out = client.images.generate(
        model=PAINTER,
        prompt="a lighthouse",
        size="64x48",
        n=1,
        response_format="b64_json",
        extra_body={"steps": 1, "seed": 3},
    )
    png = base64.b64decode(out.data[0].b64_json)
    assert png_size(png) == (64, 48)


def expect(kind, call, status=None, param=None, code=None):
    try:
        call()
    except kind as e:
        if status is not None:
            assert e.status_code == status, e
        if param is not None:
            assert e.param == param, (e.param, e.body)
        if code is not None:
            assert e.code == code, (e.code, e.body)
        return e
    raise AssertionError("no %s" % kind.__name__)


def test_errors_are_the_clients_exception_classes():
    expect(
        openai.NotFoundError,
        lambda: client.embeddings.create(model="no/such-model", input="x"),
        status=404,
        param="model",
        code="model_not_found",
    )
    expect(
        openai.BadRequestError,
        lambda: client.chat.completions.create(
            model=GENERATOR, messages=[{"role": "user", "content": "x"}], temperature=5
        ),
        status=400,
        param="temperature",
    )
    expect(
        openai.BadRequestError,
        lambda: client.chat.completions.create(
            model=EMBEDDER, messages=[{"role": "user", "content": "x"}]
        ),
        param="model",
        code="wrong_capability",
    )
    expect(
        openai.BadRequestError,
        lambda: client.images.generate(model=PAINTER, prompt="x", size="60x60"),
        param="size",
    )
    wrong = openai.OpenAI(base_url=URL + "/v1", api_key="not-the-key", max_retries=0)
    expect(openai.AuthenticationError, lambda: wrong.models.list(), status=401, code="invalid_api_key")
    # A body over the limit is a 413 (the client's generic status error).
    e = expect(
        openai.APIStatusError,
        lambda: client.embeddings.create(model=EMBEDDER, input="word " * 300_000),
        status=413,
        code="request_too_large",
    )
    assert "limit" in e.message


def test_metrics_parse_with_prometheus_client():
    req = urllib.request.Request(URL + "/metrics", headers={"Authorization": "Bearer " + KEY})
    with urllib.request.urlopen(req) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in [
        ("model_pool_model_state", "gauge"),
        ("model_pool_model_reserved_bytes", "gauge"),
        ("model_pool_device_budget_bytes", "gauge"),
        ("model_pool_evictions", "counter"),
        ("model_pool_request_duration_seconds", "histogram"),
        ("model_pool_queue_wait_seconds", "histogram"),
        ("model_pool_time_to_first_token_seconds", "histogram"),
        ("model_pool_load_duration_seconds", "histogram"),
        ("model_pool_tokens_per_second", "histogram"),
    ]:
        assert name in families, (name, sorted(families))
        assert families[name].type == kind, (name, families[name].type)
    counts = [
        s
        for s in families["model_pool_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels.get("model") == MINILM and s.labels.get("status") == "200"
    ]
    assert counts and counts[0].value >= 2, counts
    loads = [s for s in families["model_pool_load_duration_seconds"].samples if s.name.endswith("_count")]
    assert sum(s.value for s in loads) >= 3, loads


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]

if __name__ == "__main__":
    passed = failed = 0
    for t in TESTS:
        try:
            t()
            passed += 1
            print("ok     " + t.__name__)
        except Exception:
            failed += 1
            print("FAILED " + t.__name__)
            traceback.print_exc()
    print("openai %s: %d passed, %d failed" % (openai.__version__, passed, failed))
    sys.exit(1 if failed else 0)

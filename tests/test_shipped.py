"""Shipped encoders: low-rank deltas over a backbone, checked files, cached builds, and the real default."""

import json
import logging

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dec2vec import Encoder, shipped
from dec2vec.cli import app
from dec2vec.encoder import preferred_dtype
from dec2vec.shipped import DEFAULT_MODEL, SHIPPED, ShippedEncoder, ShippedModelError
from dec2vec.training.recipes import Recipe, train
from dec2vec.training.trainer import StageConfig

TEXTS = ["a cat in the park", "the dog is at the river", "a bird"]


@pytest.fixture(scope="module")
def trained(make_tiny_checkpoint, tmp_path_factory):
    """A tiny llama after two LoRA stages (rank 4 + 4): its change is rank 8 per weight."""
    out = tmp_path_factory.mktemp("trained")
    pairs = out / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": t, "positive": t.upper()}) + "\n" for t in TEXTS * 6))
    stage = dict(objective="supervised", data=[str(pairs)], steps=6, batch_size=4, learning_rate=5e-3)
    stages = [StageConfig(name=f"s{i}", lora_rank=4, lora_alpha=8, bf16=False, **stage) for i in (1, 2)]
    recipe = Recipe(name="t", attention="bidirectional", pooling="mean", stages=stages)
    backbone = make_tiny_checkpoint("llama")
    return backbone, train(recipe, str(backbone), out / "run")


def test_low_rank_delta_recovers_two_lora_stages_exactly(trained):
    backbone, encoder = trained
    base = Encoder.load(backbone).model.state_dict()
    after = encoder.model.state_dict()
    delta = shipped.low_rank_delta(base, after, rank=8)
    assert {k.rsplit(".", 2)[0] for k in delta} >= {
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.down_proj",
    }
    model = Encoder.load(backbone).model
    shipped.apply_delta(model, delta)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, after[name], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="is not rank 4"):  # two rank-4 updates do not fit in rank 4
        shipped.low_rank_delta(base, after, rank=4)
    norm = next(k for k in base if k.endswith("norm.weight"))
    with pytest.raises(ValueError, match="not a matrix"):
        shipped.low_rank_delta(base, {**after, norm: after[norm] + 1}, rank=8)


def _release(trained, tmp_path, monkeypatch) -> ShippedEncoder:
    backbone, encoder = trained
    base = Encoder.load(backbone).model.state_dict()
    delta = {k: v.half() for k, v in shipped.low_rank_delta(base, encoder.model.state_dict(), 8).items()}
    card = {
        "name": "tiny-embed",
        "description": "a tiny test encoder",
        "backbone": {
            "name": str(backbone),
            "install": "-",
            "file": "model.safetensors",
            "sha256": shipped.sha256_file(backbone / "model.safetensors"),
        },
        "encoder": {"attention": "bidirectional", "pooling": "mean", "prompts": {"query": "Query: "}},
    }
    shipped.write_release(tmp_path / "tiny-embed", card, delta, 'name = "t"\n')
    entry = ShippedEncoder(
        "tiny-embed", tmp_path / "tiny-embed", json.loads((tmp_path / "tiny-embed/card.json").read_text())
    )
    monkeypatch.setitem(SHIPPED, "tiny-embed", entry)
    return entry


def test_a_shipped_name_loads_checked_merged_and_cached(trained, tmp_path, monkeypatch, caplog):
    _, encoder = trained
    entry = _release(trained, tmp_path, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="dec2vec.shipped"):
        loaded = Encoder.load("tiny-embed")
    assert "building shipped encoder tiny-embed" in caplog.text
    assert loaded.source == "tiny-embed" and loaded.config.prompts == {"query": "Query: "}
    assert loaded.config.attention == "bidirectional"
    np.testing.assert_allclose(loaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-3)  # float16 factors
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dec2vec.shipped"):
        again = Encoder.load("tiny-embed", dtype="bfloat16")  # cached: no second build
    assert "building" not in caplog.text and again.model.dtype == torch.bfloat16
    assert entry.cached_dir().is_relative_to(tmp_path / "dec2vec-home")


def test_a_tampered_delta_or_another_backbone_is_refused(trained, tmp_path, monkeypatch):
    entry = _release(trained, tmp_path, monkeypatch)
    delta = entry.directory / shipped.DELTA
    original = delta.read_bytes()
    delta.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ShippedModelError, match=r"delta\.safetensors: sha256 .* recorded in its card\.json"):
        Encoder.load("tiny-embed")
    delta.write_bytes(original)
    entry.card["backbone"]["sha256"] = "0" * 64
    with pytest.raises(ShippedModelError, match="is not the backbone tiny-embed was trained on"):
        Encoder.load("tiny-embed")
    assert not entry.cached_dir().exists()  # nothing half-built is left to load later


# ---- the real shipped default (SmolLM2 backbone from PyPI) ----------------------------------------------


@pytest.mark.slow
def test_every_shipped_encoder_reproduces_its_recorded_vectors_and_recipe(monkeypatch, tmp_path_factory):
    from dec2vec.training.recipes import load_recipe

    monkeypatch.setenv("DEC2VEC_HOME", str(tmp_path_factory.getbasetemp() / "shipped-home"))
    assert DEFAULT_MODEL in SHIPPED
    for name, entry in SHIPPED.items():
        recorded = entry.card["reference"]
        encoder = Encoder.load(name)
        vectors = encoder.encode(recorded["sentences"])
        np.testing.assert_allclose(vectors[:, :32], recorded["head"], atol=2e-3)
        np.testing.assert_allclose(vectors @ vectors.T, recorded["cosines"], atol=2e-3)
        # the card's recipe is the one the package ships, byte for byte
        builtin = shipped.SHIPPED_ROOT.parent / "recipes" / f"{entry.card['recipe']}.toml"
        assert (entry.directory / shipped.RECIPE).read_text() == builtin.read_text()
        assert load_recipe(entry.card["recipe"]).stages
        # still a generator on the same weights
        assert (
            "paris"
            in encoder.generate("What is the capital of France?", chat=True, max_new_tokens=12).lower()
        )


@pytest.mark.slow
def test_commands_default_to_the_shipped_encoder(monkeypatch, tmp_path_factory, tmp_path):
    monkeypatch.setenv("DEC2VEC_HOME", str(tmp_path_factory.getbasetemp() / "shipped-home"))
    runner = CliRunner()
    texts = tmp_path / "texts.txt"
    texts.write_text("A man is playing a guitar.\nSomeone is playing an instrument.\n")
    result = runner.invoke(app, ["embed", "-i", str(texts), "-o", str(tmp_path / "v.npy")])
    assert result.exit_code == 0, result.output
    vectors = np.load(tmp_path / "v.npy")
    dtype, _ = preferred_dtype()  # commands default to bfloat16 where the CPU has it
    assert f"dtype: {dtype}" in result.output
    expected = Encoder.load(DEFAULT_MODEL, dtype=dtype).encode(texts.read_text().splitlines())
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    result = runner.invoke(
        app, ["similarity", "A man is playing a guitar.", "Someone is playing an instrument."]
    )
    assert result.exit_code == 0 and float(result.stdout.strip()) == pytest.approx(
        float(vectors[0] @ vectors[1]), abs=1e-4
    )
    listing = runner.invoke(app, ["models"])
    assert f"{DEFAULT_MODEL} (default)" in listing.output and "smollm2-135m" in listing.output


@pytest.mark.slow
def test_the_served_default_embeds_and_answers_a_chat_request(monkeypatch, tmp_path_factory):
    from fastapi.testclient import TestClient

    from dec2vec.serving import create_app

    monkeypatch.setenv("DEC2VEC_HOME", str(tmp_path_factory.getbasetemp() / "shipped-home"))
    encoder = Encoder.load(DEFAULT_MODEL)
    with TestClient(create_app(encoder)) as client:
        texts = ["A man is playing a guitar.", "The stock market fell sharply on Monday."]
        response = client.post("/v1/embeddings", json={"input": texts, "model": "dec2vec"})
        assert response.status_code == 200, response.text
        served = np.array([row["embedding"] for row in response.json()["data"]])
        np.testing.assert_allclose(served, encoder.encode(texts), atol=1e-5)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        response = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 16})
        assert response.status_code == 200, response.text
        assert "paris" in response.json()["choices"][0]["message"]["content"].lower()

"""Saved encoders reload exactly in dec2vec and give the same vectors in sentence-transformers."""

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoConfig, AutoModel

from dec2vec import Encoder

TEXTS = ["what is the capital of France?", "a cat sleeps on the windowsill", "", "the quick brown fox"]
PROMPTS = {"query": "Query:\n", "document": ""}


@pytest.mark.parametrize(
    ("arch", "side", "attention", "pooling"),
    [
        ("llama", "right", "bidirectional", "mean"),
        ("qwen2", "left", "bidirectional", "last"),
        ("gemma3_text", "right", "causal", "weighted_mean"),
        ("mistral", "left", "bidirectional", "first"),
        ("phi3", "right", "bidirectional", "latent_attention"),
        ("gpt2", "left", "causal", "mean"),
    ],
)
def test_round_trip_dec2vec_and_sentence_transformers(
    arch, side, attention, pooling, make_tiny_checkpoint, tmp_path
):
    encoder = Encoder.load(
        make_tiny_checkpoint(arch, side), attention=attention, pooling=pooling, prompts=PROMPTS, max_length=64
    )
    expected_docs = encoder.encode_documents(TEXTS)
    expected_queries = encoder.encode_queries(TEXTS)
    encoder.save(tmp_path / "saved")

    reloaded = Encoder.load(tmp_path / "saved")
    assert reloaded.config == encoder.config
    # Saved tokenizers pad on the right; a model saved from left padding may differ by float rounding only.
    np.testing.assert_allclose(reloaded.encode_documents(TEXTS), expected_docs, atol=1e-6)
    np.testing.assert_allclose(reloaded.encode_queries(TEXTS), expected_queries, atol=1e-6)

    # The attention mode lives in config.json, so plain transformers loads it too.
    assert AutoConfig.from_pretrained(tmp_path / "saved").is_causal == (attention == "causal")

    # Latent-attention pooling is dec2vec's own sentence-transformers module: loading it runs dec2vec code.
    st = SentenceTransformer(
        str(tmp_path / "saved"), device="cpu", trust_remote_code=pooling == "latent_attention"
    )
    assert st.max_seq_length == 64
    assert "" in TEXTS  # an empty text is the zero vector in both
    got_docs = st.encode(TEXTS, normalize_embeddings=True)
    got_queries = st.encode(TEXTS, prompt_name="query", normalize_embeddings=True)
    np.testing.assert_allclose(got_docs, expected_docs, atol=2e-5)
    np.testing.assert_allclose(got_queries, expected_queries, atol=2e-5)


def test_bidirectional_saved_model_is_bidirectional_in_plain_transformers(make_tiny_checkpoint, tmp_path):
    Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional").save(tmp_path / "saved")
    model = AutoModel.from_pretrained(tmp_path / "saved").eval()
    a, b = torch.tensor([[1, 5, 6, 7]]), torch.tensor([[1, 5, 6, 8]])
    with torch.inference_mode():
        change = (
            model(input_ids=a).last_hidden_state[0, 0] - model(input_ids=b).last_hidden_state[0, 0]
        ).abs()
    assert change.max() > 1e-4


def test_saved_directory_contents(make_tiny_checkpoint, tmp_path):
    encoder = Encoder.load(make_tiny_checkpoint("llama"), pooling="last", prompts=PROMPTS)
    encoder.save(tmp_path / "saved")
    pooling = json.loads((tmp_path / "saved" / "1_Pooling" / "config.json").read_text())
    assert pooling == {"embedding_dimension": 32, "pooling_mode": "lasttoken", "include_prompt": False}
    st_config = json.loads((tmp_path / "saved" / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == PROMPTS
    assert json.loads((tmp_path / "saved" / "dec2vec_config.json").read_text())["pooling"] == "last"
    # generation still works on the reloaded weights (bidirectional flag never leaks into generate)
    assert isinstance(Encoder.load(tmp_path / "saved").generate("a cat", max_new_tokens=3), str)


def test_load_overrides_saved_config(make_tiny_checkpoint, tmp_path):
    Encoder.load(make_tiny_checkpoint("llama"), pooling="mean").save(tmp_path / "saved")
    assert Encoder.load(tmp_path / "saved", pooling="last").config.pooling == "last"
    # A fresh (untrained) latent-attention head can be put on a saved mean-pooling encoder.
    latent = Encoder.load(tmp_path / "saved", pooling="latent_attention")
    assert latent.encode(["a cat"]).shape == (1, 32)


def test_echo_encoder_reloads_in_dec2vec(make_tiny_checkpoint, tmp_path):
    encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="echo")
    encoder.save(tmp_path / "saved")
    assert not (tmp_path / "saved" / "modules.json").exists()
    np.testing.assert_array_equal(Encoder.load(tmp_path / "saved").encode(TEXTS), encoder.encode(TEXTS))

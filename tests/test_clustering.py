"""Clustering: k chosen by silhouette, labels written by the model or keywords, a map."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from intents import INTENTS
from sklearn.metrics import v_measure_score
from transformers import AutoModelForCausalLM

from dec2vec import Encoder
from dec2vec.clustering import cluster_texts, keywords, save_map, write_label
from dec2vec.models import load_model

TEXTS = [t for texts in INTENTS.values() for t in texts]
LABELS = [label for label, texts in INTENTS.items() for _ in texts]


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


def test_real_vectors_find_the_three_intents_and_name_them_by_keywords(minilm, tmp_path):
    result = cluster_texts(minilm, TEXTS)  # minilm cannot generate: keywords
    assert set(result.silhouette) == set(range(2, 21))  # k from 2 to k_max (20) tried
    # one text of 24 may stray ("Can I freeze leftover soup?" lands with the weather): V-measure 0.88
    assert len(result.clusters) == 3 and v_measure_score(LABELS, result.assignments) > 0.85
    sizes = [c.size for c in result.clusters]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == len(TEXTS)
    for c in result.clusters:
        assert all(result.assignments[i] == c.id for i in c.members)
        assert c.examples[0] in TEXTS and c.label == ", ".join(c.keywords[:3])
    card = result.clusters[result.assignments[0]]
    assert "card" in card.keywords
    path = save_map(result, tmp_path / "map.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_are_written_by_a_decoder_and_k_can_be_given(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)  # a tiny qwen2 with room for the few-shot labelling prompt (the fixture's has 256)
    AutoModelForCausalLM.from_config(tiny_config("qwen2", {"max_position_embeddings": 1024})).save_pretrained(
        tmp_path
    )
    tiny_tokenizer.save_pretrained(tmp_path)
    encoder = Encoder.load(tmp_path)
    result = cluster_texts(encoder, TEXTS[:10], k=2, labels="generate")
    assert len(result.clusters) == 2 and not result.silhouette
    for c in result.clusters:
        written = write_label(encoder, c.examples)
        assert c.label == (written or ", ".join(c.keywords[:3])) and c.label


def test_keywords_set_each_cluster_apart():
    terms = keywords(
        ["red apples and green apples", "apples are red", "fast cars", "cars drive fast"], [0, 0, 1, 1], 2
    )
    assert terms[0][0] == "apples" and "cars" in terms[1]


def test_bad_requests_are_refused(minilm):
    with pytest.raises(ValueError, match="cannot generate"):
        cluster_texts(minilm, TEXTS, labels="generate")
    with pytest.raises(ValueError, match="k must be between 1 and the number of texts"):
        cluster_texts(minilm, TEXTS[:3], k=4)
    with pytest.raises(ValueError, match="give k"):
        cluster_texts(minilm, TEXTS[:2])

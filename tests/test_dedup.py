"""De-duplication: exact copies by hash, near duplicates by cosine, greedy groups in input order."""

from __future__ import annotations

import numpy as np
import pytest

from dec2vec.dedup import find_duplicates, near_neighbours
from dec2vec.models import load_model

TEXTS = [
    "The company said profits rose 10 percent in the third quarter.",  # 0
    "Profits at the company rose 10 percent in the third quarter, it said.",  # 1: paraphrase of 0
    "A cat is sleeping on the sofa.",  # 2
    "the  company said profits rose 10 percent in the THIRD quarter.",  # 3: copy of 0 (case, spaces)
    "Heavy rain is expected across the north on Tuesday.",  # 4
    "A cat sleeps on the couch.",  # 5: paraphrase of 2
    "Stock markets in Asia closed lower on Friday.",  # 6
]


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


def test_exact_copies_and_paraphrases_are_grouped_under_the_first(minilm):
    result = find_duplicates(minilm, TEXTS, threshold=0.8)
    assert result.kept == [0, 2, 4, 6]
    groups = {g.kept: (g.duplicates, g.exact) for g in result.groups}
    assert groups == {0: ([1, 3], [3]), 2: ([5], [])}
    vectors = minilm.encode(TEXTS)
    for group in result.groups:  # every duplicate is within the threshold of the text kept for it
        assert all(vectors[group.kept] @ vectors[d] >= 0.8 - 1e-6 for d in group.duplicates)


def test_threshold_one_finds_exact_copies_without_an_encoder():
    result = find_duplicates(None, TEXTS, threshold=1.0)
    assert result.kept == [0, 1, 2, 4, 5, 6] and [(g.kept, g.duplicates) for g in result.groups] == [(0, [3])]
    with pytest.raises(ValueError, match="threshold must be a cosine"):
        find_duplicates(None, TEXTS, threshold=0.0)


def test_groups_do_not_chain_through_a_middle_text():
    # b is within 0.9 of a and of c, but a and c are not: c must not join a's group through b
    angle = np.deg2rad([0.0, 20.0, 40.0])
    vectors = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    assert [list(n) for n in near_neighbours(vectors, 0.9)] == [[1], [0, 2], [1]]

    class Fixed:
        def encode(self, texts, **kwargs):
            return vectors[[int(t) for t in texts]]

    result = find_duplicates(Fixed(), ["0", "1", "2"], threshold=0.9)
    assert result.kept == [0, 2] and [(g.kept, g.duplicates) for g in result.groups] == [(0, [1])]

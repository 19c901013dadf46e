"""Classifier: a logistic-regression head over a frozen encoder, saved without pickle."""

from __future__ import annotations

import numpy as np
import pytest
from intents import INTENTS, split
from sklearn.linear_model import LogisticRegression

from dec2vec import Encoder
from dec2vec.classifier import Classifier, HeadMismatchError
from dec2vec.models import load_model


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


def test_a_head_on_real_vectors_labels_unseen_texts(minilm, tmp_path):
    train, test = split(5)
    classifier = Classifier.train(minilm, *zip(*train, strict=True))
    assert classifier.classes == sorted(INTENTS)
    predictions = classifier.predict([t for t, _ in test])
    right = sum(p.label == label for p, (_, label) in zip(predictions, test, strict=True))
    assert right >= len(test) - 1, [(p.label, t) for p, t in zip(predictions, test, strict=True)]
    for p in predictions:
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
        assert p.probability == max(p.probabilities.values()) == p.probabilities[p.label]
    # saved as arrays + JSON and loaded back: the same probabilities, the encoder rebuilt from its spec
    classifier.save(tmp_path / "head", examples=len(train))
    loaded = Classifier.load(tmp_path / "head")
    assert loaded.encoder.spec == "minilm"
    np.testing.assert_allclose(
        loaded.probabilities([t for t, _ in test]), classifier.probabilities([t for t, _ in test]), atol=1e-6
    )
    assert not list((tmp_path / "head").glob("*.pkl"))


def test_two_classes_match_scikit_learn_probabilities(minilm):
    texts = INTENTS["card"] + INTENTS["weather"]
    labels = ["card"] * 8 + ["weather"] * 8
    classifier = Classifier.train(minilm, texts, labels)
    reference = LogisticRegression(max_iter=1000).fit(minilm.encode(texts), labels)
    queries = ["my card is gone", "is it windy outside"]
    np.testing.assert_allclose(
        classifier.probabilities(queries), reference.predict_proba(minilm.encode(queries)), atol=1e-6
    )
    assert [p.label for p in classifier.predict(queries)] == ["card", "weather"]


def test_a_head_is_refused_by_an_encoder_with_other_weights(minilm, make_tiny_checkpoint, tmp_path):
    tiny = Encoder.load(make_tiny_checkpoint("llama"))
    train, _ = split(3)
    Classifier.train(tiny, *zip(*train, strict=True)).save(tmp_path / "tiny-head")
    assert Classifier.load(tmp_path / "tiny-head").encoder.dim == tiny.dim  # any decoder, reloaded by path
    Classifier.train(minilm, *zip(*train, strict=True)).save(tmp_path / "minilm-head")
    with pytest.raises(HeadMismatchError, match="other weights"):
        Classifier.load(tmp_path / "minilm-head", encoder=load_model("minilm:bfloat16"))
    with pytest.raises(FileNotFoundError, match="not a classifier"):
        Classifier.load(tmp_path)


def test_bad_training_input_is_refused(minilm):
    with pytest.raises(ValueError, match="two distinct labels"):
        Classifier.train(minilm, ["a", "b"], ["x", "x"])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        Classifier.train(minilm, ["a", "b"], ["x"])

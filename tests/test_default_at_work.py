"""The shipped default at work: classify, cluster, dedup and auto-filter on the real SmolLM2-based encoder."""

from __future__ import annotations

import pytest
from intents import INTENTS, split
from sklearn.metrics import v_measure_score

from dec2vec.classifier import Classifier
from dec2vec.clustering import cluster_texts
from dec2vec.dedup import find_duplicates
from dec2vec.models import DEFAULT_MODEL, load_model
from dec2vec.search import Document, Index

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # the shipped model is built once per test session
        patch.setenv("DEC2VEC_HOME", str(tmp_path_factory.getbasetemp() / "shipped-home"))
        return load_model(DEFAULT_MODEL)


def test_the_default_classifies_unseen_intents(default, tmp_path):
    train, test = split(5)
    Classifier.train(default, *zip(*train, strict=True)).save(tmp_path / "head")
    head = Classifier.load(tmp_path / "head", encoder=default)
    predicted = [p.label for p in head.predict([t for t, _ in test])]
    assert sum(p == label for p, (_, label) in zip(predicted, test, strict=True)) >= len(test) - 1


def test_the_default_clusters_and_writes_labels(default):
    texts = [t for group in INTENTS.values() for t in group]
    labels = [label for label, group in INTENTS.items() for _ in group]
    result = cluster_texts(default, texts, k=3)
    assert v_measure_score(labels, result.assignments) > 0.7
    written = {c.label.lower() for c in result.clusters}
    assert all(0 < len(label.split()) <= 8 for label in written)
    assert any(word in " ".join(written) for word in ("weather", "forecast", "rain"))


def test_the_default_finds_copies_and_paraphrases(default):
    texts = [
        "The company said profits rose 10 percent in the third quarter.",
        "Profits at the company rose 10 percent in the third quarter, it said.",
        "A cat is sleeping on the sofa.",
        "the  company said profits rose 10 percent in the THIRD quarter.",
        "Heavy rain is expected across the north on Tuesday.",
    ]
    result = find_duplicates(default, texts, threshold=0.715)  # the best-F1 threshold on MRPC train
    assert result.kept == [0, 2, 4]
    assert [(g.kept, g.duplicates, g.exact) for g in result.groups] == [(0, [1, 3], [3])]


def test_the_default_reads_a_language_out_of_a_query(default, tmp_path):
    snippets = {
        "python": ["with open(path) as f: data = f.read()", "import json; json.loads(text)"],
        "go": ["data, err := os.ReadFile(path)", "func main() { fmt.Println(x) }"],
        "javascript": ["const data = fs.readFileSync(path)", "JSON.parse(text)"],
    }
    with Index(str(tmp_path / "code.db"), default) as index:
        index.add([Document(f"{lang}{i}", code, metadata={"lang": lang})
                   for lang, codes in snippets.items() for i, code in enumerate(codes)])  # fmt: skip
        reading, hits = index.search_auto("how to read a file in Python", k=3)
        assert reading.filters == {"lang": "python"}
        assert {h.metadata["lang"] for h in hits} == {"python"}
        assert index.search_auto("how to read a whole file into memory", k=3)[0].filters == {}

"""One contract for every store backend, run against SQLite and a real PostgreSQL + pgvector (pgserver).

Stores are driven directly with hand-made vectors (no model), so each check says exactly what a backend
must answer; ``Index`` builds everything else on these answers.
"""

import numpy as np
import pgserver
import pytest

from dec2vec.search.backends import open_store
from dec2vec.search.documents import Document
from dec2vec.search.filters import normalize

DIM = 8


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path, postgres):
    if request.param == "sqlite":
        location = str(tmp_path / "contract.db")
    else:
        name = "c_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50]
        postgres.psql(f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};")
        location = postgres.get_uri(name)
    store = open_store(location)
    store.create({"spec": "test", "dim": DIM, "fingerprint": "f"}, "float32")
    yield store
    store.close()


def unit(i: int) -> np.ndarray:
    """A unit vector per document, near its neighbours' (i and i+1 share most of their direction)."""
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM], v[(i + 1) % DIM] = 1.0, 0.3
    return v / np.linalg.norm(v)


DOCS = [
    Document("a", "the red fox jumps", "A", {"lang": "en", "year": 1990, "tag": "x"}),
    Document("b", "a quick brown dog", "B", {"lang": "en", "year": 2005, "tag": "y"}),
    Document("c", "le renard rouge saute", "C", {"lang": "fr", "year": 2015, "tag": "x"}),
    Document("d", "the fox and the dog", "D", {"lang": "en", "year": "2020", "tag": "z"}),  # text year
]


def fill(store):
    with store.transaction():
        for i, doc in enumerate(DOCS):
            store.put(doc, f"h{i}", [doc.text], unit(i)[None])


def ids(store, hits):
    chunks = store.chunks([chunk_id for chunk_id, _ in hits])
    return [chunks[chunk_id].doc_id for chunk_id, _ in hits]


def test_records_its_encoder_counts_and_hashes(store):
    assert store.info() == {"spec": "test", "dim": DIM, "fingerprint": "f"}
    fill(store)
    assert store.counts()["documents"] == 4 and store.counts()["chunks"] == 4
    assert store.hashes(["a", "c", "zz"]) == {"a": "h0", "c": "h2"}
    store.check()


def test_facets_count_documents_per_text_or_boolean_value(store):
    assert store.facets() == {}
    fill(store)
    with store.transaction():  # a document with two chunks counts once; numbers are not facets
        store.put(Document("e", "two chunks", "E", {"lang": "de", "open": True}), "h4", ["x", "y"],
                  np.stack([unit(4), unit(5)]))  # fmt: skip
    assert store.facets() == {
        "lang": {"en": 3, "fr": 1, "de": 1},
        "tag": {"x": 2, "y": 1, "z": 1},
        "year": {"2020": 1},  # d's year is text
        "open": {True: 1},
    }


def test_dense_is_cosine_nearest_first_and_filters_run_inside(store):
    fill(store)
    hits = store.dense(unit(1), 4, [])
    assert ids(store, hits)[0] == "b" and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert ids(store, store.dense(unit(1), 4, normalize({"lang": "fr"}))) == ["c"]
    assert set(ids(store, store.dense(unit(0), 4, normalize({"tag": ["x", "z"]})))) == {"a", "c", "d"}
    # ranges compare numbers only: d's year is the text "2020"
    assert set(ids(store, store.dense(unit(0), 4, normalize({"year": {">=": 2000}})))) == {"b", "c"}
    assert set(ids(store, store.dense(unit(0), 4, normalize(["year<2010", "lang=en"])))) == {"a", "b"}


def test_lexical_matches_words_not_query_syntax(store):
    fill(store)
    assert set(ids(store, store.lexical("fox", 10, []))) == {"a", "d"}
    assert ids(store, store.lexical("fox", 10, normalize({"year": {"<": 2000}}))) == ["a"]
    for hostile in ('fox" OR "dog', "fox) OR (1=1", "NEAR(fox dog)", "fox:*", "-dog"):
        hits = ids(store, store.lexical(hostile, 10, []))
        assert "a" in hits or "b" in hits  # the words still match; nothing is parsed as syntax
    assert store.lexical("!!! ???", 10, []) == []


def test_upsert_delete_and_a_failed_transaction_changes_nothing(store):
    fill(store)
    with store.transaction():
        store.put(Document("a", "a new text about owls", "A2", {"lang": "en"}), "h9", ["a new text", "owls"],
                  np.stack([unit(5), unit(6)]))  # fmt: skip
    assert store.hashes(["a"]) == {"a": "h9"} and store.counts()["chunks"] == 5
    assert ids(store, store.lexical("owls", 10, [])) == ["a"] and store.lexical("red", 10, []) == []
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        store.delete(["b", "c"])
        raise RuntimeError("boom")
    assert store.counts()["documents"] == 4  # rolled back
    with store.transaction():
        assert store.delete(["b", "zz"]) == 1
    assert store.counts() | {"bytes": 0} == {"documents": 3, "chunks": 4, "bytes": 0}
    assert "b" not in ids(store, store.dense(unit(1), 10, []))
    store.check()

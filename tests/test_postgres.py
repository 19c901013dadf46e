"""The PostgreSQL + pgvector backend against a real server (pgserver: PostgreSQL 16 with pgvector)."""

import pgserver
import pytest
from conftest import SENTENCES, corpus

from dec2vec import Encoder
from dec2vec.search import Index


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
def database(server, request):
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:50]
    server.psql(f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};")
    return server.get_uri(name)


@pytest.fixture(scope="module")
def encoder(make_tiny_checkpoint):
    return Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")


def test_sqlite_and_postgres_return_the_same_top_k(encoder, database, tmp_path):
    docs = corpus(300)
    with Index(database, encoder) as pg, Index(str(tmp_path / "same.db"), encoder) as lite:
        pg.add(docs, show_progress=False)
        lite.add(docs, show_progress=False)
        for query in SENTENCES[1000:1010]:
            assert [h.id for h in pg.search(query, mode="dense", k=10)] == [
                h.id for h in lite.search(query, mode="dense", k=10)
            ]
            filters = {"year": {">=": 1950}, "group": [0, 1]}
            assert [h.id for h in pg.search(query, mode="dense", k=10, filters=filters)] == [
                h.id for h in lite.search(query, mode="dense", k=10, filters=filters)
            ]
        for i in (5, 50, 150):  # an exact sentence: both full-text rankers put it first
            assert pg.search(SENTENCES[i], mode="lexical", k=1)[0].id == f"d{i}"
            assert lite.search(SENTENCES[i], mode="lexical", k=1)[0].id == f"d{i}"
            assert pg.search(SENTENCES[i], mode="hybrid", k=1)[0].id == f"d{i}"
        assert pg.stats()["documents"] == lite.stats()["documents"] == 300


def test_postgres_filters_upserts_and_deletes(encoder, database):
    with Index(database, encoder) as index:
        index.add(corpus(1000), show_progress=False)
        for mode in ("dense", "hybrid"):  # 1% of documents pass: still k results, exact over the filter
            hits = index.search("the city was founded", mode=mode, k=10, filters={"lang": "fr"})
            assert len(hits) == 10 and {h.metadata["lang"] for h in hits} == {"fr"}
        changed = corpus(3)
        changed[1].text = "Zanzibar archipelago cloves " * 150
        report = index.add(changed, show_progress=False)
        assert (report.updated, report.unchanged) == (1, 2) and report.chunks > 1
        assert index.search("zanzibar cloves", mode="lexical", k=1)[0].id == "d1"
        assert index.delete(["d1", "d2"]) == 2
        index.store.check()
        assert index.stats()["documents"] == 998
        assert index.search("zanzibar cloves", mode="lexical") == []

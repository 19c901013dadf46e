"""Search: ingest, hybrid retrieval with filters, reranking and the SQLite store, on tiny real models."""

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SENTENCES, corpus
from typer.testing import CliRunner

from dec2vec import Encoder
from dec2vec.cli import app
from dec2vec.files import DataFormatError
from dec2vec.search import Document, EncoderMismatchError, Index, read_documents
from dec2vec.search.chunking import chunk_text
from dec2vec.search.filters import Filter, parse_filter
from dec2vec.search.fusion import reciprocal_rank_fusion
from dec2vec.search.rerank import maxsim_scores


@pytest.fixture(scope="module")
def encoder(make_tiny_checkpoint):
    return Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")


@pytest.fixture
def index(encoder, tmp_path):
    with Index(str(tmp_path / "index.db"), encoder) as idx:
        yield idx


def test_rrf_matches_a_hand_computed_fusion():
    fused = reciprocal_rank_fusion({"dense": ["a", "b", "c"], "lexical": ["c", "a"]}, {"lexical": 2.0}, k=10)
    expected = {"a": 1 / 11 + 2 / 12, "b": 1 / 12, "c": 1 / 13 + 2 / 11}
    assert [doc for doc, _ in fused] == ["c", "a", "b"]
    assert all(np.isclose(score, expected[doc]) for doc, score in fused)


def test_hybrid_search_is_the_rrf_of_the_dense_and_lexical_rankings(index):
    index.add(corpus(200), show_progress=False)
    query = "the football club played in the league"
    dense = index.search(query, mode="dense", k=200)
    lexical = index.search(query, mode="lexical", k=200)
    hybrid = index.search(query, mode="hybrid", k=10, rrf_k=20, weights={"dense": 0.5}, candidates=200)
    scores: dict[str, float] = {}
    for weight, hits in ((0.5, dense), (1.0, lexical)):
        for rank, hit in enumerate(hits, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (20 + rank)
    by_hand = sorted(scores.items(), key=lambda item: -item[1])[:10]
    assert [h.id for h in hybrid] == [doc for doc, _ in by_hand]
    assert np.allclose([h.score for h in hybrid], [s for _, s in by_hand])
    ranks = {h.id: r for r, h in enumerate(lexical, start=1)}
    assert all(h.ranks.get("lexical") == ranks.get(h.id) for h in hybrid)
    assert [h.ranks["dense"] for h in dense[:3]] == [1, 2, 3]
    assert dense[0].score >= dense[1].score >= dense[2].score  # cosine similarities, best first


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_a_filter_matching_1_percent_still_returns_k_results(encoder, tmp_path, mode):
    with Index(str(tmp_path / "index.db"), encoder) as index:
        index.add(corpus(1000), show_progress=False)
        hits = index.search("the city was founded by", mode=mode, k=10, filters={"lang": "fr"}, candidates=10)
        if mode == "lexical":  # full text can only return French rows that share a word with the query
            assert hits and all(h.metadata["lang"] == "fr" for h in hits)
        else:
            assert len(hits) == 10 and {h.metadata["lang"] for h in hits} == {"fr"}
        ranged = index.search("the city", mode=mode, k=10, filters=["year>=1990", "group=0,2"])
        assert ranged and all(h.metadata["year"] >= 1990 and h.metadata["group"] in (0, 2) for h in ranged)


def test_filters_parse_and_reject_what_they_cannot_mean():
    assert parse_filter("lang=en") == Filter("lang", "=", "en")
    assert parse_filter("group=0,2") == Filter("group", "in", (0, 2))
    assert parse_filter("year>=1990") == Filter("year", ">=", 1990)
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        parse_filter("lang")
    with pytest.raises(ValueError, match="a range needs a number"):
        parse_filter("lang>en")
    with pytest.raises(ValueError, match="use letters"):
        parse_filter("x') OR 1=1 --=a")
    with pytest.raises(ValueError, match="finite number"):
        parse_filter("year>=1e999")


@pytest.mark.parametrize(
    "filters, problem",
    [
        ({"year": {"> 0 OR 1=1 OR json_extract(metadata, '$.year') >": 0}}, "unknown operator"),
        ({"year": {"=": 2000}}, "unknown operator"),  # equality is {"year": 2000}, not an operator key
        ({"lang": {"nested": {"x": 1}}}, "unknown operator"),
        ({"lang": [["en"], "fr"]}, "not a value to compare with"),
        ({"lang": {"x": "y"}}, "unknown operator"),
        ({"year": float("inf")}, "finite number"),
        ({"year": 10**30}, "64-bit integer"),
        ({"lang": []}, "a list of 1 to"),
    ],
)
def test_filters_are_a_closed_grammar_whatever_the_caller_sends(index, filters, problem):
    """The operator reaches SQL text, so only the documented ones pass: an injected one is refused."""
    index.add(corpus(20), show_progress=False)
    for mode in ("dense", "lexical"):
        with pytest.raises(ValueError, match=problem):
            index.search("the city", mode=mode, filters=filters)
    assert len(index.search("the city", mode="lexical", k=20, filters={"year": {">": 0}})) > 0


def test_upserts_and_deletes_keep_documents_full_text_and_vectors_in_step(index):
    first = index.add(corpus(50), show_progress=False)
    assert (first.added, first.updated, first.unchanged) == (50, 0, 0)
    assert (again := index.add(corpus(50), show_progress=False)).unchanged == 50 and again.chunks == 0
    changed = corpus(50)
    changed[7] = Document("d7", "Zanzibar archipelago cloves " * 200, "long", {"lang": "sw"})  # many chunks
    report = index.add(changed, show_progress=False)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 49) and report.chunks > 3
    index.store.check()
    hit = index.search("zanzibar cloves", mode="lexical", k=1)[0]
    assert hit.id == "d7" and hit.metadata == {"lang": "sw"}
    english = index.search(SENTENCES[7], mode="lexical", k=50, filters={"lang": "en"})
    assert english and "d7" not in {h.id for h in english}  # its old text is gone from full text
    assert index.delete(["d7", "d8", "missing"]) == 2
    index.store.check()
    assert index.stats()["documents"] == 48
    assert index.search("zanzibar cloves", mode="lexical") == []
    assert {"d7", "d8"}.isdisjoint(h.id for h in index.search("the", mode="dense", k=60))


def test_long_documents_split_into_overlapping_chunks_that_cover_the_text(encoder):
    text = " ".join(SENTENCES[:40])
    chunks = chunk_text(encoder.tokenizer, text, max_tokens=64, overlap=16)
    assert len(chunks) > 5 and "".join(chunks).startswith(chunks[0])
    lengths = [len(encoder.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert max(lengths) <= 64 + 1  # re-tokenizing a piece may merge differently at its edges
    rebuilt = chunks[0]
    for left, right in itertools.pairwise(chunks):  # each chunk starts with the previous one's end
        shared = max(n for n in range(len(right) + 1) if left.endswith(right[:n]))
        assert 10 <= shared < len(left)
        rebuilt += right[shared:]
    assert rebuilt == text  # nothing lost, nothing invented
    assert chunk_text(encoder.tokenizer, "short text") == ["short text"]


def test_an_index_refuses_another_encoder(index, make_tiny_checkpoint):
    index.add(corpus(5), show_progress=False)
    other = Encoder.load(make_tiny_checkpoint("qwen2"), attention="bidirectional")
    with pytest.raises(EncoderMismatchError, match="holds vectors from another encoder"):
        Index(index.location, other)
    same_weights_other_pooling = Encoder.load(index.encoder.source, attention="bidirectional", pooling="last")
    with pytest.raises(EncoderMismatchError, match="bidirectional:mean:float32"):
        Index(index.location, same_weights_other_pooling)
    with Index(index.location) as reopened:  # no encoder given: the recorded one is loaded
        assert reopened.search(SENTENCES[3], mode="dense", k=1)[0].id == "d3"


@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_quantized_vectors_are_rescored_with_float_cosines(encoder, tmp_path, quantization):
    with Index(str(tmp_path / "q.db"), encoder, quantization=quantization) as index:
        index.add(corpus(300), show_progress=False)
        with Index(str(tmp_path / "f.db"), encoder) as exact:
            exact.add(corpus(300), show_progress=False)
            for query in SENTENCES[500:510]:
                hits = index.search(query, mode="dense", k=10)
                truth = exact.search(query, mode="dense", k=10)
                overlap = len({h.id for h in hits} & {h.id for h in truth})
                assert overlap >= 6, (quantization, overlap)
                common = {h.id: h.score for h in truth}
                assert all(np.isclose(h.score, common[h.id], atol=1e-5) for h in hits if h.id in common)
        assert index.stats()["quantization"] == quantization


def test_maxsim_reranking_reorders_the_top_candidates_by_late_interaction(index):
    index.add(corpus(100), show_progress=False)
    query = "the band released an album"
    hits = index.search(query, mode="hybrid", k=10, rerank="maxsim", rerank_candidates=8)
    head = hits[:8]
    assert [h.ranks["maxsim"] for h in head] == list(range(1, 9))
    passages = [f"{h.title}\n{h.text}" for h in head]
    by_hand = maxsim_scores(index.encoder, query, passages)
    assert np.allclose([h.score for h in head], by_hand, atol=1e-5)
    assert list(by_hand) == sorted(by_hand, reverse=True)
    q, _ = index.encoder.token_embeddings([query])[0]
    d, _ = index.encoder.token_embeddings([passages[0]])[0]
    q, d = q / np.linalg.norm(q, axis=1, keepdims=True), d / np.linalg.norm(d, axis=1, keepdims=True)
    assert np.isclose(head[0].score, (q @ d.T).max(axis=1).mean(), atol=1e-5)


def test_generative_reranker_scores_are_probabilities(index):
    index.add(corpus(30), show_progress=False)
    hits = index.search("a river in the north", k=5, rerank="yes", rerank_candidates=5)
    assert len(hits) == 5 and all(0.0 <= h.score <= 1.0 for h in hits)
    assert [h.ranks["yes"] for h in hits] == [1, 2, 3, 4, 5]


def test_documents_read_from_files_directories_and_jsonl_with_line_errors(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("plain text file")
    (tmp_path / "docs" / "sub" / "b.md").write_text("# Heading here\n\nbody")
    (tmp_path / "docs" / "c.jsonl").write_text(
        json.dumps({"id": 1, "text": "one", "metadata": {"lang": "en"}})
        + "\n"
        + json.dumps({"_id": "beir", "title": "T", "text": "two"})
        + "\n"
    )
    docs = {d.id: d for d in read_documents([tmp_path / "docs"])}
    assert set(docs) == {"a.txt", "sub/b.md", "1", "beir"}
    assert docs["sub/b.md"].title == "Heading here" and docs["1"].metadata == {"lang": "en"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "text": "ok"}) + "\n" + json.dumps({"id": "y", "txt": "no"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: expected a str field 'text'"):
        list(read_documents([bad]))
    with pytest.raises(DataFormatError, match="no such file"):
        list(read_documents([tmp_path / "nope"]))


def _write_jsonl(path, docs):
    rows = ({"id": d.id, "text": d.text, "title": d.title, "metadata": d.metadata} for d in docs)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_a_killed_ingest_leaves_the_index_as_it_was(encoder, make_tiny_checkpoint, tmp_path):
    db = str(tmp_path / "index.db")
    with Index(db, encoder) as index:
        index.add(corpus(100), show_progress=False)
        before = (index.stats()["chunks"], [h.id for h in index.search("the war ended", k=20)])
    batch = corpus(100)[:50] + corpus(2900, offset=100)  # 50 unchanged, 2,900 new
    batch[0] = Document("d0", "a changed document about rivers", "", {"lang": "en"})
    _write_jsonl(tmp_path / "batch.jsonl", batch)
    command = [sys.executable, "-m", "dec2vec", "index", "add", db, str(tmp_path / "batch.jsonl"),
               "--batch-size", "5000"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    seen = b""
    deadline = time.time() + 120
    while not re.search(rb"[1-9]\d*/2950", seen) and time.time() < deadline:  # some documents in
        seen += process.stderr.read1(4096)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert b"2950/2950" not in seen and re.search(rb"[1-9]\d*/2950", seen), seen[-500:]
    with Index(db, encoder) as index:
        index.store.check()
        after = (index.stats()["chunks"], [h.id for h in index.search("the war ended", k=20)])
        assert after == before
        assert index.search("changed document rivers", mode="lexical", k=1)[0].id != "d0"
    finished = subprocess.run(command, capture_output=True, env=env, cwd=tmp_path, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "1 updated, 2900 added, 49 unchanged" in finished.stdout


def test_cli_indexes_searches_and_deletes(make_tiny_checkpoint, tmp_path):
    runner = CliRunner()
    model = str(make_tiny_checkpoint("llama"))
    _write_jsonl(tmp_path / "docs.jsonl", corpus(60))
    db = str(tmp_path / "cli.db")
    result = runner.invoke(app, ["index", "add", db, str(tmp_path / "docs.jsonl"), "--model", model,
                                 "--attention", "bidirectional"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "60 added" in result.output
    result = runner.invoke(app, ["search", db, SENTENCES[4], "--json", "-k", "3", "--filter", "lang=en"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and rows[0]["id"] == "d4" and set(rows[0]) >= {"id", "score", "ranks"}
    result = runner.invoke(app, ["search", db, "football league", "--mode", "lexical"])
    assert result.exit_code == 0 and "score" in result.output
    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": SENTENCES[i]}) + "\n" for i in (1, 2))
    )
    out = tmp_path / "runs.jsonl"
    queries = str(tmp_path / "queries.jsonl")
    result = runner.invoke(app, ["search", db, "--queries", queries, "--output", str(out)])
    assert result.exit_code == 0, result.output
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["query_id"] for r in runs] == ["q1", "q2"] and runs[0]["results"][0]["id"] == "d1"
    result = runner.invoke(app, ["index", "delete", db, "d1", "d2"])
    assert result.exit_code == 0 and "deleted 2" in result.output
    result = runner.invoke(app, ["index", "stats", db])
    assert result.exit_code == 0 and "58" in result.output
    result = runner.invoke(app, ["search", db, "x", "--filter", "lang"])
    assert result.exit_code != 0 and "expected FIELD=VALUE" in result.output


def test_cli_mistakes_get_one_clear_line_not_a_traceback(make_tiny_checkpoint, tmp_path):
    runner = CliRunner()
    model = str(make_tiny_checkpoint("llama"))
    _write_jsonl(tmp_path / "docs.jsonl", corpus(30))
    db = str(tmp_path / "ok.db")
    assert runner.invoke(app, ["index", "add", db, str(tmp_path / "docs.jsonl"), "-m", model]).exit_code == 0
    (tmp_path / "text.db").write_text("not a database at all\n" * 100)
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(Path(db).read_bytes()[:3000])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ok\nna\xefve\n".encode("latin-1"))
    missing = str(tmp_path / "missing.db")
    cases = [
        (["index", "stats", str(tmp_path / "text.db")], "not a usable SQLite index"),
        (["search", str(truncated), "x"], "truncated.db"),
        (["index", "stats", str(truncated)], "truncated.db"),
        (["search", missing, "x"], "no such index"),
        (["index", "stats", missing], "no such index"),
        (["index", "delete", missing, "d1"], "no such index"),
        (["search", db, "x", "--filter", "year>=1e999"], "finite number"),
        (["search", db, "x", "--filter", f"year>={10**30}"], "64-bit integer"),
        (["search", db, "x", "--rrf-k", "0"], "--rrf-k"),
        (["search", db, "x", "-k", "0"], "-k"),
        (["search", db, "x", "--rerank-candidates", "0"], "--rerank-candidates"),
        (["search", db, "x", "--dense-weight", "nan"], "weights"),
        (["search", db, "x", "--pooling", "last"], "--pooling applies with --model only"),
        (["search", db, "x", "--dtype", "float32"], "--dtype applies with --model only"),
        (["search", db, "  "], "the query is empty"),
        (["embed", "-m", model, "-i", str(tmp_path / "latin1.txt"), "-o", str(tmp_path / "v.npy")],
         "latin1.txt:1: not UTF-8"),
    ]  # fmt: skip
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), args
    assert not Path(missing).exists()  # reading commands never create an index
    hits = runner.invoke(app, ["search", db, "city", "-k", "5000", "--mode", "dense", "--json"])
    assert hits.exit_code == 0 and len(json.loads(hits.stdout)) == 30  # beyond sqlite-vec's 4,096: clamped


def test_a_second_writer_gets_a_clear_error_while_an_ingest_holds_the_lock(encoder, tmp_path, monkeypatch):
    from dec2vec.search import sqlite_store

    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.1)
    db = str(tmp_path / "locked.db")
    with Index(db, encoder) as first, Index(db, encoder) as second:
        first.add(corpus(5), show_progress=False)
        with first.store.transaction():  # as during an ingest
            with pytest.raises(sqlite_store.IndexLockedError, match="being written by another process"):
                second.add(corpus(10), show_progress=False)
            assert [h.id for h in second.search(SENTENCES[2], mode="lexical", k=1)] == ["d2"]  # reads go on
        assert second.add(corpus(10), show_progress=False).added == 5


def test_a_document_with_a_title_and_no_text_is_indexed_by_its_title(index, tmp_path):
    (tmp_path / "beir.jsonl").write_text(
        json.dumps({"_id": "t1", "title": "Aerodynamic heating of slender wings", "text": ""}) + "\n"
        + json.dumps({"_id": "t2", "title": "", "text": ""}) + "\n"
    )  # fmt: skip
    with pytest.raises(DataFormatError, match=r"beir.jsonl:2: 'text' and 'title' are both empty"):
        list(read_documents([tmp_path / "beir.jsonl"]))
    index.add([Document("t1", "", "Aerodynamic heating of slender wings")], show_progress=False)
    index.store.check()
    assert index.search("aerodynamic heating", mode="lexical")[0].id == "t1"

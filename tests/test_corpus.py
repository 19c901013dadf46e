"""Corpus embedding into Parquet shards (one shard of N, or a local Ray cluster) and bulk loading."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SENTENCES, corpus
from typer.testing import CliRunner

from dec2vec import Encoder
from dec2vec.cli import app
from dec2vec.corpus import embed_shard, embed_with_ray, load_shards, read_corpus, read_shards
from dec2vec.search import Document, EncoderMismatchError, Index
from dec2vec.search.index import passage


@pytest.fixture(scope="module")
def encoder(make_tiny_checkpoint):
    return Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")


def _documents():
    docs = corpus(40)
    docs[3] = Document("d3", " ".join(SENTENCES[100:130]), "long", {"lang": "en"})  # several chunks
    return docs


def _rows(directory):
    return sorted(read_shards(directory)[1], key=lambda r: (r["id"], r["chunk"]))


def _check_vectors(encoder, rows):
    expected = encoder.encode_documents([passage(r["title"], r["text"]) for r in rows])
    got = np.array([r["vector"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)  # batches differ in padding: float32 rounding only


def test_shards_of_n_cover_the_corpus_once_and_match_encode(encoder, tmp_path):
    docs = _documents()
    paths = [embed_shard(encoder, docs, tmp_path / "shards", (i, 3), chunk_tokens=64) for i in range(3)]
    assert [p.name for p in paths] == [f"part-0000{i}-of-00003.parquet" for i in range(3)]
    rows = _rows(tmp_path / "shards")
    assert sorted({r["id"] for r in rows}) == sorted(d.id for d in docs)
    assert len([r for r in rows if r["id"] == "d3"]) > 2
    _check_vectors(encoder, rows)
    with Index(str(tmp_path / "bulk.db")) as bulk:  # no encoder: the shards carry their vectors
        report = load_shards(bulk, tmp_path / "shards")
        assert (report.added, report.chunks) == (40, len(rows))
        assert load_shards(bulk, tmp_path / "shards").unchanged == 40  # idempotent
        bulk.store.check()
    with Index(str(tmp_path / "direct.db"), encoder, chunk_tokens=64) as direct:
        direct.add(docs, show_progress=False)
        assert direct.add(docs, show_progress=False).unchanged == 40
        with Index(str(tmp_path / "bulk.db"), encoder) as bulk:  # same encoder: accepted, same answers
            for query in SENTENCES[500:505]:
                assert [h.id for h in bulk.search(query, k=5)] == [h.id for h in direct.search(query, k=5)]


def test_a_local_ray_cluster_embeds_into_parquet_shards(encoder, tmp_path):
    docs = _documents()
    paths = embed_with_ray(encoder, docs, tmp_path / "ray", actors=2, batch_documents=8, chunk_tokens=64)
    assert paths and all(p.suffix == ".parquet" for p in paths)
    rows = _rows(tmp_path / "ray")
    assert sorted({r["id"] for r in rows}) == sorted(d.id for d in docs)
    _check_vectors(encoder, rows)
    assert json.loads(rows[0]["metadata"]) == next(d.metadata for d in docs if d.id == rows[0]["id"])


def test_cli_embeds_a_shard_and_bulk_loads_it(encoder, make_tiny_checkpoint, tmp_path):
    runner = CliRunner()
    model = str(make_tiny_checkpoint("llama"))
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in corpus(20)))
    shards = tmp_path / "shards"
    for i in (0, 1):
        args = ["embed", "-i", str(source), "-o", str(shards), "-m", model, "--attention", "bidirectional"]
        result = runner.invoke(app, [*args, "--shard", f"{i}/2"])
        assert result.exit_code == 0, result.output
    assert pq.read_table(next(shards.glob("*.parquet"))).num_rows == 10
    db = str(tmp_path / "i.db")
    ignored = runner.invoke(app, ["index", "add", db, str(shards), "--chunk-tokens", "64"])
    assert ignored.exit_code == 2 and "--chunk-tokens does not apply to embedded shards" in ignored.output
    result = runner.invoke(app, ["index", "add", str(tmp_path / "i.db"), str(shards)])
    assert result.exit_code == 0 and "20 added" in result.output, result.output
    other = Encoder.load(make_tiny_checkpoint("qwen2"), attention="bidirectional")
    with Index(str(tmp_path / "other.db"), other) as index:
        index.add(corpus(2), show_progress=False)
        with pytest.raises(EncoderMismatchError):
            load_shards(index, shards)
    bad = runner.invoke(app, ["embed", "-i", str(source), "-o", str(shards), "-m", model, "--shard", "2of3"])
    assert bad.exit_code == 2 and "expected i/N" in bad.output


def test_parquet_input(tmp_path, encoder):
    import pyarrow as pa

    table = pa.table({"id": [1, 2], "text": ["a cat", "a dog"], "metadata": ['{"k": 1}', None]})
    pq.write_table(table, tmp_path / "in.parquet")
    docs = read_corpus([tmp_path / "in.parquet"])
    assert [(d.id, d.text, d.metadata) for d in docs] == [("1", "a cat", {"k": 1}), ("2", "a dog", {})]

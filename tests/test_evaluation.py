"""Evaluation: metrics against independent computations, caching, malformed files, CLI, mteb adapter."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dec2vec import Encoder
from dec2vec.cli import app
from dec2vec.encoder import preferred_dtype
from dec2vec.evaluation import DataFormatError, build_task, evaluate, load_suite, parse_task
from dec2vec.evaluation.cache import CachedEncoder
from dec2vec.evaluation.tasks import word_vectors
from dec2vec.models import load_model

ANIMALS = [
    "the cat sleeps",
    "a dog barks loudly",
    "the kitten plays",
    "a puppy runs",
    "cats chase mice",
    "dogs love bones",
]
MONEY = [
    "stocks fell today",
    "the bank raised rates",
    "markets rallied",
    "bond yields rose",
    "shares dropped",
    "inflation rose",
]


def _tsv(path, header, rows):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny(make_tiny_checkpoint):
    return Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


@pytest.fixture
def beir(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    docs = {
        "d1": "cats and kittens",
        "d2": "stock markets and banks",
        "d3": "dogs and puppies",
        "d4": "bond yields",
    }
    queries = {"q1": "kittens", "q2": "banks", "q3": "puppies"}
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items())
    )
    _tsv(
        folder / "qrels" / "test.tsv",
        ["query-id", "corpus-id", "score"],
        [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d4", 1), ("q3", "d3", 1)],
    )
    return folder, docs, queries


def _ranks(x):
    order = np.argsort(x)
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    return ranks


def test_sts_spearman_matches_rank_correlation(tiny, tmp_path):
    pairs = [
        ("a cat", "a kitten", 4.5),
        ("a cat", "the stock market", 0.5),
        ("a dog barks", "a dog", 3.0),
        ("rain", "sun", 1.0),
        ("paris", "france", 2.5),
    ]
    task = build_task("sts", _tsv(tmp_path / "sts.tsv", ["sentence1", "sentence2", "score"], pairs))
    metrics = task.run(tiny).metrics
    cos = (tiny.encode([p[0] for p in pairs]) * tiny.encode([p[1] for p in pairs])).sum(1)
    expected = np.corrcoef(_ranks(cos), _ranks(np.array([p[2] for p in pairs])))[0, 1]
    assert metrics["spearman"] == pytest.approx(expected, abs=1e-9)


def test_retrieval_metrics_match_hand_computation(tiny, beir):
    folder, docs, queries = beir
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 2, "d4": 1}, "q3": {"d3": 1}}
    metrics = build_task("retrieval", folder).run(tiny).metrics
    sims = tiny.encode_queries(list(queries.values())) @ tiny.encode_documents(list(docs.values())).T
    ndcg, mrr, ap = [], [], []
    for i, qid in enumerate(queries):
        ranking = [list(docs)[j] for j in np.argsort(-sims[i])]
        gains = [qrels[qid].get(d, 0) for d in ranking]
        # trec_eval (and so MTEB) uses linear gains: rel / log2(rank + 1)
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains[:10]))
        ideal = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(qrels[qid].values(), reverse=True)))
        ndcg.append(dcg / ideal)
        mrr.append(next(1 / (r + 1) for r, g in enumerate(gains) if g > 0))
        hits = [r for r, g in enumerate(gains) if g > 0]
        ap.append(np.mean([(n + 1) / (r + 1) for n, r in enumerate(hits)]))
    assert metrics["ndcg@10"] == pytest.approx(np.mean(ndcg), abs=1e-4)
    assert metrics["mrr@10"] == pytest.approx(np.mean(mrr), abs=1e-4)
    assert metrics["map"] == pytest.approx(np.mean(ap), abs=1e-4)
    assert metrics["recall@100"] == pytest.approx(1.0)


def test_bm25_finds_the_only_document_with_the_query_word(beir):
    folder, _, _ = beir
    metrics = build_task("retrieval", folder).run(load_model("bm25")).metrics
    # Each query word occurs in exactly one relevant document; q2's second relevant doc shares no word.
    assert metrics["mrr@10"] == pytest.approx(1.0)
    assert metrics["recall@100"] == pytest.approx(1.0)


def test_pair_classification_average_precision_by_hand(tiny, tmp_path):
    pairs = [
        ("a cat", "a kitten", 1),
        ("a cat", "stock market", 0),
        ("a dog", "a puppy", 1),
        ("rain", "banks", 0),
        ("sun", "moon", 1),
    ]
    task = build_task("pairclf", _tsv(tmp_path / "p.tsv", ["sentence1", "sentence2", "label"], pairs))
    ap = task.run(tiny).metrics["cosine_ap"]
    cos = (tiny.encode([p[0] for p in pairs]) * tiny.encode([p[1] for p in pairs])).sum(1)
    labels = np.array([p[2] for p in pairs])[np.argsort(-cos)]
    precision_at_hits = [labels[: r + 1].mean() for r in range(len(labels)) if labels[r] == 1]
    assert ap == pytest.approx(np.mean(precision_at_hits))


def test_classification_and_clustering_separate_obvious_topics(minilm, tmp_path):
    rows = [(t, "animal") for t in ANIMALS] + [(t, "money") for t in MONEY]
    path = _tsv(tmp_path / "topics.tsv", ["text", "label"], rows * 3)
    clf = build_task("classification", path, samples_per_label=4, n_experiments=3)
    assert all(len(picked) == 8 for picked in clf._experiments())  # 4 per label, every experiment
    assert clf.run(minilm).metrics["accuracy"] == pytest.approx(1.0)
    assert build_task("clustering", path, n_runs=3).run(minilm).metrics["v_measure"] == pytest.approx(1.0)


def test_word_vectors_average_the_tokens_inside_each_word():
    states = np.arange(8, dtype=np.float32).reshape(4, 2)
    # "new york" tokenised as "new", " yo", "rk", plus a token past the end (truncation leftovers ignored)
    vectors = word_vectors(states[:3], [(0, 3), (3, 6), (6, 8)], ["new", "york"])
    np.testing.assert_array_equal(vectors, [[0, 1], [3, 4]])


def test_word_probe_learns_repeated_entities(minilm, tmp_path):
    folder = tmp_path / "conll"
    folder.mkdir()
    sentence = "John\tB-PER\nvisited\tO\nParis\tB-LOC\ntoday\tO\n\nMary\tB-PER\nlikes\tO\nLondon\tB-LOC\n\n"
    (folder / "train.conll").write_text(sentence * 5)
    (folder / "dev.conll").write_text(sentence)
    metrics = build_task("wordprobe", folder).run(minilm).metrics
    assert metrics["entity_f1"] == pytest.approx(1.0) and metrics["accuracy"] == pytest.approx(1.0)


def test_cache_hits_on_rerun_and_misses_when_weights_change(make_tiny_checkpoint, tmp_path):
    encoder = Encoder.load(make_tiny_checkpoint("qwen2"))
    texts = ["a cat", "the stock market"]
    first = CachedEncoder(encoder, tmp_path / "cache")
    vectors = first.encode(texts, show_progress=False, batch_size=1)  # the caller's options reach the model
    again = CachedEncoder(encoder, tmp_path / "cache")
    np.testing.assert_array_equal(again.encode(texts), vectors)
    assert (first.misses, again.hits, again.misses) == (1, 1, 0)
    with torch.no_grad():
        next(encoder.model.parameters()).mul_(1.5)
    changed = CachedEncoder(encoder, tmp_path / "cache")
    assert changed.dir != first.dir
    assert not np.allclose(changed.encode(texts), vectors) and changed.misses == 1
    tokens = changed.token_embeddings(texts)
    reread = CachedEncoder(encoder, tmp_path / "cache")
    assert reread.token_embeddings(texts) is not None and reread.hits == 1
    for (states, spans), (cached_states, cached_spans) in zip(
        tokens, reread.token_embeddings(texts), strict=True
    ):
        np.testing.assert_array_equal(cached_states, states)
        assert cached_spans == spans


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_cache_file_is_refused_and_runs_nothing(make_tiny_checkpoint, tmp_path):
    """Cache folders may be shared: files are read without pickles, so a planted one cannot run code."""
    cached = CachedEncoder(Encoder.load(make_tiny_checkpoint("qwen2")), tmp_path / "cache")
    cached.token_embeddings(["a cat"])
    (path,) = cached.dir.glob("tokens-*")
    marker = tmp_path / "pwned"
    planted = np.empty(1, dtype=object)
    planted[0] = _Planted(marker)
    with path.open("wb") as f:
        np.savez(f, states=planted)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        cached.token_embeddings(["a cat"])
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "types", "message"),
    [
        ("s1\ts2\tscore\na\tb\t1\n", "sts", r"sts.tsv:1: expected header"),
        (
            "sentence1\tsentence2\tscore\na\tb\t1\nc\td\n",
            "sts",
            r"sts.tsv:3: expected 3 tab-separated fields, got 2",
        ),
        ("sentence1\tsentence2\tscore\na\tb\thigh\n", "sts", r"sts.tsv:2: score 'high' is not a float"),
        ("sentence1\tsentence2\tlabel\na\tb\t2\n", "pairclf", r"labels must be 0 or 1"),
    ],
)
def test_malformed_task_files_name_file_and_line(tmp_path, content, types, message):
    (tmp_path / "sts.tsv").write_text(content)
    with pytest.raises(DataFormatError, match=message):
        parse_task(f"{types}:{tmp_path / 'sts.tsv'}")


def test_malformed_beir_and_suite(beir, tmp_path):
    folder, _, _ = beir
    with (folder / "corpus.jsonl").open("a") as f:
        f.write('{"_id": "d9"}\n')
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:5: expected a str field 'text'"):
        parse_task(f"retrieval:{folder}")
    suite = tmp_path / "suite.toml"
    suite.write_text('[[task]]\ntype = "sts"\n')
    with pytest.raises(DataFormatError, match=r"suite.toml: task #1 needs a 'path' key"):
        load_suite(suite)
    with pytest.raises(ValueError, match="unknown task type 'translation'"):
        parse_task("translation:x.tsv")


def test_model_specs(make_tiny_checkpoint):
    path = make_tiny_checkpoint("llama")
    encoder = load_model(f"{path}:last:causal")
    assert (encoder.config.attention, encoder.config.pooling) == ("causal", "last")
    with pytest.raises(ValueError, match="'sideways' is not an attention mode"):
        load_model(f"{path}:sideways")
    # a default dtype applies where the spec names none; the spec's own wins
    assert load_model(str(path), dtype="bfloat16").model.dtype == torch.bfloat16
    assert load_model(f"{path}:float32", dtype="bfloat16").model.dtype == torch.float32


def test_a_baseline_spec_takes_a_dtype_and_nothing_else(minilm):
    half = load_model("minilm:bfloat16")
    assert half.spec == "minilm:bfloat16" and next(half.model.parameters()).dtype == torch.bfloat16
    assert load_model(half.spec).fingerprint() == half.fingerprint() != minilm.fingerprint()
    texts = ["A man is playing a guitar.", "The stock market fell."]
    assert np.sum(half.encode(texts) * minilm.encode(texts), axis=1) == pytest.approx([1, 1], abs=5e-3)
    with pytest.raises(ValueError, match="takes a dtype option only"):
        load_model("minilm:causal")


def test_eval_cli_compares_models_and_writes_reports(make_tiny_checkpoint, beir, tmp_path):
    folder, _, _ = beir
    sts = _tsv(
        tmp_path / "sts.tsv",
        ["sentence1", "sentence2", "score"],
        [("a cat", "a kitten", 4), ("a cat", "banks", 0), ("a dog", "a puppy", 3)],
    )
    model = str(make_tiny_checkpoint("llama"))
    out = tmp_path / "out"
    out.mkdir()
    args = ["eval", "-m", f"{model}:causal:mean", "-m", f"{model}:bidirectional:last:float32", "-m", "bm25"]
    args += ["-t", f"sts:{sts}", "-t", f"retrieval:{folder}", "--cache-dir", str(tmp_path / "cache")]
    args += [
        "--json",
        str(out / "r.json"),
        "--markdown",
        str(out / "r.md"),
        "--plot",
        str(out / "r.png"),
        "--scatter",
        str(out / "s.png"),
    ]
    result = CliRunner(env={"COLUMNS": "300"}).invoke(app, args)
    assert result.exit_code == 0, result.output
    # a spec naming no dtype runs in the hardware's, said once and written into its rows' label
    dtype, reason = preferred_dtype()
    assert f"dtype: {dtype} ({reason}" in result.output
    rows = json.loads((out / "r.json").read_text())
    chosen = f"{model}:causal:mean:{dtype}"
    assert {r["model"] for r in rows} == {chosen, f"{model}:bidirectional:last:float32", "bm25"}
    assert not any(r["model"] == "bm25" and r["task"] == "sts/sts" for r in rows)  # not applicable, not faked
    direct = evaluate([chosen], [parse_task(f"sts:{sts}")], cache_dir=tmp_path / "cache2")
    spearman = next(r["value"] for r in rows if r["model"] == chosen and r["metric"] == "spearman")
    assert spearman == pytest.approx(next(r["value"] for r in direct.rows if r["metric"] == "spearman"))
    assert "| **spearman** |" in (out / "r.md").read_text()
    for png in ("r.png", "s.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(app, ["eval", "-m", model, "-t", f"sts:{sts}", "--dtype", "int4"])
    assert bad.exit_code != 0
    assert "--dtype must be one of float32, bfloat16, float16, got 'int4'" in bad.output
    idle = CliRunner().invoke(app, ["eval", "-m", "bm25", "-t", f"retrieval:{folder}", "--dtype", "float32"])
    assert idle.exit_code != 0 and "--dtype applies to no model here" in idle.output  # not silently ignored


def test_mteb_adapter_runs_a_local_task_offline(tiny, tmp_path):
    import mteb

    from dec2vec.evaluation.mteb_adapter import MtebEncoder, local_sts_task

    pairs = [
        ("a cat", "a kitten", 4.5),
        ("a cat", "the stock market", 0.5),
        ("a dog barks", "a dog", 3.0),
        ("rain", "sun", 1.0),
    ]
    path = _tsv(tmp_path / "sts.tsv", ["sentence1", "sentence2", "score"], pairs)
    result = mteb.evaluate(MtebEncoder(tiny), [local_sts_task(path)], cache=None, show_progress_bar=False)
    score = result.task_results[0].scores["test"][0]["cosine_spearman"]
    assert score == pytest.approx(build_task("sts", path).run(tiny).metrics["spearman"], abs=1e-6)


def test_with_dtype_adds_a_dtype_only_where_a_spec_names_none():
    from dec2vec.models import with_dtype

    assert with_dtype("smollm2-135m:causal:last", "bfloat16") == "smollm2-135m:causal:last:bfloat16"
    assert with_dtype("./enc:float32:mean", "bfloat16") == "./enc:float32:mean"
    assert with_dtype("minilm", "float32") == "minilm:float32"
    assert with_dtype("bm25", "bfloat16") == "bm25"

"""Search quality and latency: lexical, dense, hybrid and hybrid + MaxSim on three BEIR sets; store latency.

    python benchmarks/search.py [--encoder benchmarks/runs/retrieval] [--only quality,latency]

The default encoder is the ``retrieval`` recipe trained on top of ``benchmarks/runs/supervised`` (made by
``benchmarks/recipes.py``), trained here if missing, on the recipe's bundled inverse-cloze pairs plus the
SciFact-train claims after the first ``--max-queries`` (those are the evaluation queries) paired with their
cited abstracts and one BM25 hard negative each (a random pick from ranks 3-30 that is not cited).

Quality: nDCG@10 on SciFact-train, Cranfield and CISI (``../shared/data/retrieval``; the first
``--max-queries`` queries of each, since MaxSim re-encodes 20 passages per query) for the best dec2vec
encoder and for MiniLM, each through the same SQLite index (reused between runs: ingest is idempotent).
Latency: p50/p95 of the store's query (dense KNN, FTS5 BM25, both fused) for SQLite at 10k and 100k chunks,
and pgvector HNSW at 100k (pgserver) with recall@10 against exact search. The vectors are real encoder
embeddings of the shared Wikipedia sentences, repeated with small noise to reach 100k (the text cycles too).
Prints tables and writes benchmarks/results/search.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pytrec_eval
from recipes import timed_train  # benchmarks/recipes.py: trains (or reuses) a run and records its time
from rich.console import Console
from rich.table import Table

from dec2vec.encoder import CONFIG_NAME
from dec2vec.evaluation.data import read_beir
from dec2vec.models import load_model
from dec2vec.search import Document, Index
from dec2vec.search.backends import open_store
from dec2vec.search.filters import normalize
from dec2vec.search.index import encoder_info, passage

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
DATASETS = ("scifact-train", "cranfield", "cisi")
MODES = {
    "lexical": {"mode": "lexical"},
    "dense": {"mode": "dense"},
    "hybrid": {"mode": "hybrid"},
    "hybrid, dense weight 0.5": {"mode": "hybrid", "weights": {"dense": 0.5}},
    "hybrid + maxsim": {"mode": "hybrid", "rerank": "maxsim", "rerank_candidates": 20},
}
console = Console(width=220)


def beir_documents(path: Path) -> list[Document]:
    """A BEIR corpus as documents, leaving out the few with neither title nor text (Cranfield has two)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [
        Document(r["_id"], r["text"], r.get("title") or "")
        for r in rows
        if r["text"].strip() or r.get("title")
    ]


def ndcg10(index: Index, queries: dict[str, str], qrels: dict, options: dict) -> float:
    run = {}
    for query_id, text in queries.items():
        hits = index.search(text, k=10, **options)
        run[query_id] = {h.id: 1.0 / rank for rank, h in enumerate(hits, start=1)}  # order, not scores
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([per_query.get(q, {"ndcg_cut_10": 0.0})["ndcg_cut_10"] for q in queries]))


def quality(specs: dict[str, str], out: Path, max_queries: int, datasets: list[str]) -> list[dict]:
    rows = []
    for label, spec in specs.items():
        encoder = load_model(spec)
        for dataset in datasets:
            folder = DATA / "retrieval" / dataset
            beir = read_beir(folder)
            queries = dict(list(beir.queries.items())[:max_queries])
            with Index(str(out / f"{dataset}-{label}.db"), encoder) as index:
                start = time.perf_counter()
                report = index.add(beir_documents(folder / "corpus.jsonl"))
                ingest = time.perf_counter() - start
                row = {"dataset": dataset, "encoder": label, "queries": len(queries)}
                row["chunks"] = index.stats()["chunks"]
                if report.chunks:
                    row["ingest_s"] = round(ingest, 1)
                for name, options in MODES.items():
                    start = time.perf_counter()
                    row[name] = round(ndcg10(index, queries, beir.qrels, options), 4)
                    row[f"{name} ms/query"] = round(1000 * (time.perf_counter() - start) / len(queries), 1)
                console.print(row)
                rows.append(row)
    return rows


def scifact_pairs(start: str, out: Path, held_out: int) -> Path:
    """SciFact-train claims after the first ``held_out``: (claim, cited abstract, BM25 hard negative) rows."""
    folder = DATA / "retrieval" / "scifact-train"
    beir = read_beir(folder)
    documents = beir_documents(folder / "corpus.jsonl")
    docs = {d.id: passage(d.title, d.text) for d in documents}
    rng = random.Random(0)
    path = out / "scifact-train-pairs.jsonl"
    database = str(out / "scifact-train-start.db")  # BM25 needs an index: the starting encoder's, built once
    if not Path(database).exists():
        with Index(database, load_model(start)) as index:
            index.add(documents)
    with Index(database) as index, path.open("w") as f:
        for query_id, text in list(beir.queries.items())[held_out:]:
            cited = set(beir.qrels[query_id])
            negatives = [h.id for h in index.search(text, k=30, mode="lexical") if h.id not in cited][2:]
            for doc_id in sorted(cited):
                row = {"query": text, "positive": docs[doc_id], "negative": docs[rng.choice(negatives)]}
                f.write(json.dumps(row) + "\n")
    return path


def retrieval_encoder(encoder: Path, out: Path, held_out: int) -> None:
    """Train the ``retrieval`` recipe into ``encoder`` from the supervised run, unless it is there."""
    if (encoder / CONFIG_NAME).exists():
        return
    start = HERE / "runs" / "supervised"
    if not (start / CONFIG_NAME).exists():
        raise SystemExit(f"{start} is missing: run `python benchmarks/recipes.py --only supervised` first")
    data = [str(scifact_pairs(f"{start}:bfloat16", out, held_out)), "builtin:retrieval_ict_pairs.jsonl"]
    timed_train("retrieval", str(start), encoder, data)


def synthetic_corpus(
    vectors: np.ndarray, texts: list[str], size: int, seed: int = 0
) -> tuple[list, np.ndarray]:
    """``size`` (document, vector) pairs: real vectors, then noisy copies (cosine ~0.9 to their source)."""
    rng = np.random.default_rng(seed)
    picks = np.arange(size) % len(vectors)
    noise = rng.standard_normal((size, vectors.shape[1])).astype(np.float32) / np.sqrt(vectors.shape[1])
    noise[: len(vectors)] = 0
    out = vectors[picks] + 0.45 * noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    docs = [Document(f"s{i}", texts[p], "", {"copy": int(i // len(vectors))}) for i, p in enumerate(picks)]
    return docs, out


def fill(store, encoder, docs: list[Document], vectors: np.ndarray, quantization: str = "float32") -> float:
    """Write (document, vector) pairs through the store API in 1,000-document transactions."""
    start = time.perf_counter()
    store.create(encoder_info(encoder), quantization)
    for begin in range(0, len(docs), 1000):
        with store.transaction():
            for doc, vector in zip(docs[begin : begin + 1000], vectors[begin : begin + 1000], strict=True):
                store.put(doc, doc.id, [doc.text], vector[None])
    return time.perf_counter() - start


def timed(fn, queries) -> tuple[list, float, float]:
    results, times = [], []
    for q in queries:
        start = time.perf_counter()
        results.append(fn(q))
        times.append(1000 * (time.perf_counter() - start))
    return results, float(np.percentile(times, 50)), float(np.percentile(times, 95))


def measure(store, encoder, docs, corpus, query_vectors, query_texts) -> dict:
    """Fill one store, then time dense, lexical and filtered dense queries; recall@10 vs exact cosine."""
    ingest = fill(store, encoder, docs, corpus)
    exact = [set(np.argsort(-(corpus @ q))[:10].tolist()) for q in query_vectors]
    dense, d50, d95 = timed(lambda q: store.dense(q, 10, []), query_vectors)
    _, l50, l95 = timed(lambda t: store.lexical(t, 10, []), query_texts)
    _, f50, f95 = timed(lambda q: store.dense(q, 10, normalize({"copy": 0})), query_vectors)
    found = [{int(c.doc_id[1:]) for c in store.chunks([cid for cid, _ in hits]).values()} for hits in dense]
    recall = np.mean([len(f & truth) / 10 for f, truth in zip(found, exact, strict=True)])
    return {
        "chunks": len(docs),
        "ingest_s": round(ingest, 1),
        "dense p50 ms": round(d50, 2),
        "dense p95 ms": round(d95, 2),
        "lexical p50 ms": round(l50, 2),
        "lexical p95 ms": round(l95, 2),
        "filtered dense p50 ms": round(f50, 2),
        "filtered dense p95 ms": round(f95, 2),
        "recall@10 vs exact": round(float(recall), 4),
    }


def latency(spec: str, sizes: list[int], out: Path) -> list[dict]:
    encoder = load_model(spec)
    sentences = (DATA / "training" / "wikisplit_sentences.txt").read_text().splitlines()
    cache = out / "latency-vectors.npy"
    if not cache.exists():
        np.save(cache, encoder.encode_documents(sentences, show_progress=True))
    vectors = np.load(cache)
    query_texts = sentences[:200]
    query_vectors = encoder.encode_queries(query_texts)
    rows = []
    for backend, size in [("sqlite", size) for size in sizes] + [("pgvector hnsw", max(sizes))]:
        docs, corpus = synthetic_corpus(vectors, sentences, size)
        with tempfile.TemporaryDirectory() as tmp:
            server = None
            if backend == "sqlite":
                store = open_store(str(Path(tmp) / "latency.db"))
            else:
                import pgserver

                server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
                store = open_store(server.get_uri())
            rows.append(
                {"backend": backend, **measure(store, encoder, docs, corpus, query_vectors, query_texts)}
            )
            console.print(rows[-1])
            store.close()
            if server is not None:
                server.cleanup()
    return rows


def show(title: str, rows: list[dict]) -> None:
    table = Table(*rows[0].keys(), title=title)
    for row in rows:
        table.add_row(*(str(row.get(k, "")) for k in rows[0]))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--encoder", default=str(HERE / "runs" / "retrieval"), help="a saved encoder or a shipped name"
    )
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--only", default="quality,latency")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--max-queries", type=int, default=100, help="first N queries of each set")
    parser.add_argument("--out", type=Path, default=HERE / "runs" / "search")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = HERE / "results" / "search.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if Path(args.encoder) == HERE / "runs" / "retrieval":
        retrieval_encoder(Path(args.encoder), args.out, args.max_queries)
    spec = f"{args.encoder}:bfloat16"
    label = "dec2vec" if Path(args.encoder) == HERE / "runs" / "retrieval" else Path(args.encoder).name
    if "quality" in args.only:
        datasets = args.datasets.split(",")
        new = quality({label: spec, "minilm": "minilm"}, args.out, args.max_queries, datasets)
        done = {(r["dataset"], r["encoder"]) for r in new}  # a rerun replaces its own rows only
        results["quality"] = [
            r for r in results.get("quality", []) if (r["dataset"], r["encoder"]) not in done
        ]
        results["quality"] += new
        if label == "dec2vec":
            results["encoder"] = os.path.relpath(spec, HERE.parent)  # repository-relative in the JSON
    if "latency" in args.only:
        results["latency"] = latency(spec, [int(s) for s in args.sizes.split(",")], args.out)
    for key in ("quality", "latency"):
        if key in results:
            show(key, results[key])
    results_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

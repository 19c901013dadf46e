"""`--auto-filter`: filters read out of queries by the model, on three collections tagged by subject.

    python benchmarks/auto_filter.py [--model smollm2-135m-embed] [--queries 30] [--margin 2]

Corpus: Cranfield (tagged ``subject=aerospace``), CISI (``information science``) and a SciFact-train subset
(``medicine``: the abstracts the chosen claims cite, then others up to --scifact-docs) in one SQLite index.
Queries: the first --queries of each collection (with judged documents in the index), each asked twice:

- plain, as written: the subject is at most implied (a Cranfield query about "heated high speed aircraft");
- constrained: the query plus a phrase naming the subject in other words than its value, e.g. "…, for
  aircraft" or "…, in clinical research" (the phrases rotate; see PHRASES).

A proposed filter is right when it is the query's own collection's subject (it cannot drop a relevant
document) and wrong otherwise. Reported per query set: filter precision (right / proposed), recall (right /
queries), and hybrid nDCG@10 with no filter, with the auto-filter, and with the right filter given (the
ceiling), plus the reading's median milliseconds per query.

Prints a table and writes benchmarks/results/auto_filter.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pytrec_eval
from rich.console import Console
from rich.table import Table
from search import DATA, beir_documents  # benchmarks/search.py

from dec2vec.evaluation.data import read_beir
from dec2vec.models import load_model
from dec2vec.search import Document, Index
from dec2vec.search.auto_filter import MARGIN, NO_FILTER

HERE = Path(__file__).resolve().parent
console = Console(width=200)
SWEEP = (0.0, 1.0, 2.0, 3.0, 4.0)
SUBJECTS = {"cranfield": "aerospace", "cisi": "information science", "scifact-train": "medicine"}
PHRASES = {  # other words for each subject, so that matching the value's own words is not enough
    "aerospace": ["for aircraft", "in aeronautics", "in aerospace engineering"],
    "information science": ["for libraries", "in library science", "in information science"],
    "medicine": ["in clinical research", "in biomedicine", "in medicine"],
}


def collections(n_queries: int, scifact_docs: int) -> tuple[list[Document], list[dict], dict]:
    """Documents tagged with their subject, queries ({id, text, subject}), and the qrels of all three."""
    documents, queries, qrels = [], [], {}
    for name, subject in SUBJECTS.items():
        folder = DATA / "retrieval" / name
        beir = read_beir(folder)
        docs = beir_documents(folder / "corpus.jsonl")
        chosen = list(beir.queries.items())[:n_queries]
        if name == "scifact-train":  # the cited abstracts, then others in corpus order
            cited = {d for query_id, _ in chosen for d in beir.qrels[query_id]}
            docs = [d for d in docs if d.id in cited] + [d for d in docs if d.id not in cited]
            docs = docs[: max(scifact_docs, len(cited))]
        documents += [Document(f"{name}:{d.id}", d.text, d.title, {"subject": subject}) for d in docs]
        for query_id, text in chosen:
            key = f"{name}:{query_id}"
            queries.append({"id": key, "text": text, "subject": subject})
            qrels[key] = {f"{name}:{d}": grade for d, grade in beir.qrels[query_id].items()}
    return documents, queries, qrels


def constrained(queries: list[dict]) -> list[dict]:
    out = []
    for i, q in enumerate(queries):
        phrase = PHRASES[q["subject"]][i % 3]
        out.append({**q, "text": f"{q['text'].strip().rstrip('.?')}, {phrase}"})
    return out


def by_margin(gains: list[dict[str, float]], queries: list[dict]) -> dict[str, dict]:
    """Filter precision and recall had the margin been each of SWEEP (from the same readings)."""
    out = {}
    best = [(max(g, key=g.get), max(g.values()), q["subject"]) for g, q in zip(gains, queries, strict=True)]
    for margin in SWEEP:
        picked = [(value, subject) for value, gain, subject in best if gain > margin]
        right = sum(value == subject for value, subject in picked)
        out[str(margin)] = {
            "precision": round(right / len(picked), 4) if picked else None,
            "recall": round(right / len(queries), 4),
        }
    return out


def run(index: Index, queries: list[dict], qrels: dict, margin: float) -> dict:
    runs: dict[str, dict] = {"none": {}, "auto": {}, "given": {}}
    proposed = right = 0
    milliseconds, gains = [], []
    for q in queries:
        start = time.perf_counter()
        reading, auto_hits = index.search_auto(q["text"], k=10, margin=margin)
        milliseconds.append((time.perf_counter() - start) * 1000)
        gains.append({v: g for v, g in reading.scores["subject"].items() if v != NO_FILTER})
        if "subject" in reading.filters:
            proposed += 1
            right += reading.filters["subject"] == q["subject"]
        q["auto filter"] = reading.filters.get("subject")
        hits = {
            "none": index.search(q["text"], k=10),
            "auto": auto_hits,
            "given": index.search(q["text"], k=10, filters={"subject": q["subject"]}),
        }
        for name, found in hits.items():
            runs[name][q["id"]] = {h.id: 1.0 / rank for rank, h in enumerate(found, start=1)}
    evaluator = pytrec_eval.RelevanceEvaluator({q["id"]: qrels[q["id"]] for q in queries}, {"ndcg_cut.10"})
    ndcg = {}
    for name, found in runs.items():
        per_query = evaluator.evaluate(found)
        ndcg[name] = float(
            np.mean([per_query.get(q["id"], {"ndcg_cut_10": 0.0})["ndcg_cut_10"] for q in queries])
        )
    return {
        "queries": len(queries),
        "filters proposed": proposed,
        "precision": round(right / proposed, 4) if proposed else None,
        "recall": round(right / len(queries), 4),
        "nDCG@10 no filter": round(ndcg["none"], 4),
        "nDCG@10 auto-filter": round(ndcg["auto"], 4),
        "nDCG@10 right filter given": round(ndcg["given"], 4),
        "median ms per query (read + search)": round(statistics.median(milliseconds)),
        "by margin": by_margin(gains, queries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-embed:bfloat16")
    parser.add_argument("--queries", type=int, default=30, help="per collection")
    parser.add_argument("--scifact-docs", type=int, default=600)
    parser.add_argument("--margin", type=float, default=MARGIN, help="nats (the library's default)")
    parser.add_argument("--db", type=Path, help="keep the index here (reused when it exists)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "auto_filter.json")
    args = parser.parse_args()
    documents, queries, qrels = collections(args.queries, args.scifact_docs)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "subjects.db"
        with Index(str(db), load_model(args.model)) as index:
            start = time.perf_counter()
            index.add(documents)
            indexed = time.perf_counter() - start
            console.print(f"{len(documents)} documents in {indexed:.0f} s; facets {index.store.facets()}")
            rows = {
                "plain": run(index, queries, qrels, args.margin),
                "constrained": run(index, (hard := constrained(queries)), qrels, args.margin),
            }
    columns = [c for c in rows["plain"] if c != "by margin"]
    table = Table("queries", *columns, title=f"auto-filter ({args.model}, margin {args.margin})")
    for name, row in rows.items():
        table.add_row(name, *(str(row[c]) for c in columns))
    console.print(table)
    sweep = Table("margin (nats)", *(f"{name} {m}" for name in rows for m in ("precision", "recall")))
    for margin in map(str, SWEEP):
        cells = [rows[name]["by margin"][margin] for name in rows]
        sweep.add_row(margin, *(str(c[m]) for c in cells for m in ("precision", "recall")))
    console.print(sweep)
    result = {
        "model": args.model,
        "margin": args.margin,
        "documents": len(documents),
        "rows": rows,
        "examples": [
            {k: q[k] for k in ("text", "subject", "auto filter")} for q in (queries[::15] + hard[::15])
        ],
    }
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    console.print_json(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()

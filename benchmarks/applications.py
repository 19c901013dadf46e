"""Embeddings at work: classify, cluster and de-duplicate, dec2vec's default and MiniLM side by side.

    python benchmarks/applications.py [--models smollm2-135m-embed,minilm] [--dtype bfloat16] [--only cluster]

Every model runs in the same dtype (bfloat16 by default, what the commands pick on this CPU).

- classify: `Classifier` (logistic regression on the frozen vectors, C=1) trained on all of Banking77's
  training file less a stratified 20% (seed 42) and scored on that 20%, and trained on TREC train, scored on
  TREC test: accuracy and macro-F1. (The `eval` suite's classification task is MTEB's few-shot protocol,
  8 examples per label; this is the full-data head a user trains with `dec2vec classify train`.)
- cluster: `cluster_texts` with k = the number of labels and with k chosen by silhouette (2..k_max), on the
  Banking77 20% split and TREC test: V-measure against the labels; the labels written for TREC are kept in
  the JSON for the README.
- dedup: MRPC pairs as duplicates: the cosine threshold with the best F1 on MRPC train, then precision,
  recall and F1 of "cosine >= threshold" on MRPC test; and the time of the neighbour search behind
  `find_duplicates` on 100,000 vectors of the model's dimension (WikiSplit sentences, embedding rate
  measured separately, so the time for 100k texts = embedding + search).

Vectors are cached under DEC2VEC_HOME/embeddings (per model fingerprint). Prints tables, writes
benchmarks/results/applications.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import f1_score, precision_recall_fscore_support, v_measure_score
from sklearn.model_selection import train_test_split

from dec2vec.backbone import dec2vec_home
from dec2vec.classifier import Classifier
from dec2vec.clustering import cluster_texts
from dec2vec.dedup import near_neighbours
from dec2vec.evaluation.cache import CachedEncoder
from dec2vec.evaluation.data import read_tsv
from dec2vec.models import load_model

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
console = Console(width=200)


def labelled() -> dict[str, tuple[list[dict], list[dict]]]:
    """name -> (train rows, test rows) of {text, label}."""
    banking = read_tsv(DATA / "classification" / "banking77" / "train.tsv", ["text", "label"])
    train, test = train_test_split(
        banking, test_size=0.2, random_state=42, stratify=[r["label"] for r in banking]
    )
    trec = DATA / "classification" / "trec"
    return {
        "Banking77 (train 80/20)": (train, test),
        "TREC": (
            read_tsv(trec / "train.tsv", ["text", "label"]),
            read_tsv(trec / "test.tsv", ["text", "label"]),
        ),
    }


def classify(model, sets) -> list[dict]:
    rows = []
    for name, (train, test) in sets.items():
        start = time.perf_counter()
        head = Classifier.train(model, [r["text"] for r in train], [r["label"] for r in train])
        predicted = [p.label for p in head.predict([r["text"] for r in test])]
        gold = [r["label"] for r in test]
        right = sum(p == g for p, g in zip(predicted, gold, strict=True))
        rows.append({
            "task": name, "accuracy": round(right / len(gold), 4),
            "f1_macro": round(float(f1_score(gold, predicted, average="macro")), 4),
            "seconds": round(time.perf_counter() - start, 1),
        })  # fmt: skip
    return rows


def cluster(model, sets, k_max: int) -> tuple[list[dict], list[dict]]:
    rows, labels_written = [], []
    for name, (_, test) in sets.items():
        texts, gold = [r["text"] for r in test], [r["label"] for r in test]
        n_labels = len(set(gold))
        for k in (n_labels, None):
            start = time.perf_counter()
            # labels are written only where they are shown (TREC, k = its labels): 77 generations otherwise
            write = "auto" if name == "TREC" and k is not None else "keywords"
            result = cluster_texts(
                model, texts, k, k_max=max(k_max, n_labels), labels=write, generator=model.model
            )
            rows.append({
                "task": name, "k": f"{len(result.clusters)} ({'labels' if k else 'silhouette'})",
                "v_measure": round(float(v_measure_score(gold, result.assignments)), 4),
                "seconds": round(time.perf_counter() - start, 1),
            })  # fmt: skip
            if write == "auto":
                labels_written = [
                    {"label": c.label, "size": c.size, "keywords": c.keywords, "examples": c.examples[:3]}
                    for c in result.clusters
                ]
    return rows, labels_written


def mrpc(model) -> dict:
    def pairs(split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = read_tsv(
            DATA / "pair_classification" / "mrpc" / f"{split}.tsv", ["sentence1", "sentence2", "label"]
        )
        a = model.encode([r["sentence1"] for r in rows])
        b = model.encode([r["sentence2"] for r in rows])
        return np.sum(a * b, axis=1), np.array([r["label"] == "1" for r in rows])

    train_cos, train_gold = pairs("train")
    candidates = np.round(np.arange(0.5, 1.0, 0.005), 3)
    best = max(candidates, key=lambda t: f1_score(train_gold, train_cos >= t))
    test_cos, test_gold = pairs("test")
    precision, recall, f1, _ = precision_recall_fscore_support(test_gold, test_cos >= best, average="binary")
    return {"threshold (best F1 on train)": float(best), "precision": round(float(precision), 4),
            "recall": round(float(recall), 4), "f1": round(float(f1), 4)}  # fmt: skip


def search_time(model, n: int) -> dict:
    """Seconds of the neighbour search on ``n`` vectors, and the embedding rate on 2,000 sentences."""
    sentences = (DATA / "training" / "wikisplit_sentences.txt").read_text().splitlines()
    start = time.perf_counter()
    vectors = model.model.encode(sentences[:2000])  # uncached: the rate is the point
    rate = 2000 / (time.perf_counter() - start)
    rng = np.random.default_rng(0)
    # n vectors of the real dimension, each a real one plus noise; the noise (0.05 per dimension) keeps pairs
    # under 0.95, so the time is the brute-force distance computation, which every threshold pays
    noisy = vectors[rng.integers(0, len(vectors), n)] + rng.normal(0, 0.05, (n, vectors.shape[1]))
    noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    start = time.perf_counter()
    found = near_neighbours(noisy, 0.95)
    seconds = time.perf_counter() - start
    pairs = int(sum(len(f) for f in found) // 2)
    return {"texts": n, "embed sentences/s": round(rate, 1), "embed seconds (estimate)": round(n / rate),
            "neighbour search seconds": round(seconds, 1), "pairs found": pairs}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m-embed,minilm")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--only", help="comma-separated: classify, cluster, dedup (default: all)")
    parser.add_argument("--k-max", type=int, default=20)
    parser.add_argument("--dedup-n", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "applications.json")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else {"classify", "cluster", "dedup"}
    sets = labelled()
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    result = {"dtype": args.dtype, "models": previous.get("models", {})}
    for spec in args.models.split(","):
        model = CachedEncoder(load_model(spec, dtype=args.dtype), dec2vec_home() / "embeddings")
        entry = result["models"].setdefault(spec, {})
        if "classify" in only:
            entry["classify"] = classify(model, sets)
            console.print(spec, entry["classify"])
        if "cluster" in only:
            entry["cluster"], written = cluster(model, sets, args.k_max)
            entry["TREC labels"] = written
            console.print(spec, entry["cluster"])
        if "dedup" in only:
            entry["dedup MRPC"] = mrpc(model)
            entry["dedup search"] = search_time(model, args.dedup_n)
            console.print(spec, entry["dedup MRPC"], entry["dedup search"])
    for section in ("classify", "cluster"):
        columns = ("k", "accuracy", "f1_macro", "v_measure", "seconds")
        table = Table("model", "task", *columns, title=f"{section} ({args.dtype})")
        for spec, entry in result["models"].items():
            for row in entry.get(section, []):
                table.add_row(spec, row["task"], *(str(row.get(k, "")) for k in columns))
        console.print(table)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    console.print_json(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()

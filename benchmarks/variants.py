"""Speed against quality, one row per encoder variant: `index add` documents/s and tokens/s, STS-B dev.

    python benchmarks/variants.py [--docs 1000] [--half benchmarks/runs/half] [--only NAME,NAME]

Every variant indexes the same SciFact-train documents through `Index.add` (chunking, embedding, SQLite
writes: what `dec2vec index add` does) into a fresh SQLite file, then answers the SciFact-train claims whose
cited abstracts all lie in that subset (dense nDCG@10), and embeds the 3,000 STS-B dev sentences (Spearman,
sentences/s). The subset: the abstracts cited by the first claims (up to half of ``--docs``), then
uncited abstracts in corpus order. Rows, in one process on the same threads:

- the previous default (raw SmolLM2-135M, causal mean, float32): the bar `index add` must beat 4x;
- the shipped default in float32, bfloat16 (chosen automatically on this CPU) and int8 (torch's dynamic
  quantization of every linear layer, float32 activations);
- ``smollm2-135m-embed-half`` (the default pruned to 15 of 30 layers, distilled back; recipe of that name),
  when ``--half`` points at a trained one, in bfloat16 and int8;
- all-MiniLM-L6-v2 in float32 and bfloat16.

Prints one table and writes benchmarks/results/variants.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from search import DATA, beir_documents, ndcg10  # benchmarks/search.py

from dec2vec.evaluation.data import read_beir
from dec2vec.evaluation.tasks import STSTask
from dec2vec.models import load_model
from dec2vec.search import Document, Index

HERE = Path(__file__).resolve().parent
console = Console(width=200)


def int8(spec: str):
    """A dec2vec encoder with int8 linear layers (dynamic quantization: weights int8, activations per batch).

    torch.ao.quantization is deprecated in favour of torchao, but it is what ships inside torch, and it
    was the fastest int8 path measured here (torchao's int8 weight-only and int8 dynamic were no faster
    than bfloat16 on this CPU).
    """
    encoder = load_model(f"{spec}:float32")
    digest = encoder.fingerprint()  # of the float32 weights: quantized layers cannot be hashed the same way
    torch.ao.quantization.quantize_dynamic(encoder.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    encoder.fingerprint = lambda: f"int8-{digest}"
    return encoder


def variants(half: Path | None) -> dict[str, Callable[[], object]]:
    rows: dict[str, Callable[[], object]] = {
        "previous default: smollm2-135m causal mean fp32": lambda: load_model(
            "smollm2-135m:causal:mean:float32"
        ),
        "smollm2-135m-embed fp32": lambda: load_model("smollm2-135m-embed:float32"),
        "smollm2-135m-embed bf16 (default here)": lambda: load_model("smollm2-135m-embed:bfloat16"),
        "smollm2-135m-embed int8": lambda: int8("smollm2-135m-embed"),
    }
    if half is not None:
        rows["smollm2-135m-embed-half bf16"] = lambda: load_model(f"{half}:bfloat16")
        rows["smollm2-135m-embed-half int8"] = lambda: int8(str(half))
    rows["all-MiniLM-L6-v2 fp32"] = lambda: load_model("minilm:float32")
    rows["all-MiniLM-L6-v2 bf16"] = lambda: load_model("minilm:bfloat16")
    return rows


def scifact_subset(size: int) -> tuple[list[Document], dict[str, str], dict]:
    """``size`` SciFact-train documents and the claims whose cited abstracts are all among them."""
    folder = DATA / "retrieval" / "scifact-train"
    beir = read_beir(folder)
    documents = {d.id: d for d in beir_documents(folder / "corpus.jsonl")}
    chosen: dict[str, None] = {}
    queries: dict[str, str] = {}
    for query_id, text in beir.queries.items():
        cited = [d for d in beir.qrels.get(query_id, {}) if d in documents]
        if not cited or len(chosen.keys() | set(cited)) > size // 2:
            continue
        chosen.update(dict.fromkeys(cited))
        queries[query_id] = text
    for doc_id in documents:
        if len(chosen) >= size:
            break
        chosen.setdefault(doc_id)
    qrels = {q: beir.qrels[q] for q in queries}
    return [documents[d] for d in chosen], queries, qrels


def measure(encoder, documents: list[Document], queries: dict, qrels: dict, sts: STSTask) -> dict:
    tokens = sum(len(encoder.tokenizer(f"{d.title}\n{d.text}")["input_ids"]) for d in documents)
    with tempfile.TemporaryDirectory() as tmp, Index(str(Path(tmp) / "bench.db"), encoder) as index:
        start = time.perf_counter()
        index.add(documents, show_progress=True)
        seconds = time.perf_counter() - start
        ndcg = ndcg10(index, queries, qrels, {"mode": "dense"})
    sentences = len(sts.pairs) * 2
    start = time.perf_counter()
    spearman = sts.run(encoder).metrics["spearman"]
    sts_seconds = time.perf_counter() - start
    return {
        "index add docs/s": round(len(documents) / seconds, 2),
        "index add tokens/s": round(tokens / seconds),
        "SciFact-train subset dense nDCG@10": round(ndcg, 4),
        "STS-B dev sentences/s": round(sentences / sts_seconds, 1),
        "STS-B dev Spearman": round(spearman, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000, help="SciFact-train documents to index")
    parser.add_argument("--half", type=Path, help="a trained smollm2-135m-embed-half folder")
    parser.add_argument("--only", help="comma-separated row names (default: all)")
    parser.add_argument("--sts", type=Path, default=DATA / "sts" / "stsb_dev.tsv")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "variants.json")
    args = parser.parse_args()
    documents, queries, qrels = scifact_subset(args.docs)
    sts = STSTask(args.sts)
    console.print(
        f"{len(documents)} SciFact-train documents, {len(queries)} claims, {len(sts.pairs)} STS pairs"
    )
    rows = []
    chosen = variants(args.half)
    only = args.only.split(",") if args.only else list(chosen)
    if unknown := sorted(set(only) - set(chosen)):
        parser.error(f"--only: unknown rows {unknown}; rows are {list(chosen)}")
    for name in only:
        encoder = chosen[name]()
        rows.append({"variant": name, **measure(encoder, documents, queries, qrels, sts)})
        console.print(rows[-1])
        del encoder
    base = rows[0]["index add docs/s"] if rows[0]["variant"].startswith("previous") else None
    table = Table("variant", *(k for k in rows[0] if k != "variant"), "index add vs previous default")
    for row in rows:
        ratio = f"{row['index add docs/s'] / base:.2f}x" if base else "—"
        table.add_row(*(str(v) for v in row.values()), ratio)
    console.print(table)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "documents": len(documents),
        "claims": len(queries),
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print_json(json.dumps(result))


if __name__ == "__main__":
    main()

